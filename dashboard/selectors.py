"""Reads of the event log: what live clients catch up from."""

from django.db.models import CharField, Q, QuerySet, Value
from django.db.models.functions import Cast, Concat

from coordination.selectors import run_visible_list
from dashboard.models import Event


def event_list(*, user) -> QuerySet[Event]:
    """Events oldest first. A run's events are shown to those who may see the run;
    agents' and workflows' events to every user."""
    events = Event.objects.order_by("pk")
    if user.is_staff or user.has_perm("dashboard.view_event"):
        return events
    subjects = run_visible_list(user=user).annotate(
        subject=Concat(Value("run:"), Cast("pk", CharField()))
    )
    return events.filter(Q(subject__in=subjects.values("subject")) | ~Q(subject__startswith="run:"))


def event_last_seq() -> int:
    """The newest sequence number: a page rendered now is at least this new, and its
    live client catches up from here."""
    return Event.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def event_recent(*, user, limit: int = 20) -> list[Event]:
    """The newest events `user` may see, newest first."""
    return list(event_list(user=user).order_by("-pk")[:limit])
