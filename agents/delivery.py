"""Handling what the inbox reads (agents/inbox.py): each message's handler runs, and
the message is acknowledged only after the handler's effects and its `handled` mark
have committed together.

Delivery is at least once; handling is exactly once because the mark is a
conditional update of the message's row (agents.services.messages_claim): a
redelivered message already handled is acknowledged and nothing more.

- A batch (up to inbox.BATCH entries) is handled in one transaction with one claim
  and acknowledged with one XACK. If a handler fails, the batch is rolled back and
  the others run again without the failing one.
- A failed message stays pending, for the inbox to take over again after
  HIVE_INBOX_CLAIM_IDLE ms. On its HIVE_MAX_DELIVERIES-th failed delivery it goes to
  the dead-letter stream with its error. One delivered more often than that without
  ever being acknowledged (it kills its process) is dead-lettered unrun.
- Entries taken over run one at a time, each claimed just before it runs, so a
  message whose handler kills the process is isolated from its batch.
"""

import json
import logging
import time
import traceback

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

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

# acked_at (and the `message.handled` event summing up the batches) is written when
# the inbox is idle, and at most this often (seconds) while it is busy: each write
# is a commit, and every 0.5 s it showed in the request latency's tail.
ACK_FLUSH_INTERVAL = 2.0


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


class Delivery:
    """Runs the handlers of one agent process's inbox entries and settles each entry:
    acknowledged, left to be tried again, or dead-lettered."""

    def __init__(self, *, client: redis.Redis, agent: str, consumer: str):
        self.client = client
        self.agent = agent
        self.consumer = consumer
        self.context = HandlerContext(agent=agent, consumer=consumer)
        self._acked: list[tuple[list[int], object]] = []
        self._acked_at = time.monotonic()

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

    def deliver_claimed(self, stream: str, entry_id: str, entries: list, *, count: int) -> None:
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
        self.flush_acks()

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

    def flush_acks(self, *, force: bool = False) -> None:
        if not self._acked:
            return
        if not force and time.monotonic() - self._acked_at < ACK_FLUSH_INTERVAL:
            return
        acks, self._acked = self._acked, []
        self._acked_at = time.monotonic()
        messages_acked(agent=self.agent, acks=[(ids, at) for ids, at in acks if ids])
