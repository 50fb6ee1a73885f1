"""Runs under faults: starting them where the test's Redis is, and counting what a
fault cost them from the record (the database)."""

import json
from collections import Counter

from coordination.models import Run, StepRun
from events.models import Event
from ops.metrics import REAPER_COUNTS_KEY
from tests.processes import wait_for


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


def fan_out(make_workflow, *, seconds: float = 0.05):
    """A foreach of `sleep` steps, one per item of params.numbers, then one `noop`."""
    return make_workflow(
        [
            {"id": "work", "skill": "sleep", "foreach": "{{ params.numbers }}",
             "with": {"seconds": seconds}},
            {"id": "after", "skill": "noop", "needs": "work"},
        ]
    )  # fmt: skip


def start_run_on(processes, workflow, redis_url: str, *, items: int = 150) -> Run:
    """Start a run from a CLI process talking to `redis_url`, as an operator would."""
    before = set(Run.objects.filter(workflow=workflow).values_list("pk", flat=True))
    params = json.dumps({"numbers": list(range(items))})
    starter = processes.start(
        "workflow", "start", workflow.name, f"--params={params}",
        name=f"start-{len(before)}", REDIS_URL=redis_url,
    )  # fmt: skip
    starter.proc.wait(timeout=60)
    assert starter.proc.returncode == 0, starter.log()
    return Run.objects.filter(workflow=workflow).exclude(pk__in=before).get()


def under_way(run: Run, done: int = 20) -> None:
    wait_for(
        lambda: StepRun.objects.filter(run=run, state="succeeded").count() > done,
        timeout=60,
        what=f"run {run.pk} to be under way",
    )
