from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from agents.identity import AGENT_SLUG_PATTERN, concurrency_bound
from agents.models import Agent, Message


class AgentSerializer(serializers.ModelSerializer):
    """An agent's row, overlaid with its live heartbeat from Redis when it has one
    (`context["live"]`): the row is written only on change, the heartbeat every beat."""

    # The pattern the model's validator holds every door to (agents/identity.py).
    name = serializers.RegexField(AGENT_SLUG_PATTERN, read_only=True)
    role = serializers.RegexField(AGENT_SLUG_PATTERN, read_only=True)
    heartbeat_age = serializers.SerializerMethodField(help_text="Seconds since the last beat.")
    running = serializers.SerializerMethodField(help_text="Steps running now.")

    class Meta:
        model = Agent
        fields = [
            "name",
            "role",
            "skills",
            "status",
            "concurrency",
            "load",
            "running",
            "host",
            "pid",
            "node",
            "version",
            "started_at",
            "last_heartbeat",
            "heartbeat_age",
        ]
        read_only_fields = fields

    def _live(self, agent: Agent) -> dict:
        live = self.context.get("live", {}).get(agent.name)
        return live if live and agent.online and live.get("pid") == agent.pid else {}

    def to_representation(self, agent: Agent) -> dict:
        data = super().to_representation(agent)
        live = self._live(agent)
        if live:
            data.update(
                load=live["load"], concurrency=live["concurrency"], last_heartbeat=live["at"]
            )
            if agent.status != Agent.Status.DRAINING:
                data["status"] = live["status"]
        return data

    def get_heartbeat_age(self, agent: Agent) -> float | None:
        beat = parse_datetime(self._live(agent).get("at", "")) or agent.last_heartbeat
        return round((timezone.now() - beat).total_seconds(), 1) if beat else None

    def get_running(self, agent: Agent) -> int:
        return self._live(agent).get("running", 0)


class ScaleSerializer(serializers.Serializer):
    concurrency = serializers.IntegerField(min_value=1)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The bound is a setting, read when the serializer is made (so is the schema's).
        self.fields["concurrency"] = serializers.IntegerField(
            min_value=1,
            max_value=settings.HIVE_AGENT_MAX_CONCURRENCY,
            error_messages={"max_value": concurrency_bound()},
        )


class SkillSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    params = serializers.JSONField(help_text="The JSON Schema of the skill's inputs.")
    agents = serializers.ListField(
        child=serializers.CharField(), help_text="Online agents offering it."
    )


class MessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = [
            "id",
            "sender",
            "recipient",
            "kind",
            "payload",
            "correlation_id",
            "state",
            "stream",
            "stream_id",
            "deliveries",
            "consumer",
            "result",
            "error",
            "created_at",
            "handled_at",
            "acked_at",
            "dead_at",
        ]
        read_only_fields = fields


_NAME = {"max_length": 64, "required": False, "allow_blank": True}


class SendSerializer(serializers.Serializer):
    """To an agent (`to`) or to any one agent of a role (`role`)."""

    # The pattern agents are named by: a name no agent can have is refused up front.
    to = serializers.RegexField(AGENT_SLUG_PATTERN, **_NAME)
    role = serializers.RegexField(AGENT_SLUG_PATTERN, **_NAME)
    kind = serializers.CharField(max_length=100)
    payload = serializers.JSONField(required=False, default=dict)
    correlation_id = serializers.CharField(max_length=64, required=False, allow_blank=True)


class BroadcastSerializer(serializers.Serializer):
    role = serializers.RegexField(AGENT_SLUG_PATTERN, max_length=64)
    kind = serializers.CharField(max_length=100)
    payload = serializers.JSONField(required=False, default=dict)
    correlation_id = serializers.CharField(max_length=64, required=False, allow_blank=True)


class MessageFilterSerializer(serializers.Serializer):
    """The query parameters of the messages list."""

    agent = serializers.CharField(required=False, max_length=100, help_text="Sent or received.")
    state = serializers.ChoiceField(choices=Message.State.choices, required=False)
    kind = serializers.CharField(required=False, max_length=100)
    correlation_id = serializers.CharField(required=False, max_length=100)
