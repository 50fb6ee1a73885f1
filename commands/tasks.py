from celery import shared_task

from commands.executing import invocations_dequeue
from commands.schedules import scheduled_execute


# At most once: a scheduled firing delivered twice would start two runs, and one
# lost to a crash is replaced by the next firing.
@shared_task(bind=True, name="commands.command_schedule_task", acks_late=False, ignore_result=True)
def command_schedule_task(self, text: str = "", user_id: int | None = None, **_) -> int | None:
    """A schedule fired (django-celery-beat, in the coordinator): run its command.

    `text` and `user_id` are the schedule's editable kwargs (schedules made before
    Hive recorded owners carry user_id): accepted, never believed. Who and what run
    are Hive's record of the schedule this message names."""
    # DatabaseScheduler names the periodic task in a message header.
    schedule = getattr(self.request, "periodic_task_name", None) or ""
    invocation = scheduled_execute(schedule=schedule)
    return invocation.pk if invocation else None


@shared_task(name="commands.invocations_dequeue_task", acks_late=False, ignore_result=True)
def invocations_dequeue_task() -> int:
    """Start queued invocations (`overlap: queue`) whose blocking run has ended."""
    return invocations_dequeue()
