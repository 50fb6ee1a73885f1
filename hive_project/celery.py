"""The Celery app shared by every Hive process (agents, coordinator, web, Flower)."""

import os

from celery import Celery

from agents.worker import AgentStep

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hive_project.settings")

app = Celery("hive")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Active only in `hive agent` processes (agents/worker.py).
app.steps["consumer"].add(AgentStep)
