"""Handing steps to Celery: the one place a step leaves the database for a queue.

The engine decides what to send inside its transaction and calls `send` after
commit. Tests that check the DAG's rules without agent processes replace the
`transport` (tests/coordination/harness.py); everything before it is the same code.
"""

import time
from dataclasses import dataclass

from celery import current_app
from django.conf import settings

# Steps are published in Redis pipelines of this many messages: a foreach sends
# thousands at once, and the first agents start after the first pipeline rather
# than after the last message.
SEND_BATCH = 100
_queues_bound: dict[str, float] = {}


@dataclass(frozen=True)
class Outgoing:
    """A step to send: its row, try and Celery task id, the queue, its time limit."""

    step_run_id: int
    attempt: int
    task_id: str
    queue: str
    timeout: int | None


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
        from coordination.tasks import execute_step_task

        app = current_app
        # One producer for the whole batch, its messages in pipelines.
        with app.producer_or_acquire() as producer, producer.batch(max_size=SEND_BATCH):
            for name in {out.queue for out in outgoing}:
                _queue_bind(name, producer.channel)
            for out in outgoing:
                execute_step_task.apply_async(
                    (out.step_run_id, out.attempt),
                    queue=out.queue,
                    task_id=out.task_id,
                    producer=producer,
                    soft_time_limit=out.timeout,
                    # The hard limit backs up a skill that ignores the soft one.
                    time_limit=(
                        out.timeout + settings.HIVE_HARD_TIMEOUT_GRACE if out.timeout else None
                    ),
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
