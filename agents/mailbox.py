"""Hive's message bus: agent inboxes on Redis Streams, the database as the record.

Streams: `hive:inbox:agent:<name>` per agent and `hive:inbox:role:<role>` per role,
each with one consumer group (`hive`) whose consumers are agent processes
(`AGENT:PID`, agents/inbox.py). A message to an agent goes to its inbox and waits
there while the agent is down; a message to a role goes to the role's stream and is
handled by one agent of the role; a broadcast puts a copy in the inbox of each
online agent of the role.

Sending writes the Message rows first and adds the stream entries after the
commit, so a consumer never reads an entry whose row it cannot see; the entry
carries the row's id, and the consumer's conditional update of that row
(`state='pending'` -> `'handled'`, which also records the entry's stream id) is
what makes handling exactly-once. A sender writes once (the INSERT) and makes one
pipelined round trip to Redis per batch. If Redis is unreachable at that moment,
or the sender dies between its commit and the XADD, the rows stay pending; the
recipient's inbox finds them missing from its stream and sends them (inbox.py).
"""

import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from agents import worker
from agents.hooks import handoff_recorders
from agents.models import Agent, Message
from hive_core.errors import Invalid, Unavailable
from hive_core.jsondata import json_problem
from hive_core.redis_client import redis_blocking_client, redis_client
from hive_core.sql import insert_sql

logger = logging.getLogger(__name__)

GROUP = "hive"
DEAD_STREAM = "hive:dead"
# The dead-letter stream is for operators and tools; the Message rows are the
# record, so it keeps about this many entries.
DEAD_STREAM_MAXLEN = 10_000
# A reply nobody reads (its requester timed out) is gone after this long.
REPLY_TTL = 300
_KIND_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-:")


class MessageError(Invalid):
    """The message cannot be sent; nothing was sent. `field` names the culprit, and
    the message reads `field: reason` (the API's `fields` carry the reason)."""

    def __init__(self, message: str, *, field: str = ""):
        reason = message.split(": ", 1)[-1]
        super().__init__(message, fields={field: [reason]} if field else None)
        self.field = field


class RequestTimeout(Unavailable, MessageError):
    """No reply within the timeout; the request stays in the recipient's inbox. A
    MessageError to its callers, of the Unavailable kind (first in the bases)."""


class RequestFailed(MessageError):
    """The recipient refused the request for good: its handler failed on it (it was
    dead-lettered)."""


def agent_stream(name: str) -> str:
    return f"hive:inbox:agent:{name}"


def role_stream(role: str) -> str:
    return f"hive:inbox:role:{role}"


def reply_stream() -> str:
    return f"hive:reply:{uuid.uuid4().hex}"


def default_sender() -> str:
    """The agent this process is, else `hive`."""
    return worker.identity.name if worker.identity else "hive"


def user_sender(user) -> str:
    """How a message a person sent names them (the API, /hive:send, the admin): they
    may read back what they sent (agents/selectors.py, message_visible_list)."""
    return f"user:{user.username}"


@dataclass
class Outgoing:
    """One message to send: to an agent (`to`) or to any one agent of a role (`role`)."""

    kind: str
    to: str = ""
    role: str = ""
    payload: Any = field(default_factory=dict)
    correlation_id: str = ""
    reply_to: str = ""
    idempotency_key: str = ""


def encode_payload(payload: Any) -> str:
    """The payload as compact JSON, refused with a clear error when it is not JSON data
    the database can store (a lone surrogate would fail its UTF-8 encoding) or too large."""
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise MessageError(f"payload: not JSON: {exc}", field="payload") from None
    problem = json_problem(payload, at="payload")
    if problem:
        raise MessageError(problem, field="payload")
    size = len(text.encode())
    if size > settings.HIVE_MESSAGE_MAX_BYTES:
        raise MessageError(
            f"payload: {size:,} bytes is over the limit of "
            f"{settings.HIVE_MESSAGE_MAX_BYTES:,} bytes (HIVE_MESSAGE_MAX_BYTES)",
            field="payload",
        )
    return text


def _check(message: Outgoing) -> tuple[str, str]:
    """(stream, recipient) of a message, or MessageError naming the bad field."""
    if bool(message.to) == bool(message.role):
        raise MessageError("to: give an agent (to) or a role, not both or neither", field="to")
    if not message.kind or len(message.kind) > 100 or set(message.kind) - _KIND_CHARS:
        raise MessageError(
            f"kind: {message.kind!r} is not a message kind (lowercase letters, digits, . _ - :)",
            field="kind",
        )
    if len(message.correlation_id) > 64:
        raise MessageError("correlation_id: longer than 64 characters", field="correlation_id")
    if message.to:
        return agent_stream(message.to), message.to
    return role_stream(message.role), f"role:{message.role}"


