"""A schedule fires once per due time, whichever beat sent it and however often it was
delivered: the firing claims the due time on the schedule's row, in the transaction
that runs it (commands.schedules.scheduled_fire). The processes' side (a leader killed
mid-period) is tests/coordination/test_standby.py and tests/chaos/."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from commands.models import Invocation
from commands.schedules import schedule_create, scheduled_fire

pytestmark = pytest.mark.django_db(transaction=True)
EVERY = 60


@pytest.fixture
def schedule(users):
    return schedule_create(text="/hive:status", user=users["admin"], every=EVERY, name="hourly")


def _fire(due) -> Invocation | None:
    return scheduled_fire(schedule="hourly", due=due.isoformat())


def test_a_firing_delivered_twice_runs_once(schedule):
    due = timezone.now()

    first, again = _fire(due), _fire(due)

    assert (first.outcome, first.schedule, again) == ("done", "hourly", None)
    schedule.refresh_from_db()
    assert (schedule.last_run_at, schedule.total_run_count) == (due, 1)
    assert Invocation.objects.count() == 1


@pytest.mark.parametrize("order", ["old leader first", "new leader first"])
def test_a_due_time_fired_by_the_old_leader_and_the_new_one_runs_once(schedule, order):
    """The old leader's beat fired at `due`; the new leader's beat read the row before
    that firing claimed it, and fired again seconds later."""
    due = timezone.now() - timedelta(seconds=5)
    late = due + timedelta(seconds=3)
    firings = [due, late] if order == "old leader first" else [late, due]

    fired = [_fire(at) for at in firings]

    assert [f is not None for f in fired] == [True, False]
    assert Invocation.objects.count() == 1


def test_the_next_period_fires_and_a_firing_early_by_more_than_the_slack_does_not(schedule):
    due = timezone.now() - timedelta(seconds=2 * EVERY)
    assert _fire(due)

    early = _fire(due + timedelta(seconds=EVERY - 2))  # before the period is over
    on_time = _fire(due + timedelta(seconds=EVERY - 0.5))  # within a clock's slack

    assert (early, on_time.outcome) == (None, "done")
    schedule.refresh_from_db()
    assert schedule.total_run_count == 2


def test_a_disabled_schedule_does_not_fire_what_was_sent_before(schedule):
    PeriodicTask.objects.filter(pk=schedule.pk).update(enabled=False)

    assert _fire(timezone.now()) is None
    assert not Invocation.objects.exists()


def test_a_firing_that_fails_leaves_its_due_time_to_fire(schedule, monkeypatch):
    """A coordinator killed mid-firing rolls its transaction back: the claim goes with
    it, so the next leader's beat (reading the row) fires the due time."""
    import commands.schedules

    def crash(**_):
        raise RuntimeError("killed mid-firing")

    due = timezone.now()
    monkeypatch.setattr(commands.schedules, "scheduled_execute", crash)
    with pytest.raises(RuntimeError):
        _fire(due)
    monkeypatch.undo()

    assert _fire(due).outcome == "done"


def test_two_coordinators_firing_one_due_time_at_once_run_it_once(schedule):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serializes the two; PostgreSQL's row lock is what this checks")
    due = timezone.now()
    start = threading.Barrier(2)
    fired = []

    def coordinator():
        start.wait()
        try:
            fired.append(_fire(due))
        finally:
            connection.close()

    threads = [threading.Thread(target=coordinator) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(f is not None for f in fired) == [False, True]
    assert Invocation.objects.count() == 1


def test_the_beat_sees_the_first_schedule_of_a_database_that_had_none(users, monkeypatch):
    """django-celery-beat compares PeriodicTasks' change time with the last it read; with
    no row when the beat starts it has none, and the first change (the first schedule)
    would wait for its full sync, 5 minutes."""
    from commands.beat import HiveScheduler
    from hive_project.celery import app

    # As in the coordinator, whose Redis results expire by themselves: no cleanup entry,
    # whose row would have made the change time.
    monkeypatch.setitem(app.conf, "result_expires", None)
    PeriodicTasks.objects.all().delete()
    scheduler = HiveScheduler(app=app)
    assert "first" not in scheduler.schedule  # its initial read
    schedule_create(text="/hive:status", user=users["admin"], every=EVERY, name="first")

    assert "first" in scheduler.schedule  # its next look
