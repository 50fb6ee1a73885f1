"""Writes of the commands app: loading definitions, executing commands, schedules.

`command_execute` is the one way a command runs, whatever sent it (API, CLI,
dashboard, a schedule): parse → bind and validate → permission → overlap policy →
an `Invocation` → the run (or the built-in's answer). Every attempt leaves an
Invocation, the invalid and the denied included.
"""

import contextlib
import difflib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from agents.routing import RoutingError, route
from commands.builtins import BUILTINS, BuiltinDenied, BuiltinError, builtin_run
from commands.loader import (
    CONTEXT_KEY,
    Definition,
    command_roots,
    definition_files,
    definition_read,
    name_of,
)
from commands.models import Command, Invocation, Schedule
from commands.parser import Parsed, ParseError, bind, parse
from commands.selectors import (
    SCHEDULE_ACTION_PERMISSIONS,
    SCHEDULE_TASK,
    schedule_kwargs,
    schedule_permitted,
    schedule_record,
    schedule_visible_list,
)
from coordination.selectors import run_visible_ids
from coordination.services import RunError, run_cancel, run_start, workflow_save
from coordination.templates import TemplateError, evaluate, render
from events.services import event_emit
from hive_core.jsondata import text_storable
from hive_core.yamlfile import DefinitionError

Outcome = Invocation.Outcome


class CommandFailure(Exception):
    """The command was not carried out. `code` is invalid, denied or failed; the
    Invocation recording the attempt is `invocation`; `pointed` shows the token."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        invocation: Invocation,
        pointed: str = "",
        param: str = "",
        conflict: bool = False,
    ):
        super().__init__(message)
        self.code, self.invocation, self.param = code, invocation, param
        self.pointed = pointed or message
        # Refused for the state of things, not the request: what stands in the way may
        # end (the API's 409).
        self.conflict = conflict


# --- loading definitions -------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What loading did to one command, as `hive load` reports it."""

    name: str
    action: str  # created, updated, unchanged, enabled, disabled, error
    version: int | None = None
    source: str = ""
    error: str = ""
    why: str = ""  # of a command disabled because of where its file is

    def __str__(self) -> str:
        where = f", {self.source}" if self.source else ""
        if self.action == "error":
            return f"error: {self.error} (the loaded version, if any, stays active)"
        if self.action == "updated":
            return f"/{self.name} updated to v{self.version}{where}"
        if self.action == "disabled" and self.why:
            return f"/{self.name} disabled: {self.why}{where}"
        return f"/{self.name} {self.action} (v{self.version}{where})"


@transaction.atomic
def command_save(*, definition: Definition) -> tuple[Command, str]:
    """Save a validated definition: a new command, a new version of a changed one, or
    nothing. Its workflow is saved as a new version only when it changed."""
    existing = Command.objects.select_for_update().filter(name=definition.name).first()
    if existing and existing.digest == definition.digest:
        action = "unchanged"
        if existing.enabled != definition.enabled:
            action = "enabled" if definition.enabled else "disabled"
        if action != "unchanged" or existing.source != definition.source:
            existing.enabled, existing.source = definition.enabled, definition.source
            existing.save(update_fields=["enabled", "source", "updated_at"])
        return existing, action
    workflow, _ = workflow_save(
        name=definition.workflow_spec["name"],
        spec=definition.workflow_spec,
        source=f"/{definition.name}",
    )
    fields = {
        "description": definition.description,
        "argument_hint": definition.argument_hint,
        "params": definition.params,
        "definition": definition.definition,
        "workflow": workflow,
        "builtin": "",
        "permission": definition.permission,
        "approval": definition.approval,
        "overlap": definition.overlap,
        "overlap_key": definition.overlap_key,
        "enabled": definition.enabled,
        "body": definition.body,
        "source": definition.source,
        "digest": definition.digest,
    }
    if existing is None:
        command = Command.objects.create(name=definition.name, version=1, **fields)
        action = "created"
    else:
        for name, value in fields.items():
            setattr(existing, name, value)
        existing.version += 1
        existing.save()
        command, action = existing, "updated"
    event_emit(
        kind=f"command.{action}",
        subject=f"command:{command.name}",
        data={"version": command.version, "source": command.source},
    )
    return command, action


