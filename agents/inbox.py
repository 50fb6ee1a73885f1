"""The inbox consumer: a thread in each agent process, beside its Celery worker.

It reads the agent's inbox and role streams with XREADGROUP (group `hive`,
consumer `AGENT:PID`), runs each message's handler, and acknowledges it only
after the handler's effects and the `handled` mark have committed together.

Delivery is at least once; handling is exactly once because the mark is a
conditional update of the message's row (agents.services.messages_claim): a
redelivered message already handled is acknowledged and nothing more.

- A batch (up to BATCH entries) is handled in one transaction with one claim
  and acknowledged with one XACK. If a handler fails, the batch is rolled back
  and the others run again without the failing one.
- A failed message stays pending; after HIVE_INBOX_CLAIM_IDLE ms a consumer (this
  one, a peer of the role, or the agent's next process) takes it over with
  XAUTOCLAIM. On its HIVE_MAX_DELIVERIES-th failed delivery it goes to the
  dead-letter stream with its error. One delivered more often than that without
  ever being acknowledged (it kills its process) is dead-lettered unrun.
- A restarted agent takes over its previous processes' pending entries at once.
  Entries taken over run one at a time, each claimed just before it runs, so a
  message whose handler kills the process is isolated from its batch.
- Streams are trimmed below their oldest pending and undelivered entry (MINID),
  so trimming never drops a message not yet handled.
- Redis restarts and FLUSHALL: reads that fail with NOGROUP recreate the group
  (MKSTREAM); pending rows missing from the streams are sent again.
"""

import json
import logging
import threading
import time
import traceback
from datetime import timedelta

import redis
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.utils import timezone

from agents import mailbox
from agents.handlers import Envelope, HandlerContext, HandlerError, handler_get
from agents.mailbox import DEAD_STREAM, DEAD_STREAM_MAXLEN, GROUP, REPLY_TTL, reply_fields
from agents.models import Message
from agents.services import (
    message_bury,
    message_fail,
    message_result,
    messages_acked,
    messages_claim,
)

logger = logging.getLogger(__name__)

# Entries per XREADGROUP and per transaction. Measured on 2 cores with PostgreSQL
# (bench/messaging.py): 100 is where larger batches stopped paying.
BATCH = 100
# How long one XREADGROUP blocks; also how long `stop` may wait for the thread.
BLOCK_MS = 1000
# acked_at (and the `message.handled` event summing up the batches) is written when
# the inbox is idle, and at most this often (seconds) while it is busy: each write
# is a commit, and every 0.5 s it showed in the request latency's tail.
ACK_FLUSH_INTERVAL = 2.0
# A consumer with nothing pending and silent this long is a dead process's; its
# name is removed from the group so XINFO stays readable.
DEAD_CONSUMER_IDLE_MS = 10 * 60 * 1000
# Every this many seconds (and on start and after a FLUSHALL) the inbox looks for
# pending rows missing from its streams: their sender could not reach Redis or died
# between its commit and its XADD, or Redis lost them. Rows younger than
# MISSING_AGE seconds may be on their way and are left alone.
MISSING_SWEEP_INTERVAL = 30
MISSING_AGE = 5


class _HandlerFailed(Exception):
    def __init__(self, envelope: Envelope, error: str, *, retryable: bool):
        super().__init__(error)
        self.envelope = envelope
        self.error = error
        self.retryable = retryable


