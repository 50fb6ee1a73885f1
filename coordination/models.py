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
        PENDING = "pending"  # in line for its workflow's concurrency key
        RUNNING = "running"
        WAITING = "waiting"
        PAUSED = "paused"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})
    # The states of a run that holds a slot of its workflow's concurrency key.
    STARTED = frozenset({State.RUNNING, State.WAITING, State.PAUSED})

    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="runs")
    state = models.CharField(max_length=16, choices=State, default=State.PENDING, db_index=True)
    params = models.JSONField(default=dict)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    rerun_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL)
    parent_step = models.ForeignKey(
        "StepRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="children",
        help_text="The step of another run that started this one (a sub-workflow).",
    )  # fmt: skip
    priority = models.PositiveSmallIntegerField(
        default=0, help_text="0-9: the default priority of its steps (higher goes first)."
    )
    deadline = models.DateTimeField(
        null=True, blank=True, help_text="Cancelled as 'deadline exceeded' if open after this."
    )
    concurrency_key = models.CharField(
        max_length=200, blank=True, help_text="Its workflow's concurrency key, rendered."
    )
    waiting_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # Partial: most runs have neither, and an index is one more write per change.
            models.Index(
                fields=["concurrency_key", "state"],
                condition=~models.Q(concurrency_key=""),
                name="run_concurrency_key",
            ),
            models.Index(
                fields=["deadline"], condition=models.Q(deadline__isnull=False), name="run_deadline"
            ),
        ]

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
    priority = models.PositiveSmallIntegerField(default=0, help_text="0-9, higher goes first.")
    # Flow control (coordination.flow): the keys the step holds a slot of while queued
    # or running, and counts its starts against; rendered when it is dispatched.
    concurrency_key = models.CharField(max_length=200, blank=True)
    rate_key = models.CharField(max_length=200, blank=True)
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
            models.Index(
                fields=["concurrency_key", "state"],
                condition=~models.Q(concurrency_key=""),
                name="steprun_concurrency_key",
            ),
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.key} of run {self.run_id} ({self.state})"


# A rate's window keeps one start time per slot in its key's row: bounded.
RATE_LIMIT_MAX = 10_000
RATE_PER_MAX = 86_400


class FlowKey(models.Model):
    """A flow control key: the row every step or run counted against it locks while it
    is counted, the recent starts its rate limit counts, and the operator's rate limit.

    Rows are made as keys are first used. An operator's limit on `skill:<name>` holds
    for every step of that skill; on any other key it overrides the `rate:` of the
    steps that use it.
    """

    key = models.CharField(max_length=200, unique=True)
    rate_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many starts per `rate_per` seconds."
    )
    rate_per = models.FloatField(null=True, blank=True, help_text="The rate's window, seconds.")
    starts = models.JSONField(
        default=list, blank=True, help_text="Start times (epoch seconds) in the latest window."
    )

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if (self.rate_limit is None) != (self.rate_per is None):
            raise ValidationError("Give both rate_limit and rate_per, or neither.")
        if self.rate_limit is not None and not 1 <= self.rate_limit <= RATE_LIMIT_MAX:
            raise ValidationError({"rate_limit": f"From 1 to {RATE_LIMIT_MAX}."})
        if self.rate_per is not None and not 0 < self.rate_per <= RATE_PER_MAX:
            raise ValidationError({"rate_per": f"More than 0, at most {RATE_PER_MAX} s."})


class Signal(models.Model):
    """A named message to a run (API, /hive:signal): it ends the first step waiting for
    that name (`wait_for`), its payload the step's output. One sent while no step waits
    for it is kept, and ends the first step that does."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="signals")
    name = models.CharField(max_length=100)
    payload = models.JSONField(null=True, blank=True)
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    source = models.CharField(max_length=20, blank=True, help_text="api, command, ...")
    step = models.ForeignKey(
        StepRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The step it ended; none while it waits for one.",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["run", "name"])]

    def __str__(self) -> str:
        return f"signal {self.name!r} to run {self.run_id}"