def commands_load(*, paths: list[Path] | None = None) -> list[Change]:
    """Sync definition files into the database and say what changed.

    With no paths: the shipped definitions and HIVE_COMMAND_DIRS. A folder is
    loaded whole, and its commands whose file is gone are disabled; a broken file
    is reported and its command keeps the version it had.
    """
    changes = builtins_sync()
    roots = [Path(p) for p in paths] if paths else [r for r in command_roots() if r.is_dir()]
    present: set[str] = set()  # every definition file found, loaded or broken
    names: dict[str, Path] = {}  # each name to the file that defined it
    for root in roots:
        if root.is_dir():
            files = definition_files(root)
        elif root.is_file():
            files = [(root, name_of(root))]
        else:
            changes.append(Change(name="", action="error", error=f"{root}: no such file or folder"))
            continue
        for path, name in files:
            present.add(str(path.resolve()))
            try:
                definition = definition_read(path, name=name)
                other = names.setdefault(definition.name, path)
                if other != path:
                    raise DefinitionError(f"{path}: /{definition.name} is defined by {other} too")
                command, action = command_save(definition=definition)
            except DefinitionError as exc:
                changes.append(Change(name=name, action="error", error=str(exc)))
                continue
            changes.append(
                Change(name=command.name, action=action, version=command.version, source=str(path))
            )
        if root.is_dir():
            changes += _disable_removed(root, present=present)
    if not paths:
        # A folder dropped from HIVE_COMMAND_DIRS takes its commands with it.
        changes += _disable_removed(None, present=present)
    return changes


def _disable_removed(root: Path | None, *, present: set[str]) -> list[Change]:
    """Disable the commands loaded from a file under `root` (or anywhere: None) that
    is not among those just read."""
    gone = Command.objects.filter(enabled=True, builtin="").exclude(source="")
    if root is not None:
        gone = gone.filter(source__startswith=str(root.resolve()).rstrip("/") + "/")
    reason = "file removed" if root is not None else "folder not loaded"
    why = "its file is gone" if root is not None else "its folder is not in HIVE_COMMAND_DIRS"
    changes = []
    for command in gone.exclude(source__in=present):
        command.enabled = False
        command.save(update_fields=["enabled", "updated_at"])
        event_emit(
            kind="command.disabled",
            subject=f"command:{command.name}",
            data={"reason": reason, "source": command.source},
        )
        changes.append(Change(name=command.name, action="disabled", source=command.source, why=why))
    return changes


def builtins_sync() -> list[Change]:
    """Make every /hive:* command a row, so it is listed, permission-checked and
    audited like the others; an admin may disable one."""
    changes = []
    # One query when nothing changed, as on every start and every listing.
    digests = dict(Command.objects.filter(name__in=BUILTINS).values_list("name", "digest"))
    for spec in BUILTINS.values():
        fields = {
            "description": spec.description,
            "argument_hint": spec.argument_hint,
            "params": spec.params,
            "permission": spec.permission,
            "body": spec.body,
            "builtin": spec.name,
            "source": "builtin",
        }
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
        if digests.get(spec.name) == digest:
            continue
        with transaction.atomic():
            existing = Command.objects.select_for_update().filter(name=spec.name).first()
            if existing and existing.digest == digest:
                continue
            if existing is None:
                Command.objects.create(name=spec.name, digest=digest, **fields)
                changes.append(
                    Change(name=spec.name, action="created", version=1, source="built-in")
                )
            else:
                Command.objects.filter(pk=existing.pk).update(
                    digest=digest, version=existing.version + 1, **fields
                )
                changes.append(
                    Change(
                        name=spec.name,
                        action="updated",
                        version=existing.version + 1,
                        source="built-in",
                    )
                )
    return changes


def command_find(*, name: str) -> Command | None:
    command = Command.objects.select_related("workflow").filter(name=name).first()
    if command is None and name in BUILTINS:
        builtins_sync()  # a database that has never been loaded still has the built-ins
        command = Command.objects.select_related("workflow").filter(name=name).first()
    return command


# --- executing -----------------------------------------------------------------------


@dataclass
class _Attempt:
    """What is known about an invocation so far, to record whatever the outcome."""

    text: str
    user: object
    source: str
    schedule: str = ""
    dry_run: bool = False
    command: Command | None = None
    parsed: Parsed | None = None
    args: dict | None = None

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
                subject=f"invocation:{invocation.pk}",
                data={"text": self.text[:200], "error": message},
            )
        else:
            invocation = Invocation(text=self.text, outcome=code, error=str(error))
        return CommandFailure(
            message,
            code=code,
            invocation=invocation,
            pointed=str(error),
            param=error.param if isinstance(error, ParseError) else param,
        )


