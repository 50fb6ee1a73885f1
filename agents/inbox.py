"""The inbox consumer: a thread in each agent process, beside its Celery worker.

It reads the agent's inbox and role streams with XREADGROUP (group `hive`,
consumer `AGENT:PID`) and hands what it reads to agents/delivery.py, which runs
each message's handler and acknowledges it only after the handler's effects and
the `handled` mark have committed together (exactly-once handling, batches,
failures and dead letters are described there). This module keeps the streams:

- A failed message stays pending; after HIVE_INBOX_CLAIM_IDLE ms a consumer (this
  one, a peer of the role, or the agent's next process) takes it over with
  XAUTOCLAIM, and delivers it again.
- A restarted agent takes over its previous processes' pending entries at once.
- Streams are trimmed below their oldest pending and undelivered entry (MINID),
  so trimming never drops a message not yet handled.
- Redis restarts and FLUSHALL: reads that fail with NOGROUP recreate the group
  (MKSTREAM); pending rows missing from the streams are sent again.
"""

import logging
import threading
import time
from datetime import timedelta

import redis
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from agents import mailbox
from agents.delivery import Delivery
from agents.mailbox import GROUP
from agents.models import Message

logger = logging.getLogger(__name__)

# Entries per XREADGROUP and per transaction. Measured on 2 cores with PostgreSQL
# (bench/messaging.py): 100 is where larger batches stopped paying.
BATCH = 100
# How long one XREADGROUP blocks; also how long `stop` may wait for the thread.
BLOCK_MS = 1000
# A consumer with nothing pending and silent this long is a dead process's; its
# name is removed from the group so XINFO stays readable.
DEAD_CONSUMER_IDLE_MS = 10 * 60 * 1000
# Every this many seconds (and on start and after a FLUSHALL) the inbox looks for
# pending rows missing from its streams: their sender could not reach Redis or died
# between its commit and its XADD, or Redis lost them. Rows younger than
# MISSING_AGE seconds may be on their way and are left alone.
MISSING_SWEEP_INTERVAL = 30
MISSING_AGE = 5


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class Inbox:
    """The inbox consumer of one agent process: `start()` once, `stop()` at shutdown."""

    def __init__(self, *, agent: str, role: str, pid: int):
        self.agent = agent
        self.consumer = f"{agent}:{pid}"
        self.streams = [mailbox.agent_stream(agent), mailbox.role_stream(role)]
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._needs_setup = True
        self._next_maintenance = 0.0
        self._next_sweep = time.monotonic() + MISSING_SWEEP_INTERVAL
        self._interval = min(settings.HIVE_INBOX_CLAIM_IDLE / 2000, 5.0)
        self.client = redis.Redis.from_url(
            settings.REDIS_URL,
            # Longer than the block: redis-py's 5 s default (or any shorter timeout)
            # breaks an idle blocking read (DESIGN.md, known pitfalls).
            socket_timeout=BLOCK_MS / 1000 + 10,
            decode_responses=True,
        )
        self.delivery = Delivery(client=self.client, agent=agent, consumer=self.consumer)

    # --- the thread -----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"inbox:{self.agent}", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def stop(self, timeout: float = BLOCK_MS / 1000 + 10) -> None:
        """Finish the batch in hand, then stop (within one block of XREADGROUP)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.1
        try:
            while not self._stopping.is_set():
                try:
                    self.poll()
                    backoff = 0.1
                except redis.ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        logger.exception("inbox %s: Redis refused a command", self.consumer)
                        self._stopping.wait(1)
                    # The stream or its group is gone (FLUSHALL, a Redis restart
                    # without persistence): create them again and resend what was lost.
                    self._needs_setup = True
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    logger.warning("inbox %s: Redis unreachable (%s); retrying", self.consumer, exc)
                    self._needs_setup = True
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                except DatabaseError:
                    # Entries read stay pending and are taken over after the idle time.
                    logger.exception("inbox %s: database error; retrying", self.consumer)
                    connection.close()
                    self._stopping.wait(1)
                except Exception:
                    logger.exception("inbox %s: unexpected error; retrying", self.consumer)
                    self._stopping.wait(1)
        finally:
            try:
                self.delivery.flush_acks(force=True)
            except Exception:
                logger.warning("inbox %s: acked_at not recorded", self.consumer, exc_info=True)
            connection.close()

    def poll(self) -> int:
        """One turn: set up if needed, maintenance when due, then read and handle a batch.
        Returns the number of entries read."""
        if self._needs_setup:
            self.setup()
        if time.monotonic() >= self._next_maintenance:
            self.maintain()
        response = self.client.xreadgroup(
            GROUP, self.consumer, dict.fromkeys(self.streams, ">"), count=BATCH, block=BLOCK_MS
        )
        read = 0
        for stream, entries in response or []:
            read += len(entries)
            self.delivery.deliver(stream, entries)
        if not read:
            self.delivery.flush_acks(force=True)
        return read

    # --- set-up and maintenance -----------------------------------------------------

    def setup(self) -> None:
        """Create the groups (and streams) that are missing, take over what this agent's
        earlier processes left pending, and send rows missing from the streams."""
        for stream in self.streams:
            try:
                # From the start of the stream: messages sent while no group existed
                # (the agent never ran, or Redis was wiped) are read, not skipped.
                self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        for stream in self.streams:
            self.take_over_predecessors(stream)
        self.resend_missing(age=0)
        self._needs_setup = False
        logger.info("inbox %s: consuming %s", self.consumer, ", ".join(self.streams))

    def maintain(self) -> None:
        close_old_connections()  # a restarted database must not silence the inbox
        for stream in self.streams:
            self.reclaim(stream)
            self.trim(stream)
        if time.monotonic() >= self._next_sweep:
            self.resend_missing()
        self._forget_dead_consumers()
        self.delivery.flush_acks(force=True)
        self._next_maintenance = time.monotonic() + self._interval

    def take_over_predecessors(self, stream: str) -> int:
        """Claim at once what earlier processes of this agent left pending: they are
        dead (this one has their name), so there is no idle time to wait for."""
        taken = 0
        prefix = f"{self.agent}:"
        for consumer in self.client.xpending(stream, GROUP)["consumers"]:
            name = consumer["name"]
            if not name.startswith(prefix) or name == self.consumer:
                continue
            while rows := self.client.xpending_range(
                stream, GROUP, "-", "+", BATCH, consumername=name
            ):
                for row in rows:
                    entry_id = row["message_id"]
                    entries = self.client.xclaim(stream, GROUP, self.consumer, 0, [entry_id])
                    # XCLAIM counts a delivery, as XAUTOCLAIM does.
                    self.delivery.deliver_claimed(stream, entry_id, entries,
                                          count=row["times_delivered"] + 1)  # fmt: skip
                    taken += 1
            # Only now, with nothing pending left: deleting a consumer drops its entries.
            self.client.xgroup_delconsumer(stream, GROUP, name)
        return taken

    def reclaim(self, stream: str, *, min_idle: int | None = None) -> int:
        """Take over entries idle longer than HIVE_INBOX_CLAIM_IDLE: a dead consumer's,
        or this one's whose handler failed (that is how a failure is retried)."""
        min_idle = settings.HIVE_INBOX_CLAIM_IDLE if min_idle is None else min_idle
        cursor, taken = "0-0", 0
        for _ in range(BATCH):  # a bounded pass: reading new messages must go on
            cursor, entries = self.client.xautoclaim(
                stream, GROUP, self.consumer, min_idle, cursor, count=1
            )[:2]
            if entries and entries[0][0] is not None:
                entry_id = entries[0][0]
                (row,) = self.client.xpending_range(stream, GROUP, entry_id, entry_id, 1)
                self.delivery.deliver_claimed(
                    stream, entry_id, entries, count=row["times_delivered"]
                )
                taken += 1
            if cursor == "0-0":
                break
        return taken

    def trim(self, stream: str) -> None:
        """Drop entries every one of which is acknowledged: those below both the
        oldest pending entry and the group's last delivered one.

        XTRIM MINID rather than XADD MAXLEN: a length cap drops the oldest entries
        whatever their state, so an agent down for a while would lose messages that
        wait for it; MINID below the oldest pending entry never does.
        """
        groups = {g["name"]: g for g in self.client.xinfo_groups(stream)}
        group = groups.get(GROUP)
        if group is None:
            return
        floor = group["last-delivered-id"]
        if group["pending"]:
            oldest = self.client.xpending(stream, GROUP)["min"]
            if oldest and _id_key(oldest) < _id_key(floor):
                floor = oldest
        if floor and floor != "0-0":
            self.client.xtrim(stream, minid=floor, approximate=False)

    def _forget_dead_consumers(self) -> None:
        for stream in self.streams:
            for consumer in self.client.xinfo_consumers(stream, GROUP):
                if (
                    consumer["name"] != self.consumer
                    and consumer["pending"] == 0
                    and consumer["idle"] > DEAD_CONSUMER_IDLE_MS
                ):
                    self.client.xgroup_delconsumer(stream, GROUP, consumer["name"])

    def resend_missing(self, *, age: float = MISSING_AGE) -> int:
        """Send again the pending rows of this inbox's streams that are not in them.

        A stream holds exactly the entries not yet acknowledged, and a few handled
        ones not yet trimmed, so one XRANGE per stream tells which pending rows Redis
        does not have: their sender could not reach it, or died between its commit
        and its XADD, or Redis lost them (a FLUSHALL, a restart without persistence).
        Sending one twice is harmless: the claim lets only one delivery handle it.
        """
        self._next_sweep = time.monotonic() + MISSING_SWEEP_INTERVAL
        cutoff = timezone.now() - timedelta(seconds=age)
        rows = list(
            Message.objects.filter(
                stream__in=self.streams, state=Message.State.PENDING, created_at__lte=cutoff
            ).order_by("id")
        )
        if not rows:
            return 0
        present = set()
        for stream in self.streams:
            present.update(int(f["mid"]) for _, f in self.client.xrange(stream) if f.get("mid"))
        missing = [row for row in rows if row.pk not in present]
        if missing:
            logger.warning("inbox %s: sending %d messages missing from its streams",
                           self.consumer, len(missing))  # fmt: skip
            mailbox.publish(missing)
        return len(missing)
