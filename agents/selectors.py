"""Reads of the agent registry and the skills."""

from django.db.models import Q, QuerySet

from agents.models import Agent, Message
from agents.skills import skill_get, skill_names


def agent_list() -> QuerySet[Agent]:
    return Agent.objects.order_by("name")


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


def message_list(
    *, agent: str = "", state: str = "", kind: str = "", correlation_id: str = ""
) -> QuerySet[Message]:
    """Messages, newest first; `agent` matches those it sent or was sent (a role's
    messages are `role:NAME`'s)."""
    messages = Message.objects.order_by("-id")
    if agent:
        messages = messages.filter(Q(recipient=agent) | Q(sender=agent))
    if state:
        messages = messages.filter(state=state)
    if kind:
        messages = messages.filter(kind=kind)
    if correlation_id:
        messages = messages.filter(correlation_id=correlation_id)
    return messages
