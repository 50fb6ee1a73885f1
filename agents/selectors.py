"""Reads of the agent registry and the skills."""

from datetime import datetime

from django.db.models import Count, Max, Q, QuerySet, Sum

from agents.mailbox import user_sender
from agents.models import Agent, Message
from agents.skills import skill_get, skill_names
from events.kinds import agent_subject
from events.models import Event
from hive_core.db import filter_given
from hive_core.visibility import user_sees_all


def agent_list() -> QuerySet[Agent]:
    return Agent.objects.order_by("name")


def agent_shutdown_requested(*, name: str, pid: int | None, since: datetime) -> bool:
    """Whether agent `name`'s process `pid`, started at `since`, was asked to shut down
    (agent_shutdown records it before it tells the agent). The pid and the time both
    match, so neither another process of that name nor an old request with a reused
    pid counts."""
    requests = Event.objects.filter(kind="agent.shutdown", subject=agent_subject(name))
    return requests.filter(data__pid=pid, created_at__gte=since).exists()


def skill_list() -> list[dict]:
    """Each registered skill with the online agents that offer it (one query)."""
    offering: dict[str, list[str]] = {}
    for name, skills in Agent.objects.exclude(status=Agent.Status.OFFLINE).values_list(
        "name", "skills"
    ):
        for skill in skills:
            offering.setdefault(skill, []).append(name)
    return [
        {
            "name": name,
            "description": skill_get(name).description,
            "params": skill_get(name).params,
            "agents": sorted(offering.get(name, [])),
        }
        for name in skill_names()
    ]


def message_sees_all(*, user) -> bool:
    return user_sees_all(user=user, permission="agents.view_message")


def message_visible_list(*, user) -> QuerySet[Message]:
    """The messages `user` may see, newest first: everyone's for staff and holders of
    `agents.view_message` (agents' own messages among them), otherwise those they sent
    (the API, /hive:send, the admin), whose payload is what they typed."""
    messages = Message.objects.order_by("-id")
    if message_sees_all(user=user):
        return messages
    return messages.filter(sender=user_sender(user))


def message_list(
    *, user, agent: str = "", state: str = "", kind: str = "", correlation_id: str = ""
) -> QuerySet[Message]:
    """The messages `user` may see, newest first; `agent` matches those it sent or was
    sent (a role's messages are `role:NAME`'s)."""
    messages = message_visible_list(user=user)
    if agent:
        messages = messages.filter(Q(recipient=agent) | Q(sender=agent))
    return filter_given(messages, state=state, kind=kind, correlation_id=correlation_id)


def agent_status_counts() -> dict[str, int]:
    """Agents by status, every status present (zero when none)."""
    counts = dict.fromkeys(Agent.Status.values, 0)
    for status, n in Agent.objects.values_list("status").annotate(n=Count("pk")):
        counts[status] = n
    return counts


def inbox_summary() -> list[dict]:
    """Per recipient (an agent, or `role:NAME`): messages pending, handled and dead, and
    the deliveries Redis made of them; ordered by recipient. Everyone's: a figure of the
    pool's (how full each inbox is), naming no sender and no payload."""
    rows = (
        Message.objects.values("recipient")
        .annotate(
            pending=Count("pk", filter=Q(state=Message.State.PENDING)),
            handled=Count("pk", filter=Q(state=Message.State.HANDLED)),
            dead=Count("pk", filter=Q(state=Message.State.DEAD)),
            delivered=Sum("deliveries"),
            most_deliveries=Max("deliveries"),
        )
        .order_by("recipient")
    )
    return list(rows)
