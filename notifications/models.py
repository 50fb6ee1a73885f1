from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Q

OUTCOMES = ("failed", "waiting", "succeeded")


class Subscription(models.Model):
    """A user or a group following the outcomes of one command's runs, one workflow's,
    or (neither) every run its subscriber may see."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
        related_name="notification_subscriptions",
    )  # fmt: skip
    group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.CASCADE,
        related_name="notification_subscriptions",
    )  # fmt: skip
    command = models.ForeignKey(
        "commands.Command", null=True, blank=True, on_delete=models.CASCADE,
        related_name="notification_subscriptions",
    )  # fmt: skip
    workflow = models.CharField(max_length=200, blank=True, help_text="A workflow's name.")
    outcomes = models.JSONField(
        default=list, help_text="Any of: failed, waiting (for approval), succeeded."
    )
    email = models.BooleanField(default=False, help_text="Mail the user (each group member).")
    webhook_url = models.URLField(max_length=500, blank=True)
    webhook_secret = models.CharField(
        max_length=200, blank=True, help_text="Signs the body: X-Hive-Signature-256."
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, group__isnull=True)
                | Q(user__isnull=True, group__isnull=False),
                name="subscription_user_or_group",
            ),
            models.CheckConstraint(
                condition=Q(command__isnull=True) | Q(workflow=""),
                name="subscription_command_or_workflow",
            ),
        ]

    def __str__(self) -> str:
        who = self.user or f"group {self.group}"
        what = f"/{self.command.name}" if self.command_id else self.workflow or "every run"
        return f"{who}: {what} {','.join(self.outcomes)}"


class Delivery(models.Model):
    """One notice of one run's outcome by one channel to one recipient, and its tries."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    class Channel(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    run = models.ForeignKey(
        "coordination.Run", on_delete=models.CASCADE, related_name="notification_deliveries"
    )
    outcome = models.CharField(max_length=20)
    channel = models.CharField(max_length=20, choices=Channel.choices)
    recipient = models.CharField(max_length=500, help_text="An email address or a URL.")
    # Whom the notice is for: the subscriber, or the group member it mails.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
        related_name="notification_deliveries",
    )  # fmt: skip
    event = models.ForeignKey(
        "events.Event", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    attempt_log = models.JSONField(default=list, help_text="Each try: at, error, status.")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "run", "outcome", "channel", "recipient"],
                name="delivery_once",
            )
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"run {self.run_id} {self.outcome} by {self.channel} to {self.recipient}"


class Cursor(models.Model):
    """The last event the notifications pass has read: one row, advanced in the
    transaction that creates the deliveries of the events before it."""

    name = models.CharField(max_length=50, unique=True)
    last_event_id = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} at event {self.last_event_id}"
