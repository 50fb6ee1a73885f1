from django.db import models


class Event(models.Model):
    """A typed, sequenced record of one state change: what the dashboard and the audit
    trail show. The primary key is the sequence number clients resume from."""

    kind = models.CharField(max_length=64, help_text="e.g. agent.offline")
    subject = models.CharField(max_length=200, db_index=True, help_text="e.g. agent:builder")
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.subject}"
