"""The coordinators' beat: django-celery-beat's DatabaseScheduler, made safe to hand over
between coordinators (coordination.leadership).

django-celery-beat keeps each schedule's last run in memory and writes it to its row
lazily (every 3 minutes, or when the schedules change), so a beat that takes over reads
a last run up to 3 minutes old and fires again what the old leader fired; and a
deposed beat's late write could set a row's last run back. Here:

- a command schedule's last run is written by its firing, in the transaction that
  runs it (commands.schedules.scheduled_fire), never by the beat: every message
  carries the time the beat found it due, and the firing runs only if that time is
  due after the row's last run. The row is the record; the new leader's beat reads it.
- any other entry's last run only ever moves forward.
- only the leading coordinator's beat sends anything (fencing: `leading()`).
"""

import logging

from django.db.models import Q
from django.utils import timezone
from django_celery_beat.models import PeriodicTask, PeriodicTasks
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

from commands.schedules import DUE_HEADER
from commands.selectors import SCHEDULE_TASK
from coordination.leadership import leading

logger = logging.getLogger(__name__)

# Entries older versions put in the beat: the leader runs these passes itself now
# (coordination.leadership), so their rows must not fire them as well.
RETIRED_ENTRIES = {
    "reap": "coordination.reap_task",
    "commands-dequeue": "commands.invocations_dequeue_task",
}


class HiveEntry(ModelEntry):
    def save(self):
        if self.model.task == SCHEDULE_TASK:
            return  # its firing wrote it (scheduled_fire)
        last = self.model.last_run_at
        # Forward only: a beat deposed while stopped must not undo a newer leader's run.
        PeriodicTask.objects.filter(pk=self.model.pk).filter(
            Q(last_run_at__isnull=True) | Q(last_run_at__lt=last)
        ).update(last_run_at=last, total_run_count=self.model.total_run_count)


class HiveScheduler(DatabaseScheduler):
    Entry = HiveEntry

    def setup_schedule(self):
        for name, task in RETIRED_ENTRIES.items():
            PeriodicTask.objects.filter(name=name, task=task).delete()
        # django-celery-beat notices a change by the time on PeriodicTasks' one row, and
        # misses the first change of a database that had no row (nothing to compare
        # with): a first schedule would wait for its full sync, 5 minutes. Start from a
        # time, so every change after this one is seen.
        PeriodicTasks.update_changed()
        self._last_timestamp = PeriodicTasks.last_change()
        super().setup_schedule()

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        if not leading(verify=True):
            logger.warning("beat: not the leader, %s not sent", entry.name)
            return None
        # reserve() has set the time the entry was found due on the model it shares
        # with the next entry: the time its firing records as its last run.
        due = getattr(getattr(entry, "model", None), "last_run_at", None) or timezone.now()
        entry.options = {
            **entry.options,
            "headers": {**entry.options.get("headers", {}), DUE_HEADER: due.isoformat()},
        }
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
