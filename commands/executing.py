"""Executing: `command_execute` is the one way a command runs, whatever sent it (API,
CLI, dashboard, a schedule): parse → bind and validate → permission → overlap policy →
an `Invocation` → the run (or the built-in's answer). Every attempt leaves an
Invocation, the invalid and the denied included.
"""

import contextlib
import difflib
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from commands.errors import CommandFailure, command_refusal
from commands.loader import CONTEXT_KEY
from commands.models import ANY_OF, Command, Invocation
from commands.parser import Parsed, ParseError, bind, parse
from commands.planning import command_plan
from commands.registry import builtin_run
from commands.selectors import (
    command_allowed,
    invocation_flow,
    invocation_open_list,
    invocation_runs_seen,
)
from coordination.services import RunError, RunInvalid, run_cancel, run_flow_check, run_start
from coordination.templates import TemplateError, render
from events.kinds import subject
from events.services import event_emit
from hive_core.errors import Denied, HiveError
from hive_core.jsondata import text_storable

Outcome = Invocation.Outcome


@dataclass
class Attempt:
    """What is known about an invocation so far, to record whatever the outcome."""

    text: str
    user: object
    source: str
    schedule: str = ""
    dry_run: bool = False
    command: Command | None = None
    parsed: Parsed | None = None
    args: dict | None = None
    # What the invocation asks of its run over the command's: set once checked.
    priority: int | None = None
    deadline: float | None = None

    def __post_init__(self):
        # Refused text is recorded too; the parser points at a NUL or lone surrogate in
        # what was typed, and the database, which cannot store them, gets U+FFFD.
        self.text = text_storable(self.text)

    def record(self, outcome: str, **fields) -> Invocation:
        return Invocation.objects.create(
            text=self.text,
            user=self.user if getattr(self.user, "pk", None) else None,
            source=self.source,
            schedule=self.schedule,
            dry_run=self.dry_run,
            command=self.command,
            command_name=self.parsed.name if self.parsed else "",
            command_version=self.command.version if self.command else None,
            args=self.args or {},
            priority=self.priority,
            deadline=self.deadline,
            outcome=outcome,
            finished_at=None if outcome == Outcome.QUEUED else timezone.now(),
            **fields,
        )

    def refuse(self, code: str, error: ParseError | str, *, param: str = "") -> CommandFailure:
        """Record a refused attempt (in its own transaction, so it stays) and say why.
        A check that is not an attempt (a schedule being made) records nothing."""
        message = error.message if isinstance(error, ParseError) else error
        if self.source:
            invocation = self.record(code, error=str(error))
            event_emit(
                kind=f"command.{code}",
                subject=subject("invocation", invocation.pk),
                data={"text": self.text[:200], "error": message},
            )
        else:
            invocation = Invocation(text=self.text, outcome=code, error=str(error))
        return command_refusal(
            message,
            code=code,
            invocation=invocation,
            pointed=str(error),
            param=error.param if isinstance(error, ParseError) else param,
        )


def command_resolve(*, text: str, user, attempt: Attempt | None = None) -> tuple:
    """Parse, find, bind and permission-check `text` for `user`; nothing is recorded
    unless `attempt` is given. Returns (parsed, command, args)."""
    attempt = attempt or Attempt(text=text, user=user, source="", schedule="")
    try:
        parsed = parse(text, max_length=settings.HIVE_COMMAND_MAX_LENGTH)
    except ParseError as exc:
        raise attempt.refuse(Outcome.INVALID, exc) from None
    attempt.parsed = parsed
    attempt.dry_run = attempt.dry_run or parsed.dry_run
    # The built-ins are rows from the first migrate on (CommandsConfig.ready).
    command = Command.objects.select_related("workflow").filter(name=parsed.name).first()
    head_end = len(text) - len(text.lstrip()) + len(parsed.name) + 1
    head = (len(text) - len(text.lstrip()), head_end)
    if command is None:
        names = list(Command.objects.filter(enabled=True).values_list("name", flat=True))
        close = difflib.get_close_matches(parsed.name, names, n=3)
        hint = (
            f" (did you mean {', '.join('/' + c for c in close)}?)"
            if close
            else (" (/hive:help lists the commands)")
        )
        raise attempt.refuse(
            Outcome.INVALID,
            ParseError(
                f"unknown command /{parsed.name}{hint}", text=text, start=head[0], end=head[1]
            ),
        )
    attempt.command = command
    if not command.enabled:
        raise attempt.refuse(
            Outcome.INVALID,
            ParseError(f"/{command.name} is disabled", text=text, start=head[0], end=head[1]),
        )
    try:
        args = bind(parsed, schema=command.params, hint=command.argument_hint, command=command.name)
    except ParseError as exc:
        raise attempt.refuse(Outcome.INVALID, exc) from None
    attempt.args = args
    if not command_allowed(command=command, user=user):
        who = getattr(user, "username", "") or "anonymous"
        permissions = command.permission.split(ANY_OF)
        raise attempt.refuse(
            Outcome.DENIED,
            f"permission denied: /{command.name} needs {' or '.join(permissions)} "
            f"and {who} does not have {'it' if len(permissions) == 1 else 'any'}",
        )
    return parsed, command, args


