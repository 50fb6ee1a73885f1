from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from coordination.models import Run, Signal, StepRun, Workflow
from coordination.selectors import run_children
from coordination.spec import PRIORITY, RUN_TIMEOUT


class WorkflowSerializer(serializers.ModelSerializer):
    class Meta:
        model = Workflow
        fields = ["name", "version", "description", "digest", "source", "created_at"]
        read_only_fields = fields


class WorkflowDetailSerializer(WorkflowSerializer):
    spec = serializers.JSONField(
        read_only=True, help_text="The validated definition: params schema and steps (the DAG)."
    )

    class Meta(WorkflowSerializer.Meta):
        fields = [*WorkflowSerializer.Meta.fields, "spec"]
        read_only_fields = fields


class StepRunSerializer(serializers.ModelSerializer):
    group = serializers.IntegerField(
        source="group_id", read_only=True, allow_null=True, help_text="The foreach step's id."
    )

    class Meta:
        model = StepRun
        fields = [
            "id", "key", "step_id", "group", "item_index", "state", "skill", "agent",
            "attempt", "tries", "inputs", "output", "error", "traceback", "waiting_reason",
            "priority", "concurrency_key", "rate_key", "history", "queued_at", "started_at",
            "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


class RunSerializer(serializers.ModelSerializer):
    workflow = serializers.CharField(source="workflow.name", read_only=True)
    version = serializers.IntegerField(source="workflow.version", read_only=True)
    created_by = serializers.CharField(
        source="created_by.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = Run
        fields = [
            "id", "workflow", "version", "state", "params", "error", "created_by",
            "rerun_of", "priority", "deadline", "concurrency_key", "waiting_reason",
            "created_at", "started_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


class ParentSerializer(serializers.Serializer):
    run = serializers.IntegerField(source="run_id")
    step = serializers.CharField(source="key")


class RunDetailSerializer(RunSerializer):
    steps = StepRunSerializer(many=True, read_only=True)
    dag = serializers.SerializerMethodField(help_text="The steps of the pinned version's spec.")
    parent = ParentSerializer(
        source="parent_step", read_only=True, allow_null=True,
        help_text="The run and step that started this one, if a sub-workflow.",
    )  # fmt: skip
    children = serializers.SerializerMethodField(
        help_text="The runs this one's steps started (sub-workflows), oldest first."
    )

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "parent", "children", "dag", "steps"]
        read_only_fields = fields

    def get_dag(self, run: Run) -> list[dict]:
        return run.workflow.spec["steps"]

    def get_children(self, run: Run) -> list[int]:
        return list(run_children(run=run).values_list("pk", flat=True))


class RunFilterSerializer(serializers.Serializer):
    """The query parameters of the runs list."""

    state = serializers.ChoiceField(choices=Run.State.choices, required=False)
    workflow = serializers.CharField(required=False, max_length=100)
    command = serializers.CharField(
        required=False, max_length=200, help_text="The slash command that started it."
    )
    user = serializers.CharField(required=False, max_length=150, help_text="Who started it.")
    since = serializers.DateTimeField(required=False, help_text="Created at or after.")
    until = serializers.DateTimeField(required=False, help_text="Created before.")


class VersionSerializer(serializers.Serializer):
    version = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=2**31 - 1,
        help_text="A version; the newest by default.",
    )


class PriorityField(serializers.IntegerField):
    """A run's priority, 0-9 (coordination.spec.PRIORITY)."""

    def __init__(self, **kwargs):
        super().__init__(min_value=PRIORITY["minimum"], max_value=PRIORITY["maximum"], **kwargs)


@extend_schema_field(
    {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": RUN_TIMEOUT["maximum"]}
)
class DeadlineField(serializers.FloatField):
    """Seconds a run may take, more than 0 (DRF's bounds are inclusive, so the lower
    one is checked here and published above)."""

    def __init__(self, **kwargs):
        super().__init__(max_value=RUN_TIMEOUT["maximum"], **kwargs)

    def to_internal_value(self, data) -> float:
        if isinstance(data, bool):  # float(True) is 1.0: `true` is no number of seconds
            self.fail("invalid")
        value = super().to_internal_value(data)
        if value <= 0:
            raise serializers.ValidationError("Must be more than 0 seconds.")
        return value


class StartSerializer(serializers.Serializer):
    """What a run starts with: its params, and what it overrides of its workflow's
    `priority` and `timeout`."""

    params = serializers.DictField(required=False, default=dict)
    priority = PriorityField(
        required=False,
        allow_null=True,
        default=None,
        help_text="0-9, higher goes first; the workflow's `priority` (else 0) by default.",
    )
    deadline = DeadlineField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Seconds the run may take before it is cancelled (deadline exceeded); "
        "the workflow's `timeout` by default.",
    )


class RejectSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)


class SignalSerializer(serializers.ModelSerializer):
    """A signal to a run; `step` is the key of the step it ended (none while kept)."""

    step = serializers.CharField(source="step.key", read_only=True, allow_null=True, default=None)
    payload = serializers.JSONField(required=False, allow_null=True, default=None)

    class Meta:
        model = Signal
        fields = ["id", "name", "payload", "step", "source", "created_at", "delivered_at"]
        read_only_fields = ["id", "step", "source", "created_at", "delivered_at"]
        extra_kwargs = {"name": {"max_length": 100}}
