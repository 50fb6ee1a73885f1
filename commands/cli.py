"""The slash commands' `hive` actions: `load` (sync definitions) and `run` (execute one)."""

import json
import time
from pathlib import Path
from typing import NoReturn

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from commands.api.serializers import InvocationSerializer
from commands.models import Invocation
from commands.services import command_execute, commands_load
from coordination.models import Run
from coordination.selectors import run_outputs
from hive_core.cli import Output, Subcommand, json_dumps


class LoadAction(Subcommand):
    name = "load"
    help = "Sync slash command definitions into the database."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "paths", nargs="*", metavar="PATH",
            help="Files or folders (default: the shipped commands and HIVE_COMMAND_DIRS).",
        )  # fmt: skip

    def handle(self, options: dict, out: Output) -> None:
        changes = commands_load(paths=[Path(p) for p in options["paths"]] or None)
        for change in changes:
            (out.stderr if change.action == "error" else out.stdout).write(str(change))
        if any(change.action == "error" for change in changes):
            raise CommandError("some definitions were not loaded (see above)")


def _sleep_until(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise CommandError(f"{what} after the --timeout")
    time.sleep(0.2)


def _described(invocation: Invocation) -> str:
    head = f"invocation {invocation.pk}: {invocation.outcome}"
    if invocation.run_id:
        run = invocation.run
        return f"{head}: run {run.pk} of {run.workflow}: {run.state}"
    if invocation.outcome == "done":
        return invocation.output.get("message", "")
    if invocation.outcome == "planned":
        return f"{head} (dry run, nothing started)\n{json_dumps(invocation.output)}"
    return f"{head}{': ' + invocation.error if invocation.error else ''}"


class RunAction(Subcommand):
    name = "run"
    help = 'Execute a slash command: hive run "/hive:help".'

    def add_arguments(self, parser) -> None:
        parser.add_argument("text", help='The command, quoted: "/demo:release 1.4.0 env=prod".')
        parser.add_argument(
            "--user",
            default=settings.HIVE_ADMIN_USER,
            help="Run it as this user (default: the admin).",
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Wait for the run and print its outputs; exit 0 only if it succeeds.",
        )
        parser.add_argument("--json", dest="as_json", action="store_true", help="Print JSON.")
        parser.add_argument("--timeout", type=float, default=600.0, help="Seconds to wait.")
        parser.add_argument("--dry-run", action="store_true", help="Show the plan; start nothing.")
        parser.add_argument(
            "--priority", type=int,
            help="0-9, higher goes first (default: the command's, else its workflow's).",
        )  # fmt: skip
        parser.add_argument(
            "--deadline", type=float,
            help="Seconds the run may take before it is cancelled (default: the command's "
            "timeout, else its workflow's).",
        )  # fmt: skip

    def handle(self, options: dict, out: Output) -> None:
        user, wait, as_json = options["user"], options["wait"], options["as_json"]
        account = get_user_model().objects.filter(username=user).first()
        if account is None:
            raise CommandError(f"--user: no user named {user!r}")
        invocation = command_execute(
            text=options["text"],
            user=account,
            source=Invocation.Source.CLI,
            dry_run=options["dry_run"],
            priority=options["priority"],
            deadline=options["deadline"],
        )
        deadline = time.monotonic() + options["timeout"]
        while wait and invocation.outcome == Invocation.Outcome.QUEUED:
            _sleep_until(deadline, f"invocation {invocation.pk} still queued")
            invocation.refresh_from_db()
        run = invocation.run
        if not as_json:
            out.write(_described(invocation))
        while wait and run is not None and run.state not in Run.TERMINAL:
            _sleep_until(deadline, f"run {run.pk} still {run.state}")
            run.refresh_from_db()
        if as_json:
            invocation.refresh_from_db()
            out.write(json_dumps(InvocationSerializer(invocation).data))
        elif wait and run is not None:
            out.write(f"run {run.pk}: {run.state}{': ' + run.error if run.error else ''}")
            for key, output in run_outputs(run).items():
                out.write(f"{key}: {json.dumps(output, ensure_ascii=False, default=str)}")
        if wait and ((run is None and invocation.outcome != Invocation.Outcome.DONE) or (
                run is not None and run.state != Run.State.SUCCEEDED)):  # fmt: skip
            raise SystemExit(1)

    def refused(self, error: Exception, options: dict, out: Output) -> NoReturn:
        # Exit codes: 2 the text is wrong, 3 permission denied, 1 anything else.
        code = {"invalid": 2, "denied": 3}.get(getattr(error, "code", ""), 1)
        if options["as_json"]:
            body = {"code": getattr(error, "code", "failed"), "message": str(error)}
            invocation = getattr(error, "invocation", None)
            out.write(json_dumps({"error": body, "invocation": getattr(invocation, "pk", None)}))
            raise SystemExit(code) from None
        # A refused text is shown with the token at fault pointed at.
        raise CommandError(getattr(error, "pointed", "") or str(error), returncode=code) from None
