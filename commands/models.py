import secrets

from django.conf import settings
from django.db import models

from coordination.models import Run, Workflow

# The permission a command needs when its definition names none.
EXECUTE_PERMISSION = "commands.execute_command"
# Between the permissions of a built-in that needs any one of them (commands.registry).
ANY_OF = "|"


class Command(models.Model):
    """A slash command: `/name` or `/namespace:name`, its parameters and what it runs.

    One row per name; a changed definition bumps `version` (invocations record the
    version they ran) and points `workflow` at a new workflow version, which runs
    already started keep pinned.
    """

    class Overlap(models.TextChoices):
        ALLOW = "allow"
        SKIP = "skip"
        QUEUE = "queue"
        CANCEL_RUNNING = "cancel-running"

    name = models.CharField(max_length=100, unique=True, help_text="e.g. demo:release (no slash).")
    description = models.TextField(blank=True)
    argument_hint = models.CharField(
        max_length=500,
        blank=True,
        help_text="e.g. <version> [env]; positional arguments, in order.",
    )
    params = models.JSONField(default=dict, help_text="JSON Schema of the arguments.")
    # The definition as written (inline steps or `name@version`), kept so an edit in
    # admin can be re-validated and rebuilt like a file.
    definition = models.JSONField(default=dict, blank=True)
    workflow = models.ForeignKey(
        Workflow,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="commands",
        help_text="The workflow version a run of this command starts.",
    )
    builtin = models.CharField(
        max_length=64, blank=True, help_text="The handler of a built-in (/hive:*) command."
    )
    permission = models.CharField(
        max_length=200,
        default=EXECUTE_PERMISSION,
        help_text="app_label.codename; a built-in may take any one of several, split by |.",
    )
    approval = models.CharField(
        max_length=500,
        blank=True,
        help_text="A condition over params (params.env == 'prod') that makes the run "
        "wait for an approver.",
    )
    overlap = models.CharField(max_length=16, choices=Overlap, default=Overlap.ALLOW)
    overlap_key = models.CharField(
        max_length=500, blank=True, help_text="Template, e.g. deploy:{{ params.env }}."
    )
    # Flow control of its runs, over its workflow's (an invocation may override both).
    priority = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="0-9, higher goes first; none: its workflow's."
    )
    timeout = models.FloatField(
        null=True,
        blank=True,
        help_text="Seconds a run may take before it is cancelled; none: its workflow's.",
    )
    enabled = models.BooleanField(default=True)
    body = models.TextField(blank=True, help_text="Help text; steps see it as {{ prompt }}.")
    source = models.CharField(max_length=500, blank=True, help_text="File it was loaded from.")
    version = models.PositiveIntegerField(default=1)
    digest = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [("execute_command", "Can execute slash commands")]

    def __str__(self) -> str:
        return f"/{self.name}"


class Invocation(models.Model):
    """The audit record of one command: who typed what, from where, and what came of it.
    Denied and invalid attempts are recorded too."""

    class Source(models.TextChoices):
        DASHBOARD = "dashboard"
        API = "api"
        CLI = "cli"
        SCHEDULE = "schedule"
        WEBHOOK = "webhook"

    class Outcome(models.TextChoices):
        STARTED = "started"  # a run started
        QUEUED = "queued"  # waits for the open run with its overlap key to end
        SKIPPED = "skipped"  # a run with its overlap key was open
        DONE = "done"  # a built-in command answered
        PLANNED = "planned"  # a dry run: nothing started
        INVALID = "invalid"  # unknown command, bad arguments
        DENIED = "denied"  # the user lacks the permission
        FAILED = "failed"  # valid and allowed, but it could not be carried out

    # A paused run is open: it holds its overlap key until it ends.
    OPEN_RUN_STATES = tuple(state for state in Run.State if state not in Run.TERMINAL)

    command = models.ForeignKey(
        Command, null=True, blank=True, on_delete=models.SET_NULL, related_name="invocations"
    )
    command_name = models.CharField(max_length=200, blank=True, help_text="As typed.")
    command_version = models.PositiveIntegerField(null=True, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    source = models.CharField(max_length=16, choices=Source)
    text = models.TextField(help_text="The raw command text.")
    args = models.JSONField(default=dict, blank=True, help_text="The parsed, validated arguments.")
    dry_run = models.BooleanField(default=False)
    # What the invocation asked of its run over the command's (kept for a queued one).
    priority = models.PositiveSmallIntegerField(null=True, blank=True, help_text="0-9.")
    deadline = models.FloatField(
        null=True, blank=True, help_text="Seconds its run may take before it is cancelled."
    )
    outcome = models.CharField(max_length=16, choices=Outcome, db_index=True)
    error = models.TextField(blank=True)
    output = models.JSONField(
        null=True, blank=True, help_text="A built-in's answer, or a dry run's plan."
    )
    # The rendered overlap key: finding an open run with the same key is one query.
    overlap_key = models.CharField(max_length=500, blank=True, db_index=True)
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="invocations"
    )
    schedule = models.CharField(
        max_length=200, blank=True, help_text="The periodic task that sent it."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="When the outcome was decided (a queued one: started)."
    )

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"invocation {self.pk}: {self.text[:60]} ({self.outcome})"


class Schedule(models.Model):
    """Hive's record of a schedule that runs a command (a django-celery-beat
    PeriodicTask): the user it runs as and the text it runs, written when an
    authorised user makes it (the API, /hive:schedule) or saves it in the admin.

    The PeriodicTask's kwargs are editable by anyone with the periodic-task
    permissions (a staff user in the admin), so a firing never reads who or what
    from them: kwargs naming `user_id: 1` ran the command as the admin."""

    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="hive_schedule",
    )
    # Kept when the user is deleted: the schedule stays listed, and each firing is denied.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.TextField(help_text="The command text it runs, as its owner typed it.")

    def __str__(self) -> str:
        return f"schedule {self.pk}: {self.text[:60]}"


def trigger_secret() -> str:
    return secrets.token_hex(32)


class Trigger(models.Model):
    """An inbound webhook (`POST /hooks/<name>`) bound to a command template: a body
    signed with its secret runs the rendered command as its user, like anyone's."""

    name = models.SlugField(max_length=100, unique=True, help_text="Its address: /hooks/<name>.")
    command = models.TextField(
        help_text="The command text it runs, a template over the JSON body and headers: "
        "/demo:release {{ body.ref | replace('refs/tags/v', '') }}"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Whom the command runs as: their permissions apply.",
    )
    # Kept as given, not hashed: every delivery's HMAC is computed with it.
    secret = models.CharField(
        max_length=200, default=trigger_secret, help_text="The HMAC-SHA256 key of the body."
    )
    enabled = models.BooleanField(default=True)
    rejected_count = models.PositiveBigIntegerField(
        default=0, help_text="Deliveries refused for a missing or bad signature."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"trigger {self.name}"


class TriggerDelivery(models.Model):
    """The answer to one delivery id of a trigger, kept a few minutes so a replay gets
    the first answer rather than running the command again."""

    trigger = models.ForeignKey(Trigger, on_delete=models.CASCADE, related_name="deliveries")
    delivery_id = models.CharField(max_length=200)
    status = models.PositiveSmallIntegerField(null=True, help_text="None while being answered.")
    response = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["trigger", "delivery_id"], name="trigger_delivery_once")
        ]

    def __str__(self) -> str:
        return f"delivery {self.delivery_id} of {self.trigger_id}"
