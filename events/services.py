"""Emit events: a row in the same transaction as the change, and after commit an
entry on the `hive:events` stream for live relays (the database stays the record)."""

import atexit
import json
import logging
import os
import queue
import threading

import redis
from django.db import transaction

from events.kinds import kind_check, subject_split
from events.models import Event
from hive_core.redis_client import redis_client

logger = logging.getLogger(__name__)
# One line per state change, from the publisher thread (off the engine's hot path).
# In JSON (HIVE_LOG_FORMAT) each carries the event's run, step, agent and attempt as
# fields of their own; silence it with HIVE_LOG_LEVEL=WARNING. A JSON line cost the
# publisher thread ~50 us here (two per step: ~1% of a chain step's 8.8 ms).
event_logger = logging.getLogger("hive.events")
# The event data worth a field of its own in a log line, when the event has it, and
# its name there (`message` is taken: LogRecord's own formatted text).
_LOGGED_DATA = {"step": "step", "agent": "agent", "attempt": "attempt", "tries": "tries",
                "message": "message_id", "error": "error", "from": "from", "to": "to"}  # fmt: skip

EVENTS_STREAM = "hive:events"
# The stream is a live feed, not the record: keep about this many entries.
EVENTS_STREAM_MAXLEN = 10_000
PUBLISH_BATCH = 500


def event_emit(*, kind: str, subject: str, data: dict | None = None) -> Event:
    event = Event.objects.create(kind=kind_check(kind), subject=subject, data=data or {})
    event_publish_on_commit(event)
    return event


def event_publish_on_commit(event: Event) -> None:
    """Put a stored event on the live stream once its transaction commits (at once
    outside a transaction), for events written by statements of their own."""
    transaction.on_commit(lambda: _publish(event))


def _publish(event: Event) -> None:
    fields = {
        "seq": event.pk,
        "kind": event.kind,
        "subject": event.subject,
        "data": json.dumps(event.data),
        "at": event.created_at.isoformat(),
    }
    _publisher.put((fields, event.data))


def _log(fields: dict, data: dict) -> None:
    """`step.running run=12 step=build agent=a1 attempt=1`, and in JSON the same as
    fields: grep or query one run's `run` across every process's log."""
    what, name = subject_split(fields["subject"])
    context = {"event": fields["kind"], "seq": fields["seq"]}
    if what in {"run", "agent", "workflow", "command"}:
        context[what] = int(name) if what == "run" and name.isdigit() else name
    for key, field in _LOGGED_DATA.items():
        if key in data and field not in context:
            context[field] = data[key]
    text = " ".join(f"{k}={v}" for k, v in context.items() if k not in {"event", "seq"})
    event_logger.info("%s %s", fields["kind"], text, extra=context)


class _Publisher:
    """Puts committed events on the stream from a thread of its own, many to a pipeline,
    so a step's claim and result never wait on Redis for them (two round trips of
    every step). Events a dying process had not yet published are in the table, where
    readers catch up by sequence number."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pid = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def put(self, item: tuple[dict, dict]) -> None:
        if self._pid != os.getpid():  # first use here, or a forked child: no thread yet
            with self._lock:
                if self._pid != os.getpid():
                    self._queue = queue.SimpleQueue()
                    self._thread = threading.Thread(
                        target=self._run, name="hive-events", daemon=True
                    )
                    self._thread.start()
                    atexit.register(self.close)
                    self._pid = os.getpid()
        self._queue.put(item)

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP and self._send([item]):
            pass

    def _send(self, batch: list[tuple[dict, dict]]) -> bool:
        """Publish `batch` and what else is queued (up to PUBLISH_BATCH); False once it
        has taken the stop mark."""
        going = True
        while len(batch) < PUBLISH_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                going = False
                break
            batch.append(item)
        if event_logger.isEnabledFor(logging.INFO):
            for fields, data in batch:
                _log(fields, data)
        try:
            pipe = redis_client().pipeline(transaction=False)
            for fields, _ in batch:
                pipe.xadd(EVENTS_STREAM, fields, maxlen=EVENTS_STREAM_MAXLEN, approximate=True)
            pipe.execute()
        except redis.RedisError:
            logger.warning("%d events not published to %s", len(batch), EVENTS_STREAM,
                           exc_info=True)  # fmt: skip
        return going

    def close(self) -> None:
        """At exit: let the thread publish what is left (a CLI command's last events)
        and end. A daemon thread still running is frozen where it stands while the
        interpreter tears down, maybe holding the Redis pool's lock, which the
        client's finalizer then waits for forever (a CLI command that never exited)."""
        if self._pid == os.getpid() and self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=EXIT_WAIT)


# Put on the queue at exit: the publisher thread ends once all before it is sent.
_STOP = object()
# How long an exiting process waits for its last events to be published.
EXIT_WAIT = 10

_publisher = _Publisher()