@dataclass(frozen=True)
class Sent:
    """A message just sent, as send_many returns it (its row is Message `pk`)."""

    pk: int
    stream: str
    sender: str
    recipient: str
    kind: str
    correlation_id: str
    reply_to: str


_COLUMNS = ("stream", "stream_id", "sender", "recipient", "kind", "payload", "correlation_id",
            "reply_to", "idempotency_key", "state", "deliveries", "consumer", "error",
            "created_at")  # fmt: skip


def send_many(messages: Iterable[Outgoing], *, sender: str = "") -> list[Sent]:
    """Send a batch: one INSERT, then one pipelined round trip of XADDs after commit.

    Inside a transaction the entries are added when it commits, so handlers and
    services can send as part of their own effects.
    """
    sender = sender or default_sender()
    sent, values, encoded = [], [], []
    for message in messages:
        stream, recipient = _check(message)
        text = encode_payload(message.payload)
        encoded.append(text)
        sent.append((stream, recipient, message))
    if not sent:
        return []
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    for (stream, recipient, message), text in zip(sent, encoded, strict=True):
        values.append((stream, "", sender, recipient, message.kind, text, message.correlation_id,
                       message.reply_to, message.idempotency_key, Message.State.PENDING, 0, "",
                       "", now))  # fmt: skip
    with transaction.atomic():
        ids = _insert(values)
        rows = [
            Sent(pk=pk, stream=stream, sender=sender, recipient=recipient, kind=message.kind,
                 correlation_id=message.correlation_id, reply_to=message.reply_to)
            for pk, (stream, recipient, message) in zip(ids, sent, strict=True)
        ]  # fmt: skip
        transaction.on_commit(lambda: publish(rows, encoded))
    return rows


def _insert(values: list[tuple]) -> list[int]:
    """INSERT the rows in one statement and return their ids in order.

    Plain SQL rather than bulk_create: building and preparing model instances was
    half of a sender's time (bench/messaging.py), and the payload is JSON already.
    Both databases return the ids of a multi-row INSERT ... RETURNING in row order,
    as Django's bulk_create relies on too.
    """
    ids: list[int] = []
    with connection.cursor() as cursor:
        for start in range(0, len(values), 1000):  # well under SQLite's 32,766 parameters
            cursor.execute(
                *insert_sql(
                    Message._meta.db_table,
                    columns=_COLUMNS,
                    rows=values[start : start + 1000],
                    returning=["id"],
                )
            )
            ids += [r[0] for r in cursor.fetchall()]
    return ids


def publish(rows: list[Message] | list[Sent], encoded: list[str] | None = None) -> list[str]:
    """Add the rows' stream entries (after their commit), in one round trip; returns
    their stream ids. The ids are not written back here: the consumer records each
    in the same statement that marks it handled, which saves every send a write."""
    encoded = encoded or [json.dumps(r.payload, separators=(",", ":")) for r in rows]
    try:
        pipe = redis_client().pipeline(transaction=False)
        for row, text in zip(rows, encoded, strict=True):
            # No MAXLEN here: it trims by count and would drop entries not yet handled
            # (an agent that is down for long). The inbox trims by MINID below the
            # oldest pending entry instead (agents/inbox.py).
            pipe.xadd(row.stream, entry_fields(row, text))
        ids = pipe.execute()
    except redis.RedisError:
        logger.warning(
            "messages %s.. not yet in their streams (Redis unreachable); their inbox "
            "will send them", rows[0].pk, exc_info=True
        )  # fmt: skip
        return []
    return ids


def entry_fields(row: Message | Sent, payload: str) -> dict[str, str | int]:
    """A stream entry carries everything its consumer needs: no read of the row."""
    return {
        "mid": row.pk,
        "kind": row.kind,
        "from": row.sender,
        "to": row.recipient,
        "cid": row.correlation_id,
        "reply": row.reply_to,
        "payload": payload,
    }


def send(
    *,
    to: str = "",
    role: str = "",
    kind: str,
    payload: Any = None,
    correlation_id: str = "",
    sender: str = "",
    idempotency_key: str = "",
) -> Message:
    """Send one message to agent `to` (it waits in the inbox while the agent is down)
    or to any one agent of `role`. Sending again with the same `idempotency_key`
    returns the first message and sends nothing."""
    if idempotency_key:
        existing = Message.objects.filter(idempotency_key=idempotency_key).first()
        if existing:
            return existing
    outgoing = Outgoing(
        kind=kind,
        to=to,
        role=role,
        payload={} if payload is None else payload,
        correlation_id=correlation_id,
        idempotency_key=idempotency_key,
    )
    (sent,) = send_many([outgoing], sender=sender)
    return _message(sent, outgoing)


