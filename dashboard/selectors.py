"""Reads of the event log: what live clients catch up from."""

from django.db.models import CharField, Q, QuerySet, Value
from django.db.models.functions import Cast, Concat

from commands.models import Invocation
from coordination.selectors import run_sees_all, run_visible_ids, run_visible_list
from dashboard.models import Event
from hive_project.api import MAX_ID

# Events about one user's work: a run's are shown to those who may see the run, an
# invocation's (it carries the text they typed) to its user, a schedule's (the text
# they scheduled) to its owner. Events of agents, workflows and commands (the
# definitions) are everyone's.
PRIVATE_SUBJECTS = ("run", "invocation", "schedule")


def event_sees_all(*, user) -> bool:
    return run_sees_all(user=user) or user.has_perm("dashboard.view_event")


def event_list(*, user) -> QuerySet[Event]:
    """The events `user` may see, oldest first."""
    events = Event.objects.order_by("pk")
    if event_sees_all(user=user):
        return events
    runs = run_visible_list(user=user).annotate(subject=_subject("run"))
    invocations = Invocation.objects.filter(user=user).annotate(subject=_subject("invocation"))
    private = Q()
    for kind in PRIVATE_SUBJECTS:
        private |= Q(subject__startswith=f"{kind}:")
    return events.filter(
        Q(subject__in=runs.values("subject"))
        | Q(subject__in=invocations.values("subject"))
        | Q(subject__in=_schedule_subjects(user=user))
        | ~private
    )


def event_subjects_visible(*, user, subjects: set[str]) -> set[str]:
    """Those of event `subjects` whose events `user` may see: the rule of event_list,
    for events already in hand (the live feed), in a query per private kind at most."""
    if event_sees_all(user=user):
        return set(subjects)
    ids: dict[str, set[int]] = {kind: set() for kind in PRIVATE_SUBJECTS}
    visible = set()
    for subject in subjects:
        kind, _, pk = subject.partition(":")
        if kind not in ids:
            visible.add(subject)
        elif pk.isdigit() and int(pk) <= MAX_ID:
            ids[kind].add(int(pk))
    if ids["run"]:
        visible |= {f"run:{pk}" for pk in run_visible_ids(user=user, ids=ids["run"])}
    if ids["invocation"]:
        mine = Invocation.objects.filter(user=user, pk__in=ids["invocation"])
        visible |= {f"invocation:{pk}" for pk in mine.values_list("pk", flat=True)}
    if ids["schedule"]:
        asked = [f"schedule:{pk}" for pk in ids["schedule"]]
        visible |= set(_schedule_subjects(user=user).filter(subject__in=asked))
    return visible


def _schedule_subjects(*, user) -> QuerySet:
    """The subjects of the schedules `user` owns. Every schedule event names its owner
    (commands/services.py), and a removed schedule has no row left to ask."""
    events = Event.objects.filter(subject__startswith="schedule:", data__owner=user.pk)
    return events.order_by().values_list("subject", flat=True)


def _subject(kind: str):
    return Concat(Value(f"{kind}:"), Cast("pk", CharField()))


def event_last_seq() -> int:
    """The newest sequence number: a page rendered now is at least this new, and its
    live client catches up from here."""
    return Event.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def event_recent(*, user, limit: int = 20) -> list[Event]:
    """The newest events `user` may see, newest first."""
    return list(event_list(user=user).order_by("-pk")[:limit])
