from rest_framework import viewsets

from agents.api.serializers import AgentSerializer
from agents.selectors import agent_list


class AgentViewSet(viewsets.ReadOnlyModelViewSet):
    """The registered agents: name, role, skills, status, load, host, pid, heartbeat."""

    serializer_class = AgentSerializer
    lookup_field = "name"

    def get_queryset(self):
        return agent_list()
