"""The Celery app shared by every Hive process (agents, coordinator, web, Flower)."""

import os

import click
from celery import Celery

from agents.worker import AgentStep

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hive_project.settings")

app = Celery("hive")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# `hive agent` passes the agent's identity to its worker through these options;
# the AgentStep bootstep (agents/worker.py) reads them. A worker started without
# --agent-name (the coordinator) is not an agent.
for option, help_text in [
    ("--agent-name", "Register this worker as the Hive agent NAME."),
    ("--agent-role", "The agent's role."),
    ("--agent-skills", "Comma-separated skills the agent offers."),
]:
    app.user_options["worker"].add(click.Option([option], default="", help=help_text))

app.steps["consumer"].add(AgentStep)
