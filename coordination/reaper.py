"""The reaper: the leading coordinator's pass that recovers what Redis or a dead agent
lost, and sends what is due (coordination.leadership runs it every HIVE_REAPER_INTERVAL)."""

import functools
import logging
from datetime import timedelta

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import CharField, Q, Value
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from agents.models import Agent
from agents.services import agents_reap
from coordination import flow
from coordination.dispatch import queue_lengths
from coordination.engine import (
    Engine,
    capacity_wake,
    child_end,
    group_complete,
    run_cancel_with_parent,
    run_capacity_wake,
)
from coordination.models import Run, StepRun
from hive_core.redis_client import redis_client

logger = logging.getLogger(__name__)

# The reaper adds what it recovered to this hash (`reaper_counts_add`), so the count
# survives the coordinator's restarts; a FLUSHALL resets it, which Prometheus's
# rate() reads as a counter reset (ops/metrics.py reports it).
REAPER_COUNTS_KEY = "hive:metrics:reaper"


def reap_pass() -> dict:
    """The leader's pass: mark silent agents offline, then recover their steps and
    anything Redis lost, and send what is due."""
    offline = agents_reap(timeout=settings.HIVE_AGENT_TIMEOUT)
    counts = {"expired": runs_expire(), **steps_reap(queue_lengths=_queue_lengths)}
    reaper_counts_add(counts)
    if offline or any(counts.values()):
        logger.info("reaper: offline %s, steps %s", offline, counts)
    return {"offline": offline, **counts}


def _queue_lengths(queues: list[str]) -> dict[str, int]:
    return queue_lengths(redis_client(), queues)


def steps_reap(*, queue_lengths) -> dict[str, int]:
    """Recover what Redis or a dead agent lost, and send what is due.

    - running steps whose agent is offline or whose lease ran out: tried again
      (a step that keeps losing its worker fails after HIVE_STEP_MAX_LOST tries);
    - queued steps unclaimed for HIVE_DISPATCH_TIMEOUT whose queue is empty
      (`queue_lengths(queues)` asks Redis): the message was lost, send it again;
    - retries whose backoff has passed, steps whose rate slot has come, and steps
      waiting for an agent: sent;
    - steps sleeping or waiting for a signal whose time has come: ended (woken);
    - the lines of concurrency keys (steps and runs) with room: moved on (a slot is
      handed on when it frees; this catches one whose process died first);
    - foreach groups whose items all finished but were not completed: completed;
    - sub-workflows that ended unseen by their parent's step, or outlived their
      parent's run (the process died between the two transactions): followed.
    """
    now = timezone.now()
    offline = Agent.objects.filter(status=Agent.Status.OFFLINE).values("name")
    lost = StepRun.objects.filter(state=StepRun.State.RUNNING).filter(
        Q(agent__in=offline) | Q(lease_until__lt=now)
    )
    stale_cutoff = now - timedelta(seconds=settings.HIVE_DISPATCH_TIMEOUT)
    stale = list(StepRun.objects.filter(state=StepRun.State.QUEUED, queued_at__lt=stale_cutoff))
    lengths = queue_lengths(sorted({s.queue for s in stale})) if stale else {}
    unsent = [s for s in stale if not lengths.get(s.queue)]
    due = StepRun.objects.filter(state=StepRun.State.PENDING, pending_deps=0).filter(
        Q(next_attempt_at__lte=now) | Q(waiting_reason__startswith=flow.WAIT_AGENT)
    )
    # A foreach group whose last item's process died before completing it.
    for group_id in StepRun.objects.filter(
        state=StepRun.State.RUNNING, pending_deps=0, agent=""
    ).values_list("pk", flat=True):
        group_complete(group_id=group_id)
    woken = StepRun.objects.filter(state=StepRun.State.WAITING, next_attempt_at__lte=now)
    counts = {"lost": 0, "resent": 0, "due": 0, "woken": 0, "lines": 0}
    work = [("lost", s) for s in lost] + [("resent", s) for s in unsent] + [("due", s) for s in due]
    work += [("woken", s) for s in woken]
    for kind, found in work:
        try:
            if _step_recover(found, kind):
                counts[kind] += 1
        except Exception:
            # One step the reaper cannot handle must not stop it recovering the rest.
            logger.exception("reaper: could not handle step %s (%s)", found.pk, kind)
    _subworkflows_follow()
    lines = StepRun.objects.filter(
        state=StepRun.State.PENDING, waiting_reason__startswith=flow.WAIT_CAPACITY
    )
    run_lines = Run.objects.filter(state=Run.State.PENDING).exclude(concurrency_key="")
    for wake, keys in (
        (capacity_wake, lines.values_list("concurrency_key", flat=True).distinct()),
        (run_capacity_wake, run_lines.values_list("concurrency_key", flat=True).distinct()),
    ):
        for key in sorted(set(keys)):
            try:
                counts["lines"] += wake(key)
            except Exception:
                logger.exception("reaper: could not move the line of %r", key)
    return counts


def _subworkflows_follow() -> None:
    ended = Run.objects.filter(
        state__in=Run.TERMINAL,
        parent_step__state=StepRun.State.WAITING,
        parent_step__waiting_reason=Concat(Value("waiting for run "), Cast("pk", CharField())),
    )
    orphans = Run.objects.exclude(state__in=Run.TERMINAL).filter(
        parent_step__run__state__in=Run.TERMINAL
    )
    work = [functools.partial(child_end, run_id=pk) for pk in ended.values_list("pk", flat=True)]
    work += [
        functools.partial(run_cancel_with_parent, run_id=pk, parent=parent)
        for pk, parent in orphans.values_list("pk", "parent_step__run")
    ]
    for follow in work:
        try:
            follow()
        except Exception:
            logger.exception("reaper: could not follow a sub-workflow (%s)", follow.keywords)


def runs_expire() -> int:
    """Cancel the open runs past their deadline ('deadline exceeded'), their running
    steps stopped as a cancel stops them; how many."""
    expired = 0
    late = Run.objects.filter(deadline__lt=timezone.now()).exclude(state__in=Run.TERMINAL)
    for run_id in late.values_list("pk", flat=True):
        try:
            with transaction.atomic():
                engine = Engine(run_id)
                if engine.run.state in Run.TERMINAL:
                    continue
                engine.finish_run(Run.State.CANCELLED, "deadline exceeded")
            expired += 1
        except Exception:
            logger.exception("reaper: could not end run %s past its deadline", run_id)
    return expired


def _step_recover(found: StepRun, kind: str) -> bool:
    """Try a lost step again, or send a step again; False if it moved on meanwhile."""
    with transaction.atomic():
        engine = Engine(found.run_id)
        step = engine.step(found.pk)
        if (step.state, step.attempt) != (found.state, found.attempt):
            return False  # it moved on while we looked
        if kind == "lost":
            engine.lost(step)
        elif kind == "woken":
            engine.wake(step)
        else:
            engine.dispatch(step)
        engine.settle()
    return True


def reaper_counts_add(counts: dict[str, int]) -> None:
    """Add what this pass recovered to the counters /metrics reports (in Redis: the
    coordinator restarts, and /metrics is served by another process)."""
    done = {reason: n for reason, n in counts.items() if n}
    if not done:
        return
    try:
        pipe = redis_client().pipeline(transaction=False)
        for reason, n in done.items():
            pipe.hincrby(REAPER_COUNTS_KEY, reason, n)
        pipe.execute()
    except redis.RedisError as exc:
        # The recovery itself is done; only its count is lost.
        logger.warning("reaper: counts not recorded: %s", exc)
