from django.conf import settings
from django.db import models


class Workflow(models.Model):
    """One version of a named DAG definition. Saving a changed definition adds a
    version; runs pin the version they started on."""

    name = models.CharField(max_length=100, db_index=True)
    version = models.PositiveIntegerField()
    description = models.TextField(blank=True)
    spec = models.JSONField(help_text="The validated definition: params schema and steps.")
    digest = models.CharField(max_length=64, help_text="sha256 of the canonical spec.")
    source = models.CharField(max_length=500, blank=True, help_text="File or API it came from.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="workflow_name_version")
        ]
        ordering = ["name", "-version"]

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class Run(models.Model):
    """One execution of a workflow version with validated params."""

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        WAITING = "waiting"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})

    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="runs")
    state = models.CharField(max_length=16, choices=State, default=State.PENDING, db_index=True)
    params = models.JSONField(default=dict)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    rerun_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.workflow} ({self.state})"


class StepRun(models.Model):
    """One step of a run. A `foreach` step is a group whose items are StepRuns of their own."""

    class State(models.TextChoices):
        PENDING = "pending"
        QUEUED = "queued"
        RUNNING = "running"
        WAITING = "waiting"  # for a human's approval
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"
        CANCELLED = "cancelled"

    TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.SKIPPED, State.CANCELLED})
    OPEN = frozenset({State.PENDING, State.QUEUED, State.RUNNING, State.WAITING})

    # No index of its own: (run, state) and (run, key) below lead with it, and every
    # index is one more write on each of a step's several state changes.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps", db_index=False)
    step_id = models.CharField(max_length=100, help_text="The step's id in the spec.")
    key = models.CharField(max_length=120, help_text="step_id, or step_id[i] for a foreach item.")
    group = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="items"
    )
    item_index = models.PositiveIntegerField(null=True, blank=True)
    item = models.JSONField(null=True, blank=True)
    # No index of its own either: (state, queued_at) below leads with it, and each of a
    # step's state changes wrote both (two on PostgreSQL, with its LIKE index).
    state = models.CharField(max_length=16, choices=State, default=State.PENDING)
    skill = models.CharField(max_length=100)
    # Dependencies (or, for a group, items) not yet finished: the DAG's fan-in count.
    pending_deps = models.PositiveIntegerField(default=0)
    # Every dispatch gets a new generation; a delivery carrying an old one is stale.
    attempt = models.PositiveIntegerField(default=0)
    # Times the step started running; capped by retries + 1.
    tries = models.PositiveIntegerField(default=0)
    inputs = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    waiting_reason = models.CharField(max_length=500, blank=True)
    history = models.JSONField(default=list, help_text="Earlier tries: state, agent, error, times.")
    agent = models.CharField(max_length=64, blank=True, help_text="The agent that ran it.")
    queue = models.CharField(max_length=200, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="steprun_run_key")]
        permissions = [("approve_steprun", "Can approve or reject a step waiting for approval")]
        indexes = [
            models.Index(fields=["state", "queued_at"]),
            models.Index(fields=["agent", "state"]),
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.key} of run {self.run_id} ({self.state})"
