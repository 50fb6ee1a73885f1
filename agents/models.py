from django.core.validators import RegexValidator
from django.db import models

from agents.identity import AGENT_SLUG_PATTERN

agent_slug = RegexValidator(
    AGENT_SLUG_PATTERN,
    "A lowercase slug: letters a-z, digits, - and _, starting with a letter or digit.",
)


class Agent(models.Model):
    """A worker node: one `hive agent` process (a Celery worker) and its identity."""

    class Status(models.TextChoices):
        STARTING = "starting"
        IDLE = "idle"
        BUSY = "busy"
        DRAINING = "draining"
        OFFLINE = "offline"

    name = models.SlugField(max_length=64, unique=True, validators=[agent_slug])
    role = models.SlugField(max_length=64, validators=[agent_slug])
    skills = models.JSONField(default=list, help_text="Names of the skills this agent offers.")
    concurrency = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status, default=Status.STARTING, db_index=True)
    node = models.CharField(
        max_length=255,
        blank=True,
        help_text="The Celery worker name (name@host), as Flower shows it.",
    )
    host = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    version = models.CharField(max_length=32, blank=True)
    load = models.FloatField(default=0.0, help_text="Steps running / concurrency.")
    started_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.role}, {self.status})"

    @property
    def online(self) -> bool:
        return self.status != self.Status.OFFLINE

    @property
    def accepts_work(self) -> bool:
        """Consuming its queues: starting agents soon will, draining ones no longer do."""
        return self.status in {self.Status.STARTING, self.Status.IDLE, self.Status.BUSY}


class Message(models.Model):
    """One agent-to-agent message: the record, written before the message enters its
    Redis stream and marked handled in the same transaction as the handler's effects.

    Redis carries it; this row says what happened to it (agents/mailbox.py, inbox.py).
    """

    class State(models.TextChoices):
        PENDING = "pending"  # in its stream (or about to be), not handled yet
        HANDLED = "handled"  # a handler ran and its effects committed
        DEAD = "dead"  # moved to the dead-letter stream with its error

    stream = models.CharField(max_length=200, help_text="The inbox stream, e.g. hive:inbox:a.")
    stream_id = models.CharField(
        max_length=32,
        blank=True,
        help_text="The entry's id in its stream, recorded when it is handled or dead-lettered.",
    )
    sender = models.CharField(max_length=100, help_text="An agent, user:NAME or cli.")
    recipient = models.CharField(max_length=100, help_text="An agent, or role:NAME.")
    kind = models.CharField(max_length=100)
    payload = models.JSONField(default=dict, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True)
    reply_to = models.CharField(
        max_length=200, blank=True, help_text="The requester's reply stream (request/reply)."
    )
    idempotency_key = models.CharField(
        max_length=200, blank=True, help_text="Sending again with the same key sends nothing."
    )
    state = models.CharField(max_length=16, choices=State, default=State.PENDING)
    deliveries = models.PositiveIntegerField(default=0, help_text="Times Redis delivered it.")
    consumer = models.CharField(max_length=200, blank=True, help_text="AGENT:PID that handled it.")
    result = models.JSONField(null=True, blank=True, help_text="The reply sent back to a request.")
    error = models.TextField(blank=True, help_text="The last handler error.")
    created_at = models.DateTimeField(auto_now_add=True)
    handled_at = models.DateTimeField(null=True, blank=True)
    acked_at = models.DateTimeField(null=True, blank=True)
    dead_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="message_idempotency_key",
            ),
        ]
        # Few indexes, on purpose: each is written on every send and every claim, and
        # with nine the claim took 40% longer (bench/messaging.py). The API lists by
        # recipient or sender; the inbox's sweep reads the pending rows of its streams
        # (a partial index: rows leave it when handled).
        indexes = [
            models.Index(fields=["recipient"], name="message_recipient"),
            models.Index(fields=["sender"], name="message_sender"),
            models.Index(
                fields=["stream"], condition=models.Q(state="pending"), name="message_pending"
            ),
        ]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.sender} -> {self.recipient} ({self.state})"
