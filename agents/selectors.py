"""Reads of the agent registry and the skills."""

from django.db.models import QuerySet

from agents.models import Agent
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