def command_resolve(*, text: str, user, attempt: _Attempt | None = None) -> tuple:
    """Parse, find, bind and permission-check `text` for `user`; nothing is recorded
    unless `attempt` is given. Returns (parsed, command, args)."""
    attempt = attempt or _Attempt(text=text, user=user, source="", schedule="")
    try:
        parsed = parse(text, max_length=settings.HIVE_COMMAND_MAX_LENGTH)
    except ParseError as exc:
        raise attempt.refuse(Outcome.INVALID, exc) from None
    attempt.parsed = parsed
    attempt.dry_run = attempt.dry_run or parsed.dry_run
    command = command_find(name=parsed.name)
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
    if not (user and user.is_active and user.has_perm(command.permission)):
        who = getattr(user, "username", "") or "anonymous"
        raise attempt.refuse(
            Outcome.DENIED,
            f"permission denied: /{command.name} needs {command.permission} "
            f"and {who} does not have it",
        )
    return parsed, command, args


def command_execute(
    *, text: str, user, source: str, dry_run: bool = False, schedule: str = ""
) -> Invocation:
    """Run the command `text` as `user`; raises CommandFailure (recorded) when refused."""
    attempt = _Attempt(text=text, user=user, source=source, schedule=schedule, dry_run=dry_run)
    parsed, command, args = command_resolve(text=text, user=user, attempt=attempt)
    try:
        key = overlap_key(command=command, args=args)
    except TemplateError as exc:
        # Before the dry run too: a plan must not pass what the run would refuse.
        raise attempt.refuse(Outcome.FAILED, f"overlap key: {exc}") from None
    if attempt.dry_run:
        plan = command_plan(command=command, args=args, parsed=parsed, key=key, user=user)
        return attempt.record(Outcome.PLANNED, output=plan)
    if command.builtin:
        try:
            output = builtin_run(name=command.builtin, args=args, user=user)
        except BuiltinDenied as exc:
            raise attempt.refuse(Outcome.DENIED, str(exc)) from None
        except BuiltinError as exc:
            outcome = Outcome.DENIED if exc.denied else Outcome.FAILED
            raise attempt.refuse(outcome, str(exc)) from None
        return attempt.record(Outcome.DONE, output=output)
    if command.workflow is None:
        raise attempt.refuse(Outcome.FAILED, f"/{command.name} has no workflow")
    invocation, error = _start(attempt, command=command, args=args, key=key)
    if error:
        raise CommandFailure(
            error,
            code=Outcome.FAILED,
            invocation=invocation,
            conflict=error == HIDDEN_HOLDER.format(key=key),
        )
    return invocation


def _start(attempt: _Attempt, *, command: Command, args: dict, key: str):
    """Apply the overlap policy and start the run, in one transaction that holds the
    command's row: two invocations of one command decide one after the other, so
    `skip` and `queue` never both see "nothing open". (SQLite's IMMEDIATE
    transactions serialize them as well.)"""
    policy = Command.Overlap
    with transaction.atomic():
        Command.objects.select_for_update().filter(pk=command.pk).first()
        open_ones = list(_open_invocations(key))
        # Another user's run the user may not see (the runs API's rule) is never named
        # to them, nor cancelled by them: its id, state and existence are not theirs.
        seen = _runs_seen(attempt.user, open_ones)
        if command.overlap == policy.SKIP and open_ones:
            blocking = open_ones[0].run
            return attempt.record(
                Outcome.SKIPPED,
                overlap_key=key,
                error=f"run {blocking.pk} with overlap key {key!r} is still {blocking.state}"
                if blocking.pk in seen
                else f"a run you cannot see with overlap key {key!r} is still open",
            ), ""
        if command.overlap == policy.QUEUE and (
            open_ones or Invocation.objects.filter(overlap_key=key, outcome=Outcome.QUEUED).exists()
        ):
            return attempt.record(Outcome.QUEUED, overlap_key=key), ""
        if command.overlap == policy.CANCEL_RUNNING:
            if any(i.run_id not in seen for i in open_ones):
                error = HIDDEN_HOLDER.format(key=key)
                invocation = attempt.record(Outcome.FAILED, overlap_key=key, error=error)
                return invocation, error
            for invocation in open_ones:
                # One that ended on its own meanwhile needs no cancelling.
                with contextlib.suppress(RunError):
                    run_cancel(run=invocation.run, user=attempt.user or None)
        invocation = attempt.record(Outcome.STARTED, overlap_key=key)
        error = _run_for(invocation, command=command, args=args, parsed=attempt.parsed)
    return invocation, error


