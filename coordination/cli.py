"""Coordination's `hive` actions: `coordinator` (the process) and `workflow load/start`."""

import json
import logging
import time
from pathlib import Path
from typing import NoReturn

from celery import current_app
from django.conf import settings
from django.core.management.base import CommandError

from coordination.models import Run, Workflow
from coordination.services import run_start, workflow_load
from hive_core.cli import Output, Subcommand
from hive_core.db import connections_name


class CoordinatorAction(Subcommand):
    name = "coordinator"
    help = "Run the coordinator: beat schedule and reaper."
    process = True

    def handle(self, options: dict, out: Output) -> None:
        connections_name(name="hive-coordinator")
        # Its passes run every HIVE_REAPER_INTERVAL, three INFO lines each (sent,
        # received, succeeded) burying everything else in `hive up`'s output; a pass
        # that recovers something says so itself (coordination.tasks).
        for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
            logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
        # hive_project's Celery app, current since Django started (hive_project/__init__).
        current_app.worker_main(
            [
                "worker",
                "--beat",
                # Schedules live in the database (django-celery-beat), beside the
                # reaper's entry from CELERY_BEAT_SCHEDULE.
                f"--scheduler={settings.CELERY_BEAT_SCHEDULER}",
                "--hostname=coordinator@%h",
                f"--queues={settings.HIVE_COORDINATOR_QUEUE}",
                # One reaper at a time, in order; solo keeps it a single process.
                "--pool=solo",
                f"--loglevel={settings.HIVE_LOG_LEVEL}",
                "--without-mingle",
                "--without-gossip",
            ]
        )


def _about_the_workflow(error: Exception) -> bool:
    """Whether a refused start names the workflow rather than a param (RunError says
    so in `field`, a HiveError in `fields`)."""
    return getattr(error, "field", "") == "workflow" or "workflow" in (
        getattr(error, "fields", None) or {}
    )


class WorkflowAction(Subcommand):
    name = "workflow"
    help = "Load workflow definitions, start runs."

    def add_arguments(self, parser) -> None:
        verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
        load = verbs.add_parser("load", help="Validate and save definition files.")
        load.add_argument("paths", nargs="+", metavar="FILE")
        start = verbs.add_parser("start", help="Start a run of the newest version.")
        start.add_argument("name", help="Workflow name.")
        start.add_argument("--params", default="{}", help="The params as a JSON object.")
        start.add_argument("--wait", action="store_true", help="Wait for the run to finish.")
        start.add_argument("--timeout", type=float, default=600.0, help="Seconds to wait.")

    def handle(self, options: dict, out: Output) -> None:
        if options["verb"] == "load":
            for path in options["paths"]:
                workflow, created = workflow_load(path=Path(path))
                out.write(f"{workflow} {'saved' if created else 'unchanged'} ({path})")
            return
        workflow = Workflow.objects.filter(name=options["name"]).order_by("-version").first()
        if workflow is None:
            raise CommandError(f"no workflow named {options['name']!r}; load it first")
        try:
            run = run_start(workflow=workflow, params=json.loads(options["params"]))
        except (ValueError, RecursionError) as exc:  # nested past Python's stack
            raise CommandError(f"--params: not valid JSON: {exc}") from None
        out.write(f"run {run.pk} of {workflow}: {run.state}")
        if options["wait"]:
            self._wait(run, timeout=options["timeout"], out=out)

    def _wait(self, run: Run, *, timeout: float, out: Output) -> None:
        deadline = time.monotonic() + timeout
        while run.state not in Run.TERMINAL:
            if time.monotonic() > deadline:
                raise CommandError(f"run {run.pk} still {run.state} after {timeout:g} s")
            time.sleep(0.2)
            run.refresh_from_db()
        out.write(f"run {run.pk}: {run.state}{': ' + run.error if run.error else ''}")
        if run.state != Run.State.SUCCEEDED:
            raise SystemExit(1)

    def refused(self, error: Exception, options: dict, out: Output) -> NoReturn:
        # A run that may not start names the param at fault: the flag is --params.
        if options["verb"] == "start" and not _about_the_workflow(error):
            raise CommandError(f"--params: {error}") from None
        super().refused(error, options, out)
