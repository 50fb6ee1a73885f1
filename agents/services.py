"""Writes to the agent registry and control of live agents. Each one is safe to repeat."""

from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.db import connection, transaction
from django.utils import timezone

from agents import mailbox
from agents.identity import concurrency_problem
from agents.liveness import agents_live, live_key
from agents.models import Agent, Message
from agents.routing import agent_queues
from events.kinds import agent_subject
from events.services import event_emit
from hive_core.errors import Conflict
from hive_core.redis_client import redis_client
from hive_core.sql import case, update_sql

Status = Agent.Status
# How long a control command waits for the agent's answer.
CONTROL_TIMEOUT = 3.0


class AgentControlError(Conflict):
    """A control command could not be carried out (the agent is offline, did not
    answer, or refused); the message says why. The API's code is `agent_unavailable`."""

    code = "agent_unavailable"


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
    """Record a starting agent process; one that comes back by name takes its row back."""
    agent, _ = Agent.objects.update_or_create(
        name=name,
        defaults={
            "role": role,
            "skills": skills,
            "concurrency": concurrency,
            "host": host,
            "pid": pid,
            "version": version,
            "status": Status.STARTING,
            "load": 0.0,
            "started_at": timezone.now(),
            "last_heartbeat": timezone.now(),
        },
    )
    return agent


@transaction.atomic
def agent_ready(*, name: str, pid: int, node: str) -> bool:
    """The agent consumes its queues now: it is online. False if the name was taken over."""
    updated = Agent.objects.filter(name=name, pid=pid).update(
        status=Status.IDLE, node=node, last_heartbeat=timezone.now()
    )
    if updated:
        event_emit(
            kind="agent.online", subject=agent_subject(name), data={"pid": pid, "node": node}
        )
    return bool(updated)


@transaction.atomic
def agent_write_through(
    *, name: str, pid: int, status: str, load: float, concurrency: int, at: datetime
) -> bool:
    """Write a heartbeat to the row; an agent marked offline by the reaper comes back."""
    row = Agent.objects.filter(name=name, pid=pid).values("status").first()
    if row is None:
        return False  # another process has taken the name
    Agent.objects.filter(name=name, pid=pid).update(
        status=status, load=load, concurrency=concurrency, last_heartbeat=at
    )
    if row["status"] != status:
        kind = "agent.online" if row["status"] == Status.OFFLINE else "agent.status"
        event_emit(
            kind=kind, subject=agent_subject(name), data={"from": row["status"], "to": status}
        )
    return True


@transaction.atomic
def agent_mark_offline(*, name: str, pid: int, reason: str) -> bool:
    """Mark agent `name` offline, unless another process has taken the name since."""
    updated = Agent.objects.filter(name=name, pid=pid).exclude(status=Status.OFFLINE)
    if not updated.update(status=Status.OFFLINE, load=0.0):
        return False
    redis_client().delete(live_key(name))
    event_emit(kind="agent.offline", subject=agent_subject(name), data={"reason": reason})
    return True


def agents_reap(*, timeout: int) -> list[str]:
    """Mark offline every agent silent for `timeout` seconds, in Redis and in the database."""
    cutoff = timezone.now() - timedelta(seconds=timeout)
    stale = dict(
        Agent.objects.exclude(status=Status.OFFLINE)
        .filter(last_heartbeat__lt=cutoff)
        .values_list("name", "pid")
    )
    # The row is written only every timeout/2; a live Redis key means the agent lives.
    silent = set(stale) - set(agents_live(list(stale)))
    reaped = []
    for name in sorted(silent):
        with transaction.atomic():
            # Re-check the cutoff: a heartbeat may have landed since the read.
            if Agent.objects.filter(name=name, pid=stale[name], last_heartbeat__lt=cutoff).update(
                status=Status.OFFLINE, load=0.0
            ):
                event_emit(
                    kind="agent.offline",
                    subject=agent_subject(name),
                    data={"reason": f"no heartbeat for {timeout} s"},
                )
                reaped.append(name)
    return reaped


# --- control of live agents, through Celery's remote control ---------------------
# No database transaction is held while waiting for an agent's answer. The app is
# Celery's current one: hive_project/celery.py creates it when Django loads its
# settings (hive_project/__init__.py), with DJANGO_SETTINGS_MODULE set, so Celery's
# Django fix-up makes it the default of every thread of every process (web, agent,
# coordinator, CLI; the prefork pool sets it again in its children).