def command_execute(
    *,
    text: str,
    user,
    source: str,
    dry_run: bool = False,
    schedule: str = "",
    priority: int | None = None,
    deadline: float | None = None,
) -> Invocation:
    """Run the command `text` as `user`; raises CommandFailure (recorded) when refused.
    `priority` (0-9) and `deadline` (seconds) override the command's for its run."""
    attempt = Attempt(text=text, user=user, source=source, schedule=schedule, dry_run=dry_run)
    try:
        run_flow_check(priority=priority, deadline=deadline)
    except RunInvalid as exc:
        # Before anything else, and not recorded as asked: a value out of range may not
        # fit the invocation's column.
        raise attempt.refuse(Outcome.INVALID, exc.message, param=exc.field) from None
    attempt.priority, attempt.deadline = priority, deadline
    parsed, command, args = command_resolve(text=text, user=user, attempt=attempt)
    try:
        key = overlap_key(command=command, args=args)
    except TemplateError as exc:
        # Before the dry run too: a plan must not pass what the run would refuse.
        raise attempt.refuse(Outcome.FAILED, f"overlap key: {exc}") from None
    if command.builtin and (priority, deadline) != (None, None):
        given = "priority" if priority is not None else "deadline"
        raise attempt.refuse(
            Outcome.INVALID, f"{given}: /{command.name} starts no run to give it to", param=given
        )
    if attempt.dry_run:
        plan = command_plan(
            command=command, args=args, parsed=parsed, key=key, user=user,
            flow=invocation_flow(command=command, priority=priority, deadline=deadline),
        )  # fmt: skip
        return attempt.record(Outcome.PLANNED, output=plan)
    if command.builtin:
        try:
            output = builtin_run(name=command.builtin, args=args, user=user)
        except HiveError as exc:
            outcome = Outcome.DENIED if isinstance(exc, Denied) else Outcome.FAILED
            raise attempt.refuse(outcome, str(exc)) from None
        return attempt.record(Outcome.DONE, output=output)
    if command.workflow is None:
        raise attempt.refuse(Outcome.FAILED, f"/{command.name} has no workflow")
    return _start(attempt, command=command, args=args, key=key)


def _start(attempt: Attempt, *, command: Command, args: dict, key: str) -> Invocation:
    """Apply the overlap policy and start the run, in one transaction that holds the
    command's row: two invocations of one command decide one after the other, so
    `skip` and `queue` never both see "nothing open". (SQLite's IMMEDIATE
    transactions serialize them as well.) A refusal is raised once the transaction
    has kept the invocation recording it."""
    with transaction.atomic():
        Command.objects.select_for_update().filter(pk=command.pk).first()
        try:
            return _overlap_apply(attempt, command=command, args=args, key=key)
        except CommandFailure as exc:
            failure = exc
    raise failure


def _overlap_apply(attempt: Attempt, *, command: Command, args: dict, key: str) -> Invocation:
    policy = Command.Overlap
    open_ones = list(invocation_open_list(key=key))
    # Another user's run the user may not see (the runs API's rule) is never named
    # to them, nor cancelled by them: its id, state and existence are not theirs.
    seen = invocation_runs_seen(user=attempt.user, invocations=open_ones)
    if command.overlap == policy.SKIP and open_ones:
        blocking = open_ones[0].run
        return attempt.record(
            Outcome.SKIPPED,
            overlap_key=key,
            error=f"run {blocking.pk} with overlap key {key!r} is still {blocking.state}"
            if blocking.pk in seen
            else f"a run you cannot see with overlap key {key!r} is still open",
        )
    if command.overlap == policy.QUEUE and (
        open_ones or Invocation.objects.filter(overlap_key=key, outcome=Outcome.QUEUED).exists()
    ):
        return attempt.record(Outcome.QUEUED, overlap_key=key)
    if command.overlap == policy.CANCEL_RUNNING:
        if any(i.run_id not in seen for i in open_ones):
            error = HIDDEN_HOLDER.format(key=key)
            invocation = attempt.record(Outcome.FAILED, overlap_key=key, error=error)
            raise command_refusal(error, code=Outcome.FAILED, invocation=invocation, conflict=True)
        for invocation in open_ones:
            # One that ended on its own meanwhile needs no cancelling.
            with contextlib.suppress(RunError):
                run_cancel(run=invocation.run, user=attempt.user or None)
    invocation = attempt.record(Outcome.STARTED, overlap_key=key)
    _run_for(invocation, command=command, args=args, parsed=attempt.parsed)
    return invocation


