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
