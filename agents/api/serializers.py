from rest_framework import serializers

from agents.models import Agent


class AgentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Agent
        fields = [
            "name",
            "role",
            "skills",
            "status",
            "concurrency",
            "load",
            "host",
            "pid",
            "version",
            "started_at",
            "last_heartbeat",
        ]
        read_only_fields = fields