# cancel-running refuses (a conflict) rather than cancel a run its user cannot see.
HIDDEN_HOLDER = (
    "a run you cannot see holds overlap key {key!r}: it was not cancelled and nothing "
    "started; try again when it has ended"
)


def _runs_seen(user, invocations: list[Invocation]) -> set[int]:
    ids = [i.run_id for i in invocations]
    if not ids or not getattr(user, "pk", None):
        return set()
    return run_visible_ids(user=user, ids=ids)


def _run_for(invocation: Invocation, *, command: Command, args: dict, parsed: Parsed) -> str:
    """Start the run of a recorded invocation; on failure mark it failed and say why."""
    context = {
        "name": command.name,
        "prompt": command.body.replace("$ARGUMENTS", parsed.arguments),
        "arguments": parsed.arguments,
        "invocation": invocation.pk,
        "user": getattr(invocation.user, "username", ""),
    }
    try:
        with transaction.atomic():
            run = run_start(
                workflow=command.workflow,
                params=args,
                internal={CONTEXT_KEY: context},
                user=invocation.user,
            )
    except RunError as exc:
        invocation.outcome, invocation.error = Outcome.FAILED, str(exc)
        invocation.finished_at = timezone.now()
        invocation.save(update_fields=["outcome", "error", "finished_at"])
        return str(exc)
    invocation.outcome, invocation.run, invocation.finished_at = (
        Outcome.STARTED,
        run,
        timezone.now(),
    )
    invocation.save(update_fields=["outcome", "run", "finished_at"])
    event_emit(
        kind="command.started",
        subject=f"invocation:{invocation.pk}",
        data={"command": command.name, "run": run.pk},
    )
    return ""


def command_run_check(*, run, user, action: str) -> str:
    """A retry of a command's run runs the command's steps again: it needs the
    command's permission too, as running it would (coordination asks this, see
    RUN_ACTION_CHECKS). Other actions (cancel, approve) start nothing of it."""
    if action != "retry":
        return ""
    invocation = Invocation.objects.select_related("command").filter(run=run).first()
    command = invocation.command if invocation else None
    if command is None or (user.is_active and user.has_perm(command.permission)):
        return ""
    return (
        f"permission denied: retrying run {run.pk} runs /{command.name} again, which needs "
        f"{command.permission} and {user.username} does not have it"
    )


