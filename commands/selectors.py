"""Reads of the commands app: commands, the invocation audit, schedules."""

import json

from django.db.models import Prefetch, QuerySet
from django_celery_beat.models import PeriodicTask

from commands.models import ANY_OF, Command, Invocation, Schedule
from coordination.models import StepRun
from coordination.selectors import run_visible_ids
from hive_core.db import filter_given

SCHEDULE_TASK = "commands.command_schedule_task"
# The permission each action on schedules needs, for the API and /hive:schedule alike:
# the built-in once asked add_periodictask for all of them, so a user the API refused
# (403) listed every schedule's text and disabled or removed others' with it.
SCHEDULE_ACTION_PERMISSIONS = {
    "list": "django_celery_beat.view_periodictask",
    "add": "django_celery_beat.add_periodictask",
    "enable": "django_celery_beat.change_periodictask",
    "disable": "django_celery_beat.change_periodictask",
    "remove": "django_celery_beat.delete_periodictask",
}


def command_allowed(*, command: Command, user) -> bool:
    """Whether `user` (active) may execute `command`: holds its permission, or one of a
    built-in's that takes any of several (its handler checks the one it needs)."""
    return bool(
        user
        and user.is_active
        and any(user.has_perm(permission) for permission in command.permission.split(ANY_OF))
    )


def command_list(*, include_disabled: bool = False) -> QuerySet[Command]:
    commands = Command.objects.select_related("workflow").order_by("name")
    return commands if include_disabled else commands.filter(enabled=True)


def invocation_flow(*, command: Command, priority=None, deadline=None) -> dict:
    """The priority and deadline (seconds, or None) a run of `command` starts with: the
    invocation's (`priority`, `deadline`), else the command's, else its workflow's."""
    spec = command.workflow.spec if command.workflow else {}
    given = (priority, command.priority, spec.get("priority"), 0)
    limits = (deadline, command.timeout, spec.get("timeout"))
    return {
        "priority": next(p for p in given if p is not None),
        "deadline": next((d for d in limits if d is not None), None),
    }


def invocation_list(
    *, user, command: str = "", outcome: str = "", source: str = "", run: int | None = None
) -> QuerySet[Invocation]:
    """The audit, newest first: staff see everyone's invocations, others their own."""
    # The runs' top-level steps come in one query for the whole page (run_outputs).
    top_steps = Prefetch("run__steps", StepRun.objects.filter(group=None), to_attr="top_steps")
    invocations = Invocation.objects.select_related(
        "user", "command", "run__workflow"
    ).prefetch_related(top_steps)
    if not user.is_staff:
        invocations = invocations.filter(user=user)
    return filter_given(
        invocations, command_name=command.lstrip("/"), outcome=outcome, source=source, run_id=run
    ).order_by("-id")


def schedule_when(task: PeriodicTask) -> str:
    if task.interval_id:
        return (
            f"every {task.interval.every} s"
            if task.interval.period == "seconds"
            else (f"every {task.interval.every} {task.interval.period}")
        )
    if task.crontab_id:
        c = task.crontab
        return f"cron {c.minute} {c.hour} {c.day_of_month} {c.month_of_year} {c.day_of_week}"
    return str(task.schedule)


def schedule_kwargs(task: PeriodicTask) -> dict:
    """A schedule's kwargs, as django-celery-beat sends them: only what was typed in
    the admin (`{"text": "/..."}`); who and what it runs are Hive's record, Schedule."""
    try:
        kwargs = json.loads(task.kwargs or "{}")
    except ValueError:
        return {}
    return kwargs if isinstance(kwargs, dict) else {}


def schedule_record(task: PeriodicTask) -> Schedule | None:
    """Hive's record of `task` (its owner and text); None if Hive never recorded it
    (made some other way than the API, /hive:schedule or the admin)."""
    return Schedule.objects.select_related("owner").filter(periodic_task=task).first()


def schedule_sees_all(*, user) -> bool:
    """Staff manage every schedule (the admin shows them all); others their own."""
    return bool(user and user.is_active and user.is_staff)


def schedule_permitted(*, user, action: str) -> bool:
    """May `user` do `action` (a key of SCHEDULE_ACTION_PERMISSIONS) on schedules?"""
    return bool(user and user.has_perm(SCHEDULE_ACTION_PERMISSIONS[action]))


def schedule_visible_list(*, user) -> QuerySet[PeriodicTask]:
    """The command schedules `user` may see and change: their own, or all for staff.
    A schedule's text is what its owner typed, private as their invocations are."""
    tasks = PeriodicTask.objects.filter(task=SCHEDULE_TASK)
    if not schedule_sees_all(user=user):
        tasks = tasks.filter(hive_schedule__owner=user)
    return tasks


def schedule_list(*, user) -> list[dict]:
    """The schedules `user` may see, with their text, owner and timing."""
    tasks = schedule_visible_list(user=user).select_related("interval", "crontab", "hive_schedule")
    rows = []
    for task in tasks.order_by("id"):
        record = getattr(task, "hive_schedule", None)
        rows.append(
            {
                "id": task.pk,
                "name": task.name,
                "text": record.text if record else schedule_kwargs(task).get("text", ""),
                "user_id": record.owner_id if record else None,
                "when": schedule_when(task),
                "enabled": task.enabled,
                "last_run_at": task.last_run_at,
                "total_run_count": task.total_run_count,
            }
        )
    return rows


def invocation_queued_count() -> int:
    """Invocations waiting for the open run of their overlap key to end (`overlap: queue`)."""
    return Invocation.objects.filter(outcome=Invocation.Outcome.QUEUED).count()


def invocation_open_list(*, key: str) -> QuerySet[Invocation]:
    """The invocations whose run is open and holds overlap key `key`, oldest first."""
    return (
        Invocation.objects.filter(overlap_key=key, run__state__in=Invocation.OPEN_RUN_STATES)
        .select_related("run")
        .order_by("id")
    )


def invocation_runs_seen(*, user, invocations: list[Invocation]) -> set[int]:
    """The ids of the runs of `invocations` that `user` may see."""
    ids = [i.run_id for i in invocations]
    if not ids or not getattr(user, "pk", None):
        return set()
    return run_visible_ids(user=user, ids=ids)
