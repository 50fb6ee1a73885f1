from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework import serializers

from commands.models import Command
from notifications.models import OUTCOMES, Delivery, Subscription


class SubscriptionSerializer(serializers.ModelSerializer):
    """A user's own subscription; staff may name another user or a group."""

    user = serializers.SlugRelatedField(
        slug_field="username", queryset=get_user_model().objects.all(), required=False,
        allow_null=True,
    )  # fmt: skip
    group = serializers.SlugRelatedField(
        slug_field="name", queryset=Group.objects.all(), required=False, allow_null=True
    )
    command = serializers.SlugRelatedField(
        slug_field="name", queryset=Command.objects.all(), required=False, allow_null=True
    )
    outcomes = serializers.ListField(child=serializers.CharField(), allow_empty=False)
    webhook_secret = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=200
    )

    class Meta:
        model = Subscription
        fields = ["id", "user", "group", "command", "workflow", "outcomes", "email",
                  "webhook_url", "webhook_secret", "active", "created_at"]  # fmt: skip
        read_only_fields = ["created_at"]

    def validate_outcomes(self, value):
        unknown = sorted(set(value) - set(OUTCOMES))
        if unknown:
            raise serializers.ValidationError(
                f"unknown outcome {unknown[0]!r}: any of {', '.join(OUTCOMES)}"
            )
        return sorted(set(value), key=OUTCOMES.index)

    def validate_webhook_url(self, value):
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise serializers.ValidationError("an http:// or https:// URL")
        return value

    def validate_command(self, value):
        if value is not None and value.workflow_id is None:
            raise serializers.ValidationError(f"/{value.name} starts no run")
        return value

    def validate(self, data):
        merged = {**self._current(), **data}
        request = self.context["request"]
        if not request.user.is_staff:
            if merged.get("group") or merged.get("user") not in (None, request.user):
                raise serializers.ValidationError(
                    {"user": "only staff subscribe another user or a group"}
                )
            merged["user"] = data["user"] = request.user
        elif not merged.get("user") and not merged.get("group"):
            merged["user"] = data["user"] = request.user
        if merged.get("user") and merged.get("group"):
            raise serializers.ValidationError({"group": "a user or a group, not both"})
        if merged.get("command") and merged.get("workflow"):
            raise serializers.ValidationError({"workflow": "a command or a workflow, not both"})
        if not merged.get("email") and not merged.get("webhook_url"):
            raise serializers.ValidationError({"email": "no channel: email, a webhook_url or both"})
        if merged.get("webhook_url") and not merged.get("webhook_secret"):
            raise serializers.ValidationError({"webhook_secret": "a webhook needs a secret"})
        return data

    def _current(self) -> dict:
        fields = ("user", "group", "command", "workflow", "email", "webhook_url", "webhook_secret")
        return {f: getattr(self.instance, f) for f in fields} if self.instance else {}


class DeliverySerializer(serializers.ModelSerializer):
    workflow = serializers.CharField(source="run.workflow.name", read_only=True)

    class Meta:
        model = Delivery
        fields = ["id", "subscription", "run", "workflow", "outcome", "channel", "recipient",
                  "status", "attempts", "attempt_log", "next_attempt_at", "last_error",
                  "response_status", "created_at", "sent_at"]  # fmt: skip
        read_only_fields = fields