def _open_invocations(key: str):
    return (
        Invocation.objects.filter(overlap_key=key, run__state__in=Invocation.OPEN_RUN_STATES)
        .select_related("run")
        .order_by("id")
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
            if first is None or _open_invocations(key).exists():
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
            if not _run_for(first, command=command, args=first.args, parsed=parsed):
                started += 1
    return started


# --- dry runs ------------------------------------------------------------------------


def command_plan(*, command: Command, args: dict, parsed: Parsed, key: str, user) -> dict:
    """What running the command would do, starting nothing: each step with where it
    would be routed and whether it runs, the approvals needed, the outcome of the
    overlap policy on `key`."""
    plan = {"command": command.name, "version": command.version, "params": args}
    if command.builtin:
        return {**plan, "builtin": command.builtin}
    spec = command.workflow.spec
    context = {
        "params": {
            **args,
            CONTEXT_KEY: {
                "prompt": command.body.replace("$ARGUMENTS", parsed.arguments),
                "arguments": parsed.arguments,
            },
        },
        "steps": {},
        "run": {"id": None},
        "item": None,
    }
    steps = []
    for step in spec["steps"]:
        entry = {"id": step["id"], "skill": step["skill"], "needs": step["needs"]}
        try:
            entry["queue"] = route(skill=step["skill"], agent=step["agent"], role=step["role"])
        except RoutingError as exc:
            entry["queue"], entry["waits"] = None, f"waiting for an agent: {exc}"
        if step["when"]:
            entry["runs"] = _decided(lambda s=step: bool(evaluate(s["when"], context)))
        if step["foreach"] is not None:
            items = _decided(lambda s=step: render(s["foreach"], context))
            entry["items"] = len(items) if isinstance(items, list) else items
        if step["approval"]:
            entry["approval"] = entry.get("runs", True)
        steps.append(entry)
    approvals = [s["id"] for s in steps if s.get("approval") is True]
    open_ones = list(_open_invocations(key))
    seen = _runs_seen(user, open_ones)
    overlap = {
        "policy": command.overlap,
        "key": key,
        # Only the runs the user may see are named; the others are counted.
        "open_runs": [i.run_id for i in open_ones if i.run_id in seen],
        "hidden_open_runs": len([i for i in open_ones if i.run_id not in seen]),
        "would": _would(
            command.overlap, [i.run_id for i in open_ones], hidden=len(seen) < len(open_ones)
        ),
    }
    return {
        **plan,
        "workflow": str(command.workflow),
        "approvals": approvals,
        "overlap": overlap,
        "steps": steps,
    }


def _decided(compute):
    try:
        return compute()
    except TemplateError:
        return "decided when it runs (needs earlier steps' outputs)"


def _would(policy: str, open_runs: list[int], *, hidden: bool = False) -> str:
    if not open_runs or policy == Command.Overlap.ALLOW:
        return "start"
    if hidden and policy == Command.Overlap.CANCEL_RUNNING:
        return "refuse: a run you cannot see holds the key"
    return {"skip": "skip", "queue": "queue", "cancel-running": "cancel them, then start"}[policy]


# --- schedules -----------------------------------------------------------------------


class ScheduleError(Exception):
    """The schedule cannot be made or changed; the message names the field."""


class ScheduleDenied(ScheduleError):
    """The user lacks the permission the action on schedules needs (the API's 403)."""


def schedule_check(*, user, action: str) -> None:
    """Refuse `action` on schedules unless `user` has its permission: the one rule of
    the API and /hive:schedule (SCHEDULE_ACTION_PERMISSIONS)."""
    if not schedule_permitted(user=user, action=action):
        who = getattr(user, "username", "") or "anonymous"
        raise ScheduleDenied(
            f"permission denied: {action} a schedule needs "
            f"{SCHEDULE_ACTION_PERMISSIONS[action]} and {who} does not have it"
        )


def schedule_create(
    *,
    text: str,
    user,
    every: int | None = None,
    cron: str = "",
    name: str = "",
    enabled: bool = True,
) -> PeriodicTask:
    """Run `text` as `user` every `every` seconds or on the crontab `cron`. The text is
    checked now, as a run would check it, so a schedule never starts out broken."""
    schedule_check(user=user, action="add")
    if bool(every) == bool(cron):
        raise ScheduleError("give every=<seconds> or cron=<minute hour day month weekday>, one")
    command = schedule_text_check(text=text, user=user)
    with transaction.atomic():
        if every:
            interval, _ = IntervalSchedule.objects.get_or_create(
                every=every, period=IntervalSchedule.SECONDS
            )
            when = {"interval": interval}
        else:
            fields = cron.split()
            if len(fields) != 5:
                raise ScheduleError(
                    f"cron: {cron!r} needs 5 fields: minute hour day-of-month month day-of-week"
                )
            keys = ["minute", "hour", "day_of_month", "month_of_year", "day_of_week"]
            try:
                crontab, _ = CrontabSchedule.objects.get_or_create(
                    **dict(zip(keys, fields, strict=True)), timezone="UTC"
                )
                crontab.schedule  # noqa: B018 - parses the fields; raises on a bad one
            except ValueError as exc:
                raise ScheduleError(f"cron: {cron!r}: {exc}") from None
            when = {"crontab": crontab}
        label = name or f"{text} ({f'every {every} s' if every else cron})"
        try:
            with transaction.atomic():
                task = PeriodicTask.objects.create(
                    name=label[:200],
                    task=SCHEDULE_TASK,
                    enabled=enabled,
                    # Shown in the admin; a firing reads the text and owner from Schedule.
                    kwargs=json.dumps({"text": text}),
                    queue=settings.HIVE_COORDINATOR_QUEUE,
                    description=f"/{command.name} on a schedule, as {user.username}",
                    **when,
                )
        except (ValidationError, IntegrityError) as exc:
            # PeriodicTask.save() checks its unique name itself (validate_unique, a
            # ValidationError); the unique index catches two made at once.
            if isinstance(exc, ValidationError) and "name" not in exc.message_dict:
                raise
            raise ScheduleError(f"name: a schedule named {label!r} exists already") from None
        Schedule.objects.create(periodic_task=task, owner=user, text=text)
        _schedule_emit("created", task=task, text=text, by=user.username)
    return task


def schedule_text_check(*, text: str, user) -> Command:
    """The command `text` runs, checked as a firing would check it for `user`."""
    try:
        parsed, command, _ = command_resolve(text=text, user=user)
    except CommandFailure as exc:
        raise ScheduleError(f"text: {exc}") from None
    if parsed.dry_run:
        raise ScheduleError("text: a dry run cannot be scheduled")
    return command


@transaction.atomic
def schedule_saved(*, task: PeriodicTask, user) -> Schedule | None:
    """A periodic task was saved in the admin by `user`: a command schedule runs as
    whoever last saved it there, with the text its kwargs hold now, checked now as
    schedule_create checks it (ScheduleError naming the field). Another task has no
    record. Whoever can edit a schedule's kwargs decides what it runs, so it runs with
    their permissions, never with those of a user its kwargs name."""
    if task.task != SCHEDULE_TASK:
        Schedule.objects.filter(periodic_task=task).delete()
        return None
    text = schedule_kwargs(task).get("text")
    if not isinstance(text, str) or not text.strip():
        raise ScheduleError('kwargs: give the command to run: {"text": "/command args"}')
    schedule_text_check(text=text, user=user)
    record, _ = Schedule.objects.update_or_create(
        periodic_task=task, defaults={"owner": user, "text": text}
    )
    _schedule_emit("saved", task=task, text=text, by=user.username)
    return record


def _schedule_emit(what: str, *, task: PeriodicTask, **data) -> None:
    """A schedule's event, naming the schedule's owner: its events are shown only to
    them (and to those who see every event), as the text they scheduled is theirs.
    The owner is in each event, since a removed schedule is no row to look up."""
    record = schedule_record(task)
    event_emit(
        kind=f"schedule.{what}",
        subject=f"schedule:{task.pk}",
        data={**data, "owner": record.owner_id if record else None},
    )


def _schedule_get(schedule_id: int, *, user, action: str) -> PeriodicTask:
    """The schedule, if `user` may see it and do `action` on it. One they may not see
    is no schedule (as the API's 404): saying it exists would tell them whose it is."""
    schedule_check(user=user, action=action)
    task = schedule_visible_list(user=user).filter(pk=schedule_id).first()
    if task is None:
        raise ScheduleError(f"no schedule {schedule_id}")
    return task


@transaction.atomic
def schedule_update(*, schedule_id: int, enabled: bool, user) -> PeriodicTask:
    task = _schedule_get(schedule_id, user=user, action="enable" if enabled else "disable")
    task.enabled = enabled
    # save() (not update()) so django-celery-beat marks the schedule changed and
    # the coordinator's beat reloads it.
    task.save()
    _schedule_emit("enabled" if enabled else "disabled", task=task)
    return task


@transaction.atomic
def schedule_delete(*, schedule_id: int, user) -> None:
    task = _schedule_get(schedule_id, user=user, action="remove")
    _schedule_emit("removed", task=task)  # before delete(), which forgets the row's pk
    task.delete()


def scheduled_execute(*, schedule: str) -> Invocation | None:
    """The schedule named `schedule` fired: run its recorded text as its recorded
    owner, audited with source `schedule`. The owner's permission (and that they are
    active) is checked at every firing, as for any command; a schedule Hive never
    recorded (or a task sent by hand, naming no schedule) runs nothing and is denied."""
    found = PeriodicTask.objects.filter(name=schedule, task=SCHEDULE_TASK)
    task = found.first() if schedule else None
    record = schedule_record(task) if task else None
    if record is None:
        text = schedule_kwargs(task).get("text", "") if task else ""
        attempt = _Attempt(
            text=str(text), user=None, source=Invocation.Source.SCHEDULE, schedule=schedule
        )
        return attempt.refuse(
            Outcome.DENIED,
            f"schedule {schedule!r} has no owner recorded by Hive (made outside the API, "
            "/hive:schedule and the admin): nothing runs; "
            "save it in the admin or make it again",
        ).invocation
    try:
        return command_execute(
            text=record.text, user=record.owner, source=Invocation.Source.SCHEDULE,
            schedule=schedule,
        )  # fmt: skip
    except CommandFailure as exc:
        return exc.invocation