def _loads_or_raw(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class Inbox:
    """The inbox consumer of one agent process: `start()` once, `stop()` at shutdown."""

    def __init__(self, *, agent: str, role: str, pid: int):
        self.agent = agent
        self.consumer = f"{agent}:{pid}"
        self.streams = [mailbox.agent_stream(agent), mailbox.role_stream(role)]
        self.context = HandlerContext(agent=agent, consumer=self.consumer)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._acked: list[tuple[list[int], object]] = []
        self._acked_at = time.monotonic()
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
                self._flush_acks(force=True)
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
            self.deliver(stream, entries)
        if not read:
            self._flush_acks(force=True)
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
        self._flush_acks(force=True)
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
                    self._deliver_claimed(stream, entry_id, entries,
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
                self._deliver_claimed(stream, entry_id, entries, count=row["times_delivered"])
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

    # --- handling -------------------------------------------------------------------

    def deliver(self, stream: str, entries: list, deliveries: dict[str, int] | None = None) -> None:
        """Handle entries read from `stream` (first deliveries unless counts are given)."""
        envelopes, malformed = [], []
        for entry_id, fields in entries:
            try:
                envelopes.append(self._envelope(stream, entry_id, fields, deliveries))
            except (KeyError, ValueError, TypeError) as exc:
                malformed.append((entry_id, fields, f"malformed entry: {exc!r}"))
        for entry_id, fields, error in malformed:
            self._dead_letter_entry(stream, entry_id, fields, error=error, deliveries=1)
        if envelopes:
            self._handle(stream, envelopes)

    def _deliver_claimed(self, stream: str, entry_id: str, entries: list, *, count: int) -> None:
        """Handle one entry taken over (its `count`-th delivery), or dead-letter it unrun
        when it was delivered HIVE_MAX_DELIVERIES times already without an ack.

        Taken over one at a time, each claimed just before it runs: a delivery is
        counted only for the entry about to run, so when a message's handler kills
        the process, the messages read in its batch do not count deliveries with it
        and are not dead-lettered beside it.
        """
        if not entries or entries[0][0] is None:
            # Deleted from the stream while pending (XDEL): nothing left to handle.
            self.client.xack(stream, GROUP, entry_id)
            return
        fields = entries[0][1]
        if count <= settings.HIVE_MAX_DELIVERIES:
            self.deliver(stream, entries, {entry_id: count})
            return
        mid = fields.get("mid", "")
        last = mid.isdigit() and (
            Message.objects.filter(pk=int(mid)).values_list("error", flat=True).first()
        )
        error = last or (
            f"delivered {count - 1} times without being acknowledged "
            "(did its handler kill the agent?)"
        )
        self._dead_letter_entry(stream, entry_id, fields, error=error, deliveries=count - 1)

    def _envelope(self, stream, entry_id, fields, deliveries) -> Envelope:
        return Envelope(
            id=int(fields["mid"]),
            stream=stream,
            stream_id=entry_id,
            sender=fields.get("from", ""),
            recipient=fields.get("to", ""),
            kind=fields["kind"],
            payload=json.loads(fields["payload"]),
            correlation_id=fields.get("cid", ""),
            reply_to=fields.get("reply", ""),
            deliveries=(deliveries or {}).get(entry_id, 1),
        )

    def _handle(self, stream: str, envelopes: list[Envelope]) -> None:
        try:
            with transaction.atomic():
                claimed, results = self._run_handlers(stream, envelopes)
        except _HandlerFailed as failed:
            # The batch is rolled back. The failing message has had its try for this
            # delivery; the others run again without it (their effects went with the
            # rollback), so each delivery is one try of each handler, and a poison
            # message costs its batch one rollback.
            self._failed(failed)
            rest = [e for e in envelopes if e is not failed.envelope]
            if rest:
                self._handle(stream, rest)
            return
        self._acknowledge(stream, envelopes, claimed, results)

    def _run_handlers(self, stream, envelopes) -> tuple[set[int], dict[int, str]]:
        claimed = messages_claim(
            entries={e.id: (e.stream_id, e.deliveries) for e in envelopes},
            consumer=self.consumer,
        )
        replies: dict[int, str] = {}
        for envelope in envelopes:
            if envelope.id not in claimed:
                continue
            found = handler_get(envelope.kind)
            if found is None:
                raise _HandlerFailed(
                    envelope,
                    f"agent {self.agent!r} has no handler for messages of kind {envelope.kind!r}",
                    retryable=False,
                )
            try:
                result = found.func(self.context, envelope)
            except HandlerError as exc:
                raise _HandlerFailed(envelope, str(exc), retryable=exc.retryable) from exc
            except Exception as exc:
                logger.info("inbox %s: handler of %s failed:\n%s", self.consumer, envelope.kind,
                            traceback.format_exc())  # fmt: skip
                raise _HandlerFailed(
                    envelope, f"{type(exc).__name__}: {exc}", retryable=True
                ) from exc
            if envelope.reply_to:
                try:
                    replies[envelope.id] = json.dumps(result, separators=(",", ":"))
                except (TypeError, ValueError) as exc:
                    raise _HandlerFailed(
                        envelope, f"reply is not JSON: {exc}", retryable=False
                    ) from exc
                message_result(message_id=envelope.id, result=result)
        return claimed, replies

    def _acknowledge(self, stream, envelopes, claimed: set[int], replies: dict[int, str]) -> None:
        """After the commit: one XACK for the batch, and the replies to requests."""
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(stream, GROUP, *[e.stream_id for e in envelopes])
        for envelope in envelopes:
            if envelope.id in replies:
                self._reply(pipe, envelope, ok=True, payload=replies[envelope.id])
        pipe.execute()
        self._acked.append(([e.id for e in envelopes if e.id in claimed], timezone.now()))
        duplicates = [e for e in envelopes if e.id not in claimed]
        if duplicates:
            self._duplicates(duplicates)
        self._flush_acks()

    def _duplicates(self, envelopes: list[Envelope]) -> None:
        """Redelivered messages that were not pending: only acknowledged. One that was
        marked dead but whose dead-letter entry may not have been written (the process
        died in between) is dead-lettered again: better twice there than never."""
        dead = dict(
            Message.objects.filter(
                pk__in=[e.id for e in envelopes], state=Message.State.DEAD
            ).values_list("id", "error")
        )
        for envelope in envelopes:
            if envelope.id in dead:
                self._dead_letter_redis(envelope, error=dead[envelope.id])

    def _reply(self, pipe, envelope: Envelope, *, ok: bool, payload: str = "", error: str = ""):
        fields = reply_fields(message_id=envelope.id, correlation_id=envelope.correlation_id,
                              sender=self.agent, ok=ok, payload=payload, error=error)  # fmt: skip
        pipe.xadd(envelope.reply_to, fields)
        pipe.expire(envelope.reply_to, REPLY_TTL)

    def _failed(self, failed: _HandlerFailed) -> None:
        envelope = failed.envelope
        if not failed.retryable or envelope.deliveries >= settings.HIVE_MAX_DELIVERIES:
            if message_bury(
                message_id=envelope.id,
                stream_id=envelope.stream_id,
                agent=self.agent,
                consumer=self.consumer,
                error=failed.error,
                deliveries=envelope.deliveries,
            ):
                self._dead_letter_redis(envelope, error=failed.error)
            else:
                self.client.xack(envelope.stream, GROUP, envelope.stream_id)
            return
        # Left pending and unacknowledged: taken over again after the idle time.
        message_fail(message_id=envelope.id, stream_id=envelope.stream_id, error=failed.error,
                     deliveries=envelope.deliveries)  # fmt: skip

    def _dead_letter_redis(self, envelope: Envelope, *, error: str) -> None:
        """The dead-letter entry and the acknowledgement, atomically (MULTI)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(
            DEAD_STREAM,
            {
                "stream": envelope.stream,
                "id": envelope.stream_id,
                "mid": envelope.id,
                "kind": envelope.kind,
                "from": envelope.sender,
                "to": envelope.recipient,
                "cid": envelope.correlation_id,
                "payload": json.dumps(envelope.payload, separators=(",", ":")),
                "error": error,
                "deliveries": envelope.deliveries,
                "consumer": self.consumer,
            },
            maxlen=DEAD_STREAM_MAXLEN,
            approximate=True,
        )
        pipe.xack(envelope.stream, GROUP, envelope.stream_id)
        pipe.execute()
        if envelope.reply_to:
            # The requester learns of the failure now rather than at its timeout.
            pipe = self.client.pipeline(transaction=False)
            self._reply(pipe, envelope, ok=False, error=error)
            pipe.execute()

    def _dead_letter_entry(self, stream, entry_id, fields, *, error: str, deliveries: int) -> None:
        """Dead-letter an entry not (yet) run: malformed, or delivered too often."""
        mid = fields.get("mid", "")
        envelope = Envelope(
            id=int(mid) if str(mid).isdigit() else 0,
            stream=stream,
            stream_id=entry_id,
            sender=fields.get("from", ""),
            recipient=fields.get("to", ""),
            kind=fields.get("kind", ""),
            payload=_loads_or_raw(fields.get("payload", "")),
            correlation_id=fields.get("cid", ""),
            reply_to=fields.get("reply", ""),
            deliveries=deliveries,
        )
        if envelope.id:
            message_bury(message_id=envelope.id, stream_id=entry_id, agent=self.agent,
                         consumer=self.consumer, error=error, deliveries=deliveries)  # fmt: skip
        self._dead_letter_redis(envelope, error=error)

    def _flush_acks(self, *, force: bool = False) -> None:
        if not self._acked:
            return
        if not force and time.monotonic() - self._acked_at < ACK_FLUSH_INTERVAL:
            return
        acks, self._acked = self._acked, []
        self._acked_at = time.monotonic()
        messages_acked(agent=self.agent, acks=[(ids, at) for ids, at in acks if ids])
