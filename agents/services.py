"""Writes to the agent registry. Each one is safe to repeat."""

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from agents.models import Agent

Status = Agent.Status


@transaction.atomic
def agent_register(
    *,
    name: str,
    role: str,
    skills: list[str],
    concurrency: int,
    host: str,
    pid: int,
    version: str,
) -> Agent:
    """Register a starting agent process; one that comes back by name takes its row back."""
    now = timezone.now()
    agent, _ = Agent.objects.update_or_create(
        name=name,
        defaults={
            "role": role,
            "skills": skills,
            "concurrency": concurrency,
            "host": host,
            "pid": pid,
            "version": version,
            "status": Status.IDLE,
            "load": 0.0,
            "started_at": now,
            "last_heartbeat": now,
        },
    )
    return agent


def agent_heartbeat(*, name: str, pid: int) -> bool:
    """Record that the process `pid` of agent `name` is alive.

    Filtering on the pid means a process that was replaced under the same name
    cannot keep the row alive. An agent the reaper marked offline (a long pause)
    comes back idle. Returns False when the row belongs to another process.
    """
    agent = Agent.objects.filter(name=name, pid=pid)
    now = timezone.now()
    updated = agent.exclude(status=Status.OFFLINE).update(last_heartbeat=now)
    if not updated:
        updated = agent.update(last_heartbeat=now, status=Status.IDLE)
    return bool(updated)


def agent_mark_offline(*, name: str, pid: int) -> bool:
    """Mark agent `name` offline on clean shutdown, unless another process took the name."""
    return bool(Agent.objects.filter(name=name, pid=pid).update(status=Status.OFFLINE, load=0.0))


def agents_reap(*, timeout: int) -> list[str]:
    """Mark offline every agent silent for more than `timeout` seconds; return their names."""
    cutoff = timezone.now() - timedelta(seconds=timeout)
    silent = Agent.objects.exclude(status=Status.OFFLINE).filter(last_heartbeat__lt=cutoff)
    names = list(silent.values_list("name", flat=True))
    # A heartbeat may land between the read and the write: re-check the cutoff in
    # the UPDATE so an agent that just spoke is not marked offline.
    Agent.objects.filter(name__in=names, last_heartbeat__lt=cutoff).update(
        status=Status.OFFLINE, load=0.0
    )
    return names
