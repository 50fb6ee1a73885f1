"""Reads of the event log: what live clients catch up from."""

from datetime import timedelta

from django.db.models import CharField, Q, QuerySet, Value
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from agents.selectors import message_visible_list
from commands.models import Invocation
from coordination.selectors import run_visible_list
from events.models import Event
from hive_core.api import MAX_ID
from hive_core.visibility import user_sees_all

# Events about one user's work: a run's are shown to those who may see the run, an
# invocation's (it carries the text they typed) to its user, a message's (sent from
# the API or /hive:send; a dead one's error may quote it) to those who may see the
# message, a schedule's (the text they scheduled) to its owner. Events of agents,
# workflows and commands (the definitions) are everyone's.
PRIVATE_SUBJECTS = ("run", "invocation", "message", "schedule")


def event_sees_all(*, user) -> bool:
    """Whether `user` sees every event. Seeing every run is not enough: the events
    of others' commands and messages carry what those people typed."""
    return user_sees_all(user=user, permission="events.view_event")


def _visible_objects(*, user) -> dict[str, QuerySet]:
    """Per private kind but schedules, the objects whose events `user` may see: the
    rules of the runs', the audit's and the messages' own lists."""
    return {
        "run": run_visible_list(user=user),
        "invocation": Invocation.objects.filter(user=user),
        "message": message_visible_list(user=user),
    }


def event_list(*, user) -> QuerySet[Event]:
    """The events `user` may see, oldest first."""
    events = Event.objects.order_by("pk")
    if event_sees_all(user=user):
        return events
    visible = Q(subject__in=_schedule_subjects(user=user))
    for kind, objects in _visible_objects(user=user).items():
        subjects = objects.order_by().annotate(subject=_subject(kind)).values("subject")
        visible |= Q(subject__in=subjects)
    private = Q()
    for kind in PRIVATE_SUBJECTS:
        private |= Q(subject__startswith=f"{kind}:")
    return events.filter(visible | ~private)


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
    for kind, objects in _visible_objects(user=user).items():
        if ids[kind]:
            found = objects.filter(pk__in=ids[kind]).values_list("pk", flat=True)
            visible |= {f"{kind}:{pk}" for pk in found}
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


# The overview shows a process `hive up` restarted while its last word is this recent.
PROCESSES_SHOWN_FOR = timedelta(hours=1)
# A process flapping at the 30 s cap writes 120 events an hour: the newest few hundred
# hold the last word of every process of a stack.
PROCESS_EVENTS_READ = 500


def process_health() -> list[dict]:
    """The processes `hive up` restarted, found flapping or left down lately, each with
    its last word (`restarted`, `flapping`, `recovered`, `stopped`), name first. Events
    of processes are everyone's, like agents'."""
    since = timezone.now() - PROCESSES_SHOWN_FOR
    events = Event.objects.filter(subject__startswith="process:", created_at__gte=since)
    latest: dict[str, Event] = {}
    for event in events.order_by("-pk")[:PROCESS_EVENTS_READ]:
        latest.setdefault(event.subject, event)
    shown = []
    for subject, event in sorted(latest.items()):
        state = event.kind.partition(".")[2]
        if state == "restarted" and event.data.get("flapping"):
            state = "flapping"
        shown.append({
            "name": subject.partition(":")[2], "state": state, "at": event.created_at,
            "restarts": event.data.get("restarts"), "exit": event.data.get("exit", ""),
        })  # fmt: skip
    return shown
