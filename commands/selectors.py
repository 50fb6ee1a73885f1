"""Reads of the commands app: commands, the invocation audit, schedules."""

import json

from django.db.models import Prefetch, QuerySet
from django_celery_beat.models import PeriodicTask

from commands.models import Command, Invocation
from coordination.models import Run, StepRun

SCHEDULE_TASK = "commands.command_schedule_task"


def command_list(*, include_disabled: bool = False) -> QuerySet[Command]:
    commands = Command.objects.select_related("workflow").order_by("name")
    return commands if include_disabled else commands.filter(enabled=True)


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
    if command:
        invocations = invocations.filter(command_name=command.lstrip("/"))
    if outcome:
        invocations = invocations.filter(outcome=outcome)
    if source:
        invocations = invocations.filter(source=source)
    if run:
        invocations = invocations.filter(run_id=run)
    return invocations.order_by("-id")


def run_outputs(*, run: Run) -> dict:
    """The outputs of a run's last steps (those no other step needs): what it produced."""
    needed = {need for step in run.workflow.spec["steps"] for need in step["needs"]}
    last = [s["id"] for s in run.workflow.spec["steps"] if s["id"] not in needed]
    steps = getattr(run, "top_steps", None)
    if steps is None:
        steps = run.steps.filter(group=None, step_id__in=last)
    return {s.key: s.output for s in steps if s.step_id in last and s.state == "succeeded"}


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
    """What a schedule runs: `{"text": "/...", "user_id": N}`, its owner's id."""
    return json.loads(task.kwargs or "{}")


def schedule_list() -> list[dict]:
    """Every schedule that runs a command, with its text, owner and timing."""
    tasks = PeriodicTask.objects.filter(task=SCHEDULE_TASK).select_related("interval", "crontab")
    rows = []
    for task in tasks.order_by("id"):
        kwargs = schedule_kwargs(task)
        rows.append(
            {
                "id": task.pk,
                "name": task.name,
                "text": kwargs.get("text", ""),
                "user_id": kwargs.get("user_id"),
                "when": schedule_when(task),
                "enabled": task.enabled,
                "last_run_at": task.last_run_at,
                "total_run_count": task.total_run_count,
            }
        )
    return rows
