"""Reads of the agent registry."""

from django.db.models import QuerySet

from agents.models import Agent


def agent_list() -> QuerySet[Agent]:
    return Agent.objects.order_by("name")
