"""What a fault cost a run, counted from the record (the database)."""

from collections import Counter

from coordination.models import Run, StepRun
from dashboard.models import Event
from hive_project.metrics import REAPER_COUNTS_KEY


def succeeded_once(run: Run) -> Counter:
    """How many times each step's success was recorded (one event per stored result)."""
    events = Event.objects.filter(subject=f"run:{run.pk}", kind="step.succeeded")
    return Counter(e.data["step"] for e in events)


def run_counts(*runs: Run, redis_client=None) -> dict[str, int]:
    """lost: steps that did not succeed; duplicated: successes recorded more than once;
    recovered: steps tried again (their agent died) plus, when `redis_client` is the
    Redis the coordinator used, queued steps whose message Redis lost and the reaper
    sent again (its `resent` count, which only this test's coordinator wrote)."""
    steps = StepRun.objects.filter(run__in=runs)
    duplicated = sum(n - 1 for run in runs for n in succeeded_once(run).values() if n > 1)
    resent = 0
    if redis_client is not None:
        resent = int(redis_client.hget(REAPER_COUNTS_KEY, "resent") or 0)
    return {
        "lost": steps.exclude(state=StepRun.State.SUCCEEDED).count(),
        "duplicated": duplicated,
        "recovered": steps.filter(tries__gt=1).count() + resent,
    }
