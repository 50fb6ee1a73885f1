"""The Celery app shared by every Hive process (agents, coordinator, web, Flower)."""

import os
import time

from celery import Celery, signals

from agents.bootstep import AgentStep

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hive_project.settings")

app = Celery("hive")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Active only in `hive agent` processes (agents/bootstep.py).
app.steps["consumer"].add(AgentStep)


_next_connection_check = 0.0


@signals.setup_logging.connect
def _keep_django_logging(**kwargs) -> None:
    """Workers log through Django's LOGGING (HIVE_LOG_FORMAT) like every other Hive
    process; Celery would otherwise replace the root logger's handlers with its own
    text format. A receiver here is Celery's documented way to leave logging alone."""


@signals.task_postrun.connect
def _close_old_connections(**kwargs) -> None:
    """End a task as Django ends a request: drop a connection that errored or aged.

    Each call also re-arms Django's health check, a `SELECT 1` before the next
    query (6% of a step's time here), so a busy process checks at most once a
    second; a connection that saw an error is checked at once.
    """
    global _next_connection_check
    from django.db import close_old_connections, connection

    now = time.monotonic()
    if connection.errors_occurred or now >= _next_connection_check:
        _next_connection_check = now + 1
        close_old_connections()
