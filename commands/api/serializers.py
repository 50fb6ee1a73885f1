from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from commands.models import Command, Invocation, Trigger
from commands.parser import TEXT_PATTERN
from commands.schedules import WHEN_NEEDED
from commands.selectors import command_allowed
from coordination.api.serializers import DeadlineField, PriorityField
from coordination.models import Run
from coordination.selectors import run_outputs
from hive_core.api import MAX_ID

User = get_user_model()


class CommandSerializer(serializers.ModelSerializer):
    """What a form or an autocompletion needs: the name, the hint, the params schema."""

    usage = serializers.SerializerMethodField()
    workflow = serializers.CharField(
        read_only=True, allow_null=True, help_text="name@version; null for a built-in."
    )
    allowed = serializers.SerializerMethodField(help_text="May the requester execute it?")

    class Meta:
        model = Command
        fields = [
            "name",
            "usage",
            "description",
            "argument_hint",
            "params",
            "permission",
            "allowed",
            "approval",
            "overlap",
            "overlap_key",
            "priority",
            "timeout",
            "workflow",
            "builtin",
            "enabled",
            "version",
            "source",
            "updated_at",
        ]
        read_only_fields = fields

    def get_usage(self, command: Command) -> str:
        return f"/{command.name} {command.argument_hint}".rstrip()

    def get_allowed(self, command: Command) -> bool:
        request = self.context.get("request")
        return bool(request and command_allowed(command=command, user=request.user))


class CommandDetailSerializer(CommandSerializer):
    class Meta(CommandSerializer.Meta):
        fields = [*CommandSerializer.Meta.fields, "body", "definition"]
        read_only_fields = fields


class RunSummarySerializer(serializers.ModelSerializer):
    workflow = serializers.StringRelatedField()
    outputs = serializers.SerializerMethodField(help_text="Outputs of the last steps, when done.")

    class Meta:
        model = Run
        fields = ["id", "workflow", "state", "error", "created_at", "finished_at", "outputs"]
        read_only_fields = fields

    def get_outputs(self, run: Run) -> dict:
        return run_outputs(run) if run.state == Run.State.SUCCEEDED else {}


class InvocationSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    command = serializers.CharField(source="command_name", read_only=True)
    run = RunSummarySerializer(read_only=True, allow_null=True)

    class Meta:
        model = Invocation
        fields = [
            "id",
            "command",
            "command_version",
            "user",
            "source",
            "text",
            "args",
            "dry_run",
            "priority",
            "deadline",
            "outcome",
            "error",
            "output",
            "overlap_key",
            "run",
            "schedule",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class InvocationFilterSerializer(serializers.Serializer):
    """The query parameters of the audit list."""

    command = serializers.CharField(required=False, max_length=200)
    outcome = serializers.ChoiceField(choices=Invocation.Outcome.choices, required=False)
    source = serializers.ChoiceField(choices=Invocation.Source.choices, required=False)
    run = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)


@extend_schema_field({"type": "string", "pattern": TEXT_PATTERN})
class CommandTextField(serializers.CharField):
    """The text of a slash command. The parser checks it (its errors point at the
    token), so the pattern is published here rather than checked twice."""


class ExecuteSerializer(serializers.Serializer):
    text = CommandTextField(trim_whitespace=False, max_length=100_000)
    dry_run = serializers.BooleanField(default=False)
    source = serializers.ChoiceField(
        choices=[Invocation.Source.API, Invocation.Source.DASHBOARD],
        default=Invocation.Source.API,
        help_text="dashboard when sent by the dashboard's console.",
    )
    priority = PriorityField(
        required=False,
        allow_null=True,
        default=None,
        help_text="0-9, higher goes first: the run's, over the command's and its workflow's.",
    )
    deadline = DeadlineField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Seconds the run may take before it is cancelled, over the command's "
        "`timeout` and its workflow's.",
    )


class ExecuteResultSerializer(serializers.Serializer):
    invocation = InvocationSerializer()
    run = RunSummarySerializer(allow_null=True, help_text="The run it started, if any.")
    plan = serializers.JSONField(allow_null=True, help_text="A dry run's resolved plan.")


class ScheduleSerializer(serializers.Serializer):
    """A schedule as listed: its text is whatever is stored, even one the admin wrote."""

    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    text = serializers.CharField(max_length=10_000)
    every = serializers.IntegerField(required=False, min_value=1, max_value=31_536_000)
    cron = serializers.CharField(required=False, allow_blank=True, max_length=100)
    when = serializers.CharField(read_only=True)
    enabled = serializers.BooleanField(default=True)
    user_id = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="Its owner, whom it runs as."
    )
    last_run_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="null until it first runs."
    )
    total_run_count = serializers.IntegerField(read_only=True)


class ScheduleCreateSerializer(ScheduleSerializer):
    text = CommandTextField(max_length=10_000)

    def validate(self, data: dict) -> dict:
        # schedule_create refuses it too; here it is an error of no one field, as the
        # API has always said it.
        if bool(data.get("every")) == bool(data.get("cron")):
            raise serializers.ValidationError(WHEN_NEEDED)
        return data


class ScheduleUpdateSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()


class TriggerSerializer(serializers.ModelSerializer):
    """A webhook trigger. Its secret is shown once, in the answer that creates it (and
    in the admin); give one to choose it, or one is generated."""

    user = serializers.SlugRelatedField(
        slug_field="username",
        queryset=User.objects.all(),
        required=False,
        help_text="Whom it runs as; you, unless a superuser names another.",
    )
    secret = serializers.CharField(
        write_only=True, required=False, min_length=16, max_length=200, trim_whitespace=False
    )
    url = serializers.SerializerMethodField(help_text="Where to POST: /hooks/<name>.")

    class Meta:
        model = Trigger
        fields = ["id", "name", "url", "command", "user", "secret", "enabled", "rejected_count",
                  "created_at"]  # fmt: skip
        read_only_fields = ["id", "rejected_count", "created_at"]

    def get_url(self, trigger: Trigger) -> str:
        return f"/hooks/{trigger.name}"


class TriggerCreatedSerializer(TriggerSerializer):
    secret = serializers.CharField(read_only=True, help_text="Shown this once.")
