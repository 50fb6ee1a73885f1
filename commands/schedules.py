"""Schedules: a command's text run as its owner by django-celery-beat, checked when
made and at every firing."""

import json
import logging
from datetime import UTC, datetime, timedelta

from celery import schedules
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from commands.errors import CommandFailure, ScheduleDenied, ScheduleError
from commands.executing import Attempt, command_execute, command_resolve
from commands.models import Command, Invocation, Schedule
from commands.selectors import (
    SCHEDULE_ACTION_PERMISSIONS,
    SCHEDULE_TASK,
    schedule_kwargs,
    schedule_permitted,
    schedule_record,
    schedule_visible_list,
)
from events.kinds import subject
from events.services import event_emit
from hive_core.errors import NotFound

logger = logging.getLogger(__name__)
Outcome = Invocation.Outcome
# The message header in which Hive's beat (commands.beat) says when it found a firing due.
DUE_HEADER = "hive_due"
# How much earlier than due a firing may come and still count: coordinators' clocks
# differ a little, and a beat that took over must not skip a period for it.
DUE_SLACK = 1.0
# The API's serializer says it too, as an error of no one field.
WHEN_NEEDED = "give every=<seconds> or cron=<minute hour day month weekday>, one"


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
        raise ScheduleError(WHEN_NEEDED)
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
        subject=subject("schedule", task.pk),
        data={**data, "owner": record.owner_id if record else None},
    )


def _schedule_get(schedule_id: int, *, user, action: str) -> PeriodicTask:
    """The schedule, if `user` may see it and do `action` on it. One they may not see
    is no schedule (as the API's 404): saying it exists would tell them whose it is."""
    schedule_check(user=user, action=action)
    task = schedule_visible_list(user=user).filter(pk=schedule_id).first()
    if task is None:
        raise NotFound(f"no schedule {schedule_id}")
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
        attempt = Attempt(
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


def scheduled_fire(*, schedule: str, due: str | None = None) -> Invocation | None:
    """The beat found schedule `schedule` due at `due` (ISO 8601; now if not given): run
    it, unless its row says it has run since it was last due. Claiming the firing (the
    row's last run and count) and running it are one transaction holding the row, so
    two beats (a leader and the one that took over from it) or a message delivered
    twice fire it once; and a coordinator killed mid-firing leaves the row unclaimed,
    so the next leader's beat, reading the row, fires it. None when not fired."""
    try:
        fired_at = datetime.fromisoformat(due) if due else timezone.now()
    except (TypeError, ValueError):
        fired_at = timezone.now()
    if timezone.is_naive(fired_at):
        fired_at = fired_at.replace(tzinfo=UTC)
    with transaction.atomic():
        task = (
            # Only the task's row: PostgreSQL locks no nullable side of an outer join.
            PeriodicTask.objects.select_for_update(of=("self",))
            .filter(name=schedule, task=SCHEDULE_TASK)
            .select_related("interval", "crontab", "solar", "clocked")
            .first()
            if schedule
            else None
        )
        if task is not None:
            if not task.enabled or not schedule_due(task, at=fired_at):
                logger.info("schedule %r: fired already or disabled, not again", schedule)
                return None
            PeriodicTask.objects.filter(pk=task.pk).update(
                last_run_at=fired_at, total_run_count=F("total_run_count") + 1
            )
        return scheduled_execute(schedule=schedule)


def schedule_due(task: PeriodicTask, *, at: datetime) -> bool:
    """Whether a firing found due at `at` is one `task` has not had: `at` is no earlier
    than the first due time after its last recorded run (a little slack for clocks)."""
    last = task.last_run_at
    if last is None:
        return True
    when = task.schedule
    slack = DUE_SLACK
    if isinstance(when, schedules.schedule):
        # An interval shorter than the slack would take a duplicate for the next run.
        slack = min(DUE_SLACK, when.run_every.total_seconds() / 4)
    next_due = timezone.now() + when.remaining_estimate(last)
    return at >= next_due - timedelta(seconds=slack)
