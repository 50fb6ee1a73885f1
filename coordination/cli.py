"""Coordination's `hive` actions: `coordinator` (the process) and `workflow load/start`."""

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import NoReturn

from celery import current_app
from celery.beat import EmbeddedService
from django.conf import settings
from django.core.management.base import CommandError

from coordination.leadership import Coordinator, coordinator_leader, coordinators_status
from coordination.models import Run, Workflow
from coordination.services import run_start, workflow_load
from hive_core.cli import Output, Subcommand
from hive_core.db import connections_name


class CoordinatorAction(Subcommand):
    name = "coordinator"
    help = "Run a coordinator (beat, reaper, queued commands; one leads, others stand by)."
    process = True

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--name", default="coordinator",
            help="Its name in `--status`, events and Celery (default: coordinator).",
        )  # fmt: skip
        parser.add_argument(
            "--status", action="store_true",
            help="Print which coordinator leads and which stand by; exit 1 if none leads.",
        )  # fmt: skip

    def handle(self, options: dict, out: Output) -> None:
        if options["status"]:
            self._status(out)
            return
        connections_name(name="hive-coordinator")
        # Schedules may fire every second, three INFO lines each (sent, received,
        # succeeded) burying everything else in `hive up`'s output; each firing is an
        # invocation and an event, and a pass that recovers something says so itself.
        for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
            logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
        coordinator = Coordinator(
            name=options["name"], interval=settings.HIVE_REAPER_INTERVAL, beat=_beat
        )
        # Until Celery's worker installs its own handler (seconds, on a busy host), a
        # SIGTERM (`hive up` stopping) would kill it outright, leaving its lock to the
        # server and its record to go stale: stop cleanly then too.
        signal.signal(signal.SIGTERM, lambda *_: _stop_now(coordinator))
        coordinator.start()
        try:
            # hive_project's Celery app, current since Django started (hive_project/__init__).
            current_app.worker_main(
                [
                    "worker",
                    f"--hostname={options['name']}@%h",
                    # Schedule firings, which any coordinator may run (each due time
                    # fires once: commands.schedules.scheduled_fire).
                    f"--queues={settings.HIVE_COORDINATOR_QUEUE}",
                    "--pool=solo",
                    f"--loglevel={settings.HIVE_LOG_LEVEL}",
                    "--without-mingle",
                    "--without-gossip",
                ]
            )
        finally:
            # Hands over at once (the lock is released), rather than when it times out.
            coordinator.stop()

    def _status(self, out: Output) -> None:
        records = coordinators_status()
        leader = coordinator_leader(records)
        for record in records:
            if record is leader:
                state = f"leading since {record['since']} (term {record['term']})"
            elif not record["alive"]:
                state = "gone (not heard from)"
            else:
                state = "standby" + (" (deposed, has not noticed yet)" if record["leading"] else "")
            out.write(f"{record['name']} on {record['host']} (pid {record['pid']}): {state}")
        if leader is None:
            out.write("no coordinator leads")
            raise SystemExit(1)


def _stop_now(coordinator: Coordinator) -> NoReturn:
    coordinator.stop()
    os._exit(0)  # the main thread may be anywhere in Celery's start-up: leave at once


def _beat():
    """The leader's beat, in a thread of the coordinator (never a forked process,
    which would outlive a SIGKILLed coordinator and go on firing)."""
    return EmbeddedService(current_app, thread=True, scheduler_cls=settings.CELERY_BEAT_SCHEDULER)


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
        start.add_argument(
            "--priority", type=int, help="0-9, higher goes first (default: the workflow's)."
        )
        start.add_argument(
            "--deadline", type=float,
            help="Seconds the run may take before it is cancelled (default: the workflow's "
            "timeout, if any).",
        )  # fmt: skip

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
            run = run_start(
                workflow=workflow,
                params=json.loads(options["params"]),
                priority=options["priority"],
                deadline=options["deadline"],
            )
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
        # A run that may not start names what is at fault: a flag of its own, or a param
        # (the flag is --params).
        if options["verb"] == "start" and not _about_the_workflow(error):
            field = getattr(error, "field", "")
            if field in _FLAGS:
                raise CommandError(f"--{field}: {str(error).removeprefix(f'{field}: ')}") from None
            raise CommandError(f"--params: {error}") from None
        super().refused(error, options, out)


# The fields of a refused start (RunInvalid.field) that `workflow start` takes as flags.
_FLAGS = ("priority", "deadline")
