"""Helpers for tests that run several coordinators: who leads, and how a schedule fired."""

import itertools
import time

from django.contrib.auth import get_user_model
from django_celery_beat.models import PeriodicTask

from commands.models import Invocation
from commands.schedules import schedule_create
from coordination.leadership import STATUS_KEY, coordinator_leader, coordinators_status
from tests.processes import ManagedProcess, ProcessGroup, wait_for


def coordinators_start(processes: ProcessGroup, *names: str) -> list[ManagedProcess]:
    """`hive coordinator --name=NAME` for each name (their records from earlier tests,
    killed ones included, are cleared first), once one of them leads."""
    from hive_core.redis_client import redis_client

    redis_client().delete(STATUS_KEY)
    started = [processes.start("coordinator", f"--name={name}", name=name) for name in names]
    leader_wait(started, timeout=60)
    return started


def leader_wait(candidates: list[ManagedProcess], *, timeout: float) -> ManagedProcess:
    """The one of `candidates` that leads, as its record says, once one does."""
    by_pid = {p.pid: p for p in candidates}

    def leads():
        for process in candidates:
            assert process.alive(), f"{process.name} exited:\n{process.log()}"
        leader = coordinator_leader(coordinators_status())
        return leader and by_pid.get(leader["pid"])

    return wait_for(leads, timeout=timeout, what=f"one of {sorted(by_pid)} to lead", interval=0.05)


def leader_after_kill(leader: ManagedProcess, others: list[ManagedProcess], signal_: int):
    """Send `signal_` to the leader; return the one of `others` that leads next and how
    many seconds that took (from the signal to its record saying so)."""
    sent = time.monotonic()
    leader.signal(signal_)
    following = leader_wait(others, timeout=60)
    return following, time.monotonic() - sent


def schedule_every(seconds: int, *, name: str) -> PeriodicTask:
    """/hive:status every `seconds` as a superuser: a firing that needs no agent."""
    admin = get_user_model().objects.filter(username="scheduler").first()
    admin = admin or get_user_model().objects.create_superuser("scheduler", password="pw-sched")
    return schedule_create(text="/hive:status", user=admin, every=seconds, name=name)


def firing_gaps(name: str) -> list[float]:
    """The seconds between one firing of schedule `name` and the next (each firing is
    one invocation, audited with source `schedule`)."""
    times = list(
        Invocation.objects.filter(source="schedule", schedule=name)
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )
    return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]


def firings(name: str) -> int:
    return Invocation.objects.filter(source="schedule", schedule=name).count()
