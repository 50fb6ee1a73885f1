"""Handing steps to Celery: the one place a step leaves the database for a queue.

The engine routes each step it dispatches to a queue (`Router`, `step_queue`)
inside its transaction and calls `send` after commit. Tests that check the DAG's
rules without agent processes replace the `transport`
(tests/coordination/harness.py); everything before it is the same code. A task that
finished a step may run the next one itself (`Continuation`).
"""

import time
import uuid
from dataclasses import dataclass

from celery import current_app
from django.conf import settings
from django.utils import timezone

from agents.routing import RoutingError, agent_accepts_work, route
from coordination.models import StepRun

# The task every step is sent as (coordination/tasks.py), by name: the task's module
# imports the services that call this one.
EXECUTE_STEP_TASK = "coordination.execute_step_task"

# Steps are published in Redis pipelines of this many messages: a foreach sends
# thousands at once, and the first agents start after the first pipeline rather
# than after the last message.
SEND_BATCH = 100
_queues_bound: dict[str, float] = {}


# Priorities travel as the Redis transport's own (kombu): a queue is one Redis list
# per priority, and an agent's BRPOP lists every queue's higher priority first, so a
# ready step of higher priority is taken first from the same queues, with no queues
# per band to route to or to consume. kombu's Redis priorities run the other way (0
# is taken first), and it is given all ten (CELERY_BROKER_TRANSPORT_OPTIONS).
PRIORITY_STEPS = settings.CELERY_BROKER_TRANSPORT_OPTIONS["priority_steps"]
PRIORITY_SEP = settings.CELERY_BROKER_TRANSPORT_OPTIONS["sep"]


def broker_priority(priority: int) -> int:
    """Hive's 0-9 (9 goes first) as the Redis transport's (0 goes first)."""
    return 9 - priority


def queue_keys(queue: str) -> list[str]:
    """The Redis lists that hold `queue`'s messages, one per priority."""
    return [queue if not pri else f"{queue}{PRIORITY_SEP}{pri}" for pri in PRIORITY_STEPS]


def queue_lengths(client, queues: list[str]) -> dict[str, int]:
    """How many messages wait on each of `queues`, every priority counted."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for key in queue_keys(queue):
            pipe.llen(key)
    lengths = iter(pipe.execute())
    return {queue: sum(next(lengths) for _ in PRIORITY_STEPS) for queue in queues}


@dataclass(frozen=True)
class Outgoing:
    """A step to send: its row, try and Celery task id, the queue, its time limit, its
    priority, and the rates its claim counts it against ([key, limit, per] each)."""

    step_run_id: int
    attempt: int
    task_id: str
    queue: str
    timeout: int | None
    priority: int = 0
    rates: tuple = ()


def _queue_bind(name: str, channel) -> None:
    """Bind the queue again if this process has not for a second.

    kombu remembers what it declared, but the bindings live in Redis, and after
    a FLUSHALL a message published to an unbound exchange is routed nowhere (the
    reaper sends it again once HIVE_DISPATCH_TIMEOUT has passed). Binding on
    every send cost a chain step a Redis round trip.
    """
    now = time.monotonic()
    if now - _queues_bound.get(name, -1.0) >= 1:
        current_app.amqp.queues[name].bind(channel).declare()
        _queues_bound[name] = now


class CeleryTransport:
    """Steps as `execute_step_task` messages on their queues; cancellation as a revoke."""

    def send(self, outgoing: list[Outgoing]) -> None:
        app = current_app
        # One producer for the whole batch, its messages in pipelines.
        with app.producer_or_acquire() as producer, producer.batch(max_size=SEND_BATCH):
            for name in {out.queue for out in outgoing}:
                _queue_bind(name, producer.channel)
            for out in outgoing:
                app.send_task(
                    EXECUTE_STEP_TASK,
                    (out.step_run_id, out.attempt, *([out.rates] if out.rates else [])),
                    queue=out.queue,
                    priority=broker_priority(out.priority),
                    task_id=out.task_id,
                    producer=producer,
                    soft_time_limit=out.timeout,
                    # The hard limit backs up a skill that ignores the soft one.
                    time_limit=(
                        out.timeout + settings.HIVE_HARD_TIMEOUT_GRACE if out.timeout else None
                    ),
                    # As the task's own apply_async would say: its result is not stored.
                    ignore_result=True,
                )

    def revoke(self, task_ids: list[str]) -> None:
        current_app.control.revoke(task_ids, terminate=True, signal="SIGTERM")


transport = CeleryTransport()


def send(outgoing: list[Outgoing]) -> None:
    if outgoing:
        transport.send(outgoing)


def revoke(task_ids: list[str]) -> None:
    if task_ids:
        transport.revoke(task_ids)


# --- routing ------------------------------------------------------------------------


class Router:
    """Where the steps of one engine transaction go: each step's queue, or why no agent
    takes it now. agents.routing is asked once per (skill, agent, role): a foreach's
    items all go the same way."""

    def __init__(self):
        self._found: dict[tuple, str | RoutingError] = {}

    def route(self, step: StepRun, spec: dict) -> str | RoutingError:
        key = (step.skill, spec["agent"], spec["role"])
        if key not in self._found:
            try:
                self._found[key] = route(skill=step.skill, agent=spec["agent"], role=spec["role"])
            except RoutingError as exc:
                self._found[key] = exc
        return self._found[key]


def step_queue(step: StepRun, *, queue: str) -> None:
    """Make `step` a new try on `queue`: a new attempt and Celery task id. The engine
    writes the row and sends the message after commit."""
    step.state, step.queue, step.waiting_reason = StepRun.State.QUEUED, queue, ""
    step.attempt += 1
    step.task_id, step.next_attempt_at = str(uuid.uuid4()), None
    step.queued_at = timezone.now()


# --- the chain ----------------------------------------------------------------------

# A task goes on with steps it dispatched for at most this long, then sends them
# through the broker: a drain, a warm shutdown or other work on its queues waits no
# longer than that (and the step already started) for a chain to let go.
KEEP_FOR = 1.0


class Continuation:
    """Lets the task that finished a step run the next one itself.

    A chain's step would otherwise go through Redis to a pool process that claims
    it after the hop: about half of each chain step's time. The engine keeps one
    step it dispatches for the task when it has no timeout (the task's time limits
    were set for the step it was sent with), is routed to one of the `queues` of
    this agent, and the agent takes work. The kept step is queued, claimed and run
    as any other; it carries the task's id, so revoking the task (a cancel) stops
    it, and the agent renews the leases of its tasks' steps. Should the process die
    before it claims the step, the reaper sends it as a lost message.
    """

    def __init__(self, *, agent: str, queues: list[str], task_id: str):
        self.agent, self.queues, self.task_id = agent, frozenset(queues), task_id
        self.until = time.monotonic() + KEEP_FOR
        self._step: tuple[StepRun, tuple] | None = None

    def takes(self, step: StepRun, timeout: float | None) -> bool:
        return (
            timeout is None
            and step.queue in self.queues
            and time.monotonic() < self.until
            and agent_accepts_work(self.agent)
        )

    def keep(self, step: StepRun, *, rates: tuple) -> None:
        """After commit: the step is the task's to run next (`rates`: those its claim
        counts it against)."""
        self._step = (step, rates)

    def take(self) -> tuple[StepRun, tuple] | None:
        kept, self._step = self._step, None
        return kept