def _reachable(agent: Agent) -> None:
    if not agent.online or not agent.node:
        raise AgentControlError(f"agent {agent.name!r} is offline")


def _control(agent: Agent, command: str, *, reply: bool = True, **arguments) -> dict | None:
    """Send a remote-control command to the agent's worker and return its reply."""
    _reachable(agent)
    replies = current_app.control.broadcast(
        command,
        arguments=arguments,
        destination=[agent.node],
        reply=reply,
        timeout=CONTROL_TIMEOUT,
    )
    if not reply:
        return None
    if not replies:
        raise AgentControlError(
            f"agent {agent.name!r} did not answer {command} within {CONTROL_TIMEOUT:g} s"
        )
    reply = replies[0][agent.node]
    if isinstance(reply, dict) and "error" in reply:
        raise AgentControlError(f"agent {agent.name!r}: {command} failed: {reply['error']}")
    return reply


def _queues(agent: Agent) -> list[str]:
    return agent_queues(name=agent.name, role=agent.role, skills=agent.skills)


def agent_drain(*, agent: Agent) -> Agent:
    """Stop taking new steps; running ones finish. The agent stays online."""
    for queue in _queues(agent):
        _control(agent, "cancel_consumer", queue=queue)
    return _set_status(agent, Status.DRAINING)


def agent_resume(*, agent: Agent) -> Agent:
    """Consume the agent's queues again after a drain."""
    for queue in _queues(agent):
        _control(agent, "add_consumer", queue=queue)
    return _set_status(agent, Status.BUSY if agent.load else Status.IDLE)


def agent_shutdown(*, agent: Agent) -> None:
    """Warm shutdown: the agent finishes its running steps, then exits and goes offline.

    The request is recorded first, as an `agent.shutdown` event naming the process
    (committed: no caller holds a transaction around a control command), so whatever
    supervises that process (`hive up`, ops/supervisor.py) finds it when the process
    exits, and leaves it down instead of restarting it.
    """
    _reachable(agent)
    event_emit(
        kind="agent.shutdown", subject=agent_subject(agent.name),
        data={"pid": agent.pid, "node": agent.node},
    )  # fmt: skip
    # The worker exits instead of answering, so no reply is awaited.
    _control(agent, "shutdown", reply=False)


def agent_scale(*, agent: Agent, concurrency: int) -> Agent:
    """Grow or shrink the agent's pool to `concurrency` parallel steps."""
    problem = concurrency_problem(concurrency)
    if problem:
        raise AgentControlError(f"concurrency: {problem}")
    delta = concurrency - agent.concurrency
    if delta:
        _control(agent, "pool_grow" if delta > 0 else "pool_shrink", n=abs(delta))
        _change(agent, "concurrency", concurrency, kind="agent.scaled")
    return agent


def _set_status(agent: Agent, status: str) -> Agent:
    if agent.status != status:
        _change(agent, "status", status, kind="agent.status")
    return agent


@transaction.atomic
def _change(agent: Agent, field: str, value: object, *, kind: str) -> None:
    """Write one field of the row and record the change as an event."""
    Agent.objects.filter(pk=agent.pk).update(**{field: value})
    event_emit(
        kind=kind,
        subject=agent_subject(agent.name),
        data={"from": getattr(agent, field), "to": value},
    )
    setattr(agent, field, value)


# --- messages (agents/mailbox.py sends, agents/inbox.py and delivery.py handle) ------


def message_send(
    *,
    sender: str,
    to: str = "",
    role: str = "",
    kind: str,
    payload: Any = None,
    correlation_id: str = "",
) -> Message:
    """Send one message to a registered agent (online or not: it waits in the inbox)
    or to any one agent of a role; what the API and `/hive:send` call.

    Raises mailbox.MessageError naming the field (`to`, `role`, `kind`, `payload`).
    """
    if to and not Agent.objects.filter(name=to).exists():
        raise mailbox.MessageError(f"to: no agent named {to!r} is registered", field="to")
    if role and not Agent.objects.filter(role=role).exists():
        raise mailbox.MessageError(f"role: no agent has role {role!r}", field="role")
    with transaction.atomic():
        message = mailbox.send(to=to, role=role, kind=kind, payload=payload,
                               correlation_id=correlation_id, sender=sender)  # fmt: skip
        _emit_sent([message])
    return Message.objects.get(pk=message.pk)