def broadcast(
    *, role: str, kind: str, payload: Any = None, correlation_id: str = "", sender: str = ""
) -> list[Sent]:
    """A copy in the inbox of each online agent of `role`, so each handles it once."""
    names = list(
        Agent.objects.filter(role=role)
        .exclude(status=Agent.Status.OFFLINE)
        .order_by("name")
        .values_list("name", flat=True)
    )
    if not names:
        raise MessageError(f"role: no online agent has role {role!r}", field="role")
    correlation_id = correlation_id or uuid.uuid4().hex
    return send_many(
        [
            Outgoing(kind=kind, to=name, payload=payload or {}, correlation_id=correlation_id)
            for name in names
        ],
        sender=sender,
    )


def request(
    *,
    to: str = "",
    role: str = "",
    kind: str,
    payload: Any = None,
    timeout: float = 10.0,
    sender: str = "",
    idempotency_key: str = "",
) -> Any:
    """Send a message and wait for its handler's reply (what it returned).

    The reply comes on a stream of this request's own, correlated by the
    correlation id; RequestTimeout says so when none comes within `timeout`
    seconds, RequestFailed when the handler failed for good. With an
    `idempotency_key` a request already answered returns its recorded reply.
    """
    if idempotency_key:
        existing = Message.objects.filter(idempotency_key=idempotency_key).first()
        if existing and existing.state == Message.State.HANDLED:
            return existing.result
        if existing:
            return _await_reply(existing, timeout=timeout)
    outgoing = Outgoing(
        kind=kind,
        to=to,
        role=role,
        payload={} if payload is None else payload,
        correlation_id=uuid.uuid4().hex,
        reply_to=reply_stream(),
        idempotency_key=idempotency_key,
    )
    if transaction.get_connection().in_atomic_block:
        # The entry is added on commit: waiting inside the transaction would wait forever.
        raise MessageError("request: cannot wait for a reply inside a transaction")
    (sent,) = send_many([outgoing], sender=sender)
    return _await_reply(_message(sent, outgoing), timeout=timeout)


def _message(sent: Sent, outgoing: Outgoing) -> Message:
    """The row of a message just sent, without reading it back."""
    return Message(
        pk=sent.pk, stream=sent.stream, sender=sent.sender, recipient=sent.recipient,
        kind=sent.kind, payload=outgoing.payload, correlation_id=sent.correlation_id,
        reply_to=sent.reply_to, idempotency_key=outgoing.idempotency_key,
        state=Message.State.PENDING,
    )  # fmt: skip


def _await_reply(message: Message, *, timeout: float) -> Any:
    client = redis_blocking_client()
    deadline = time.monotonic() + timeout
    last = "0-0"
    try:
        while (left := deadline - time.monotonic()) > 0:
            response = client.xread(
                {message.reply_to: last}, count=10, block=max(1, int(left * 1000))
            )
            for _, entries in response or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if fields.get("cid") != message.correlation_id:
                        continue  # not ours (a reply stream is per request; be safe)
                    if fields.get("ok") == "1":
                        return json.loads(fields["payload"])
                    raise RequestFailed(
                        f"{message.recipient} failed to handle {message.kind!r} "
                        f"(message {message.pk}): {fields.get('error', '')}"
                    )
    finally:
        client.delete(message.reply_to)
    status = ""
    if not message.recipient.startswith("role:"):
        agent = Agent.objects.filter(name=message.recipient).values_list("status", flat=True)
        status = f" (status: {agent.first() or 'not registered'})"
    raise RequestTimeout(
        f"no reply from {message.recipient} to {message.kind!r} within {timeout:g} s"
        f"{status}; message {message.pk} waits in its inbox"
    )


def handoff(
    *, to: str, run, step, context: dict, kind: str = "handoff", sender: str = ""
) -> Message:
    """Hand a step's context to agent `to` and record the handoff on the run: a
    `step.handoff` event on its timeline and an entry in the step's history (written
    by coordination, through agents/hooks.py)."""
    sender = sender or default_sender()
    payload = {"run": run.pk, "step": step.key, "context": context}
    with transaction.atomic():
        message = send(to=to, kind=kind, payload=payload, sender=sender,
                       correlation_id=f"run:{run.pk}:{step.key}")  # fmt: skip
        handoff_recorders(step=step, sender=sender, to=to, message_id=message.pk)
    return message


def reply_fields(*, message_id: int, correlation_id: str, sender: str, ok: bool, payload: str = "",
                 error: str = "") -> dict[str, str | int]:  # fmt: skip
    return {"mid": message_id, "cid": correlation_id, "from": sender, "ok": int(ok),
            "payload": payload, "error": error, "at": timezone.now().isoformat()}  # fmt: skip
