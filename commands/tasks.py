from celery import shared_task

from commands.executing import invocations_dequeue
from commands.schedules import DUE_HEADER, scheduled_fire
from coordination.leadership import leading


# At most once: a scheduled firing delivered twice would start two runs, and one
# lost to a crash is replaced by the next firing.
@shared_task(bind=True, name="commands.command_schedule_task", acks_late=False, ignore_result=True)
def command_schedule_task(self, text: str = "", user_id: int | None = None, **_) -> int | None:
    """A schedule fired (the leading coordinator's beat): run its command, once per due
    time whichever coordinator's beat sent it, and however often it was delivered.

    `text` and `user_id` are the schedule's editable kwargs (schedules made before
    Hive recorded owners carry user_id): accepted, never believed. Who and what run
    are Hive's record of the schedule this message names."""
    # DatabaseScheduler names the periodic task in a message header; Hive's beat
    # (commands.beat) adds when it found the firing due.
    schedule = getattr(self.request, "periodic_task_name", None) or ""
    invocation = scheduled_fire(schedule=schedule, due=getattr(self.request, DUE_HEADER, None))
    return invocation.pk if invocation else None


@shared_task(name="commands.invocations_dequeue_task", acks_late=False, ignore_result=True)
def invocations_dequeue_task() -> int | None:
    """Start queued invocations (`overlap: queue`) whose blocking run has ended. The
    leader now runs this pass itself; a message an older beat sent runs only there."""
    return invocations_dequeue() if leading() else None
