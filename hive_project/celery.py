"""The Celery app shared by every Hive process (agents, coordinator, web, Flower)."""

import os

from celery import Celery, signals

from agents.worker import AgentStep

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hive_project.settings")

app = Celery("hive")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Active only in `hive agent` processes (agents/worker.py).
app.steps["consumer"].add(AgentStep)


@signals.task_postrun.connect
def _close_old_connections(**kwargs) -> None:
    """End a task as Django ends a request: drop a connection that errored or aged."""
    from django.db import close_old_connections

    close_old_connections()