def message_broadcast(
    *, sender: str, role: str, kind: str, payload: Any = None, correlation_id: str = ""
) -> list[Message]:
    """A copy to each online agent of `role`."""
    with transaction.atomic():
        sent = mailbox.broadcast(role=role, kind=kind, payload=payload,
                                 correlation_id=correlation_id, sender=sender)  # fmt: skip
        _emit_sent(sent)
    return list(Message.objects.filter(pk__in=[m.pk for m in sent]).order_by("id"))


def _emit_sent(messages: list[Message] | list[mailbox.Sent]) -> None:
    """People's sends (the API, commands) are events; agents' own sends are not: at
    thousands a second an event each would double their writes. Handled messages are
    summed up per agent instead (messages_acked), dead ones are events each.

    The subject is the (first) message: who may see the event is who may see the
    message (dashboard/selectors.py); a broadcast's copies share their sender."""
    first = messages[0]
    event_emit(
        kind="message.sent",
        subject=f"message:{first.pk}",
        data={"messages": [m.pk for m in messages], "kind": first.kind,
              "to": [m.recipient for m in messages], "sender": first.sender},
    )  # fmt: skip


def messages_claim(*, entries: dict[int, tuple[str, int]], consumer: str) -> set[int]:
    """Mark pending messages handled by `consumer`; returns the ids it may handle.

    `entries` maps each message id to its stream entry id and delivery count, both
    recorded with the mark. Called in the same transaction as the handlers, so the
    mark and their effects commit together. An id not returned was handled (or
    dead-lettered) already: a redelivery after a crash between commit and XACK, or a
    consumer that took over an idle entry while its first consumer was merely slow.
    That is normal; the caller only acknowledges it. One UPDATE ... RETURNING for the
    batch (PostgreSQL and SQLite 3.35+).
    """
    now = Message._meta.get_field("handled_at").get_db_prep_save(timezone.now(), connection)
    counts = {count for _, count in entries.values()}
    if len(counts) == 1:  # the usual batch, read fresh: one count for all
        deliveries = counts.pop()
    else:
        deliveries = case("id", {pk: count for pk, (_, count) in entries.items()})
    sql, params = update_sql(
        Message._meta.db_table,
        values={
            "state": Message.State.HANDLED,
            "handled_at": now,
            "consumer": consumer,
            "stream_id": case("id", {pk: stream_id for pk, (stream_id, _) in entries.items()}),
            "deliveries": deliveries,
        },
        where={"id": list(entries), "state": Message.State.PENDING},
        returning=["id"],
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


def message_result(*, message_id: int, result: Any) -> None:
    """Keep the reply to a request on its row (inside the handling transaction)."""
    Message.objects.filter(pk=message_id).update(result=result)


def message_fail(*, message_id: int, stream_id: str, error: str, deliveries: int) -> None:
    """A handler failed: the message stays pending, to be tried again."""
    Message.objects.filter(pk=message_id, state=Message.State.PENDING).update(
        stream_id=stream_id, error=error, deliveries=deliveries
    )


@transaction.atomic
def message_bury(
    *, message_id: int, stream_id: str, agent: str, consumer: str, error: str, deliveries: int
) -> bool:
    """Mark a message dead (dead-lettered) with its error; False if it was not pending."""
    updated = Message.objects.filter(pk=message_id, state=Message.State.PENDING).update(
        state=Message.State.DEAD,
        stream_id=stream_id,
        error=error,
        deliveries=deliveries,
        consumer=consumer,
        dead_at=timezone.now(),
    )
    if updated:
        # The error may quote the payload: the event is the message's, seen as it is.
        event_emit(
            kind="message.dead",
            subject=f"message:{message_id}",
            data={"message": message_id, "agent": agent, "error": error,
                  "deliveries": deliveries},
        )  # fmt: skip
    return bool(updated)


def messages_acked(*, agent: str, acks: list[tuple[list[int], datetime]]) -> None:
    """Record when batches were acknowledged in Redis, and sum them up in one
    `message.handled` event. Written a little later than the XACK (at most twice a
    second), several batches per transaction, to keep it off the hot path; a crash in
    between leaves acked_at empty on handled rows (their state is the truth)."""
    ids = [pk for batch, _ in acks for pk in batch]
    if not ids:
        return
    with transaction.atomic():
        for batch, at in acks:
            Message.objects.filter(pk__in=batch).update(acked_at=at)
        event_emit(
            kind="message.handled",
            subject=agent_subject(agent),
            data={"count": len(ids), "first": min(ids), "last": max(ids)},
        )
