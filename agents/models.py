from django.db import models


class Agent(models.Model):
    """A worker node: one `hive agent` process (a Celery worker) and its identity."""

    class Status(models.TextChoices):
        STARTING = "starting"
        IDLE = "idle"
        BUSY = "busy"
        DRAINING = "draining"
        OFFLINE = "offline"

    name = models.SlugField(max_length=64, unique=True)
    role = models.SlugField(max_length=64)
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