# cancel-running refuses (a conflict) rather than cancel a run its user cannot see.
HIDDEN_HOLDER = (
    "a run you cannot see holds overlap key {key!r}: it was not cancelled and nothing "
    "started; try again when it has ended"
)


def _run_for(invocation: Invocation, *, command: Command, args: dict, parsed: Parsed) -> None:
    """Start the run of a recorded invocation; on failure mark it failed and raise
    CommandFailure (the caller's transaction keeps the mark)."""
    context = {
        "name": command.name,
        "prompt": command.body.replace("$ARGUMENTS", parsed.arguments),
        "arguments": parsed.arguments,
        "invocation": invocation.pk,
        "user": getattr(invocation.user, "username", ""),
    }
    flow = invocation_flow(
        command=command, priority=invocation.priority, deadline=invocation.deadline
    )
    try:
        with transaction.atomic():
            run = run_start(
                workflow=command.workflow,
                params=args,
                internal={CONTEXT_KEY: context},
                user=invocation.user,
                **flow,
            )
    except RunError as exc:
        invocation.outcome, invocation.error = Outcome.FAILED, str(exc)
        invocation.finished_at = timezone.now()
        invocation.save(update_fields=["outcome", "error", "finished_at"])
        raise CommandFailure(str(exc), code=Outcome.FAILED, invocation=invocation) from None
    invocation.outcome, invocation.run, invocation.finished_at = (
        Outcome.STARTED,
        run,
        timezone.now(),
    )
    invocation.save(update_fields=["outcome", "run", "finished_at"])
    event_emit(
        kind="command.started",
        subject=subject("invocation", invocation.pk),
        data={"command": command.name, "run": run.pk},
    )


def command_run_check(*, run, user, action: str) -> str:
    """A retry of a command's run runs the command's steps again: it needs the
    command's permission too, as running it would (coordination asks this, see
    RUN_ACTION_CHECKS). Other actions (cancel, approve) start nothing of it."""
    if action != "retry":
        return ""
    invocation = Invocation.objects.select_related("command").filter(run=run).first()
    command = invocation.command if invocation else None
    if command is None or command_allowed(command=command, user=user):
        return ""
    return (
        f"permission denied: retrying run {run.pk} runs /{command.name} again, which needs "
        f"{command.permission} and {user.username} does not have it"
    )


def overlap_key(*, command: Command, args: dict) -> str:
    """The key runs of this command must not overlap on: its template, or its name."""
    if not command.overlap_key:
        return command.name
    return str(render(command.overlap_key, {"params": args}))[:500]


def invocations_dequeue() -> int:
    """Start the oldest queued invocation of each key whose blocking run has ended.
    The coordinator calls this every HIVE_REAPER_INTERVAL; queued invocations are
    rows, so nothing is lost when a process or Redis restarts."""
    started = 0
    keys = set(
        Invocation.objects.filter(outcome=Outcome.QUEUED).values_list("overlap_key", flat=True)
    )
    for key in sorted(keys):
        with transaction.atomic():
            first = (
                Invocation.objects.filter(outcome=Outcome.QUEUED, overlap_key=key)
                .select_related("command__workflow", "user")
                .order_by("id")
                .first()
            )
            if first is None or invocation_open_list(key=key).exists():
                continue
            command = first.command
            if command is not None:
                Command.objects.select_for_update().filter(pk=command.pk).first()
            # Claimed by a conditional update: a second pass (or process) finds it taken.
            if not Invocation.objects.filter(pk=first.pk, outcome=Outcome.QUEUED).update(
                outcome=Outcome.STARTED
            ):
                continue
            if command is None or not command.enabled or command.workflow is None:
                Invocation.objects.filter(pk=first.pk).update(
                    outcome=Outcome.FAILED,
                    finished_at=timezone.now(),
                    error="the command was removed or disabled while queued",
                )
                continue
            parsed = parse(first.text, max_length=len(first.text) + 1)
            try:
                _run_for(first, command=command, args=first.args, parsed=parsed)
            except CommandFailure:
                continue  # marked failed, kept as this key's transaction commits
            started += 1
    return started
