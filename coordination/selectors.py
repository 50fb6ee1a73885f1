"""Reads of workflows, runs and steps, for the API, the dashboard and the CLI."""

from datetime import timedelta

from django.db.models import Count, OuterRef, Prefetch, QuerySet, Subquery
from django.utils import timezone

from agents.models import Agent
from agents.selectors import agent_list
from coordination.models import Run, StepRun, Workflow
from hive_core.db import filter_given
from hive_core.visibility import user_sees_all


def workflow_latest_list() -> QuerySet[Workflow]:
    """The newest version of every workflow, by name."""
    newest = Workflow.objects.filter(name=OuterRef("name")).order_by("-version").values("pk")[:1]
    return Workflow.objects.filter(pk=Subquery(newest)).order_by("name")


def workflow_versions(*, name: str) -> QuerySet[Workflow]:
    return Workflow.objects.filter(name=name).order_by("-version")


def workflow_get(*, name: str, version: int | None = None) -> Workflow:
    """A version of `name`, the newest by default; Workflow.DoesNotExist if none."""
    versions = workflow_versions(name=name)
    if version is not None:
        return versions.get(version=version)
    return versions[:1].get()


def run_visible_list(*, user) -> QuerySet[Run]:
    """The runs `user` may see: all of them for staff and holders of
    `coordination.view_run`, otherwise the runs they started."""
    runs = Run.objects.select_related("workflow", "created_by").defer("workflow__spec")
    if run_sees_all(user=user):
        return runs
    return runs.filter(created_by=user)


def run_list(
    *,
    user,
    state: str = "",
    workflow: str = "",
    command: str = "",
    started_by: str = "",
    since=None,
    until=None,
) -> QuerySet[Run]:
    runs = run_visible_list(user=user)
    if command:
        # Runs are started by at most one invocation each; the join adds no duplicates.
        runs = runs.filter(invocations__command_name=command.lstrip("/"))
    return filter_given(
        runs,
        state=state,
        workflow__name=workflow,
        created_by__username=started_by,
        created_at__gte=since,
        created_at__lt=until,
    )


def run_get(*, user, pk: int) -> Run:
    """One visible run with its workflow's spec and every step; Run.DoesNotExist if the
    user may not see it."""
    steps = Prefetch("steps", queryset=StepRun.objects.order_by("id"))
    return (
        Run.objects.select_related("workflow", "created_by", "parent_step")
        .prefetch_related(steps)
        .filter(pk__in=run_visible_list(user=user).values("pk"))
        .get(pk=pk)
    )


def step_get(*, run: Run, key: str) -> StepRun:
    return StepRun.objects.select_related("run").get(run=run, key=key)


def run_sees_all(*, user) -> bool:
    """Whether `user` may see every run (the rule of run_visible_list)."""
    return user_sees_all(user=user, permission="coordination.view_run")


def run_visible_ids(*, user, ids) -> set[int]:
    """Those of the run ids `ids` that `user` may see (one query)."""
    return set(run_visible_list(user=user).filter(pk__in=list(ids)).values_list("pk", flat=True))


def run_state_counts(*, user) -> dict[str, int]:
    """The runs `user` may see, by state, every state present."""
    counts = dict.fromkeys(Run.State.values, 0)
    rows = run_visible_list(user=user).order_by().values_list("state").annotate(n=Count("pk"))
    for state, n in rows:
        counts[state] = n
    return counts


# The latencies are those of the newest steps this many: the overview asks twice a
# second while runs go on, and a busy pool finishes ~100,000 steps in five minutes.
THROUGHPUT_SAMPLE = 1000


def step_throughput(*, minutes: int = 5) -> dict:
    """Steps finished in the last `minutes` (all users': a figure of the pool's, naming
    no run): how many, per minute, and the p50 and p95 of queued-to-finished seconds
    of the newest THROUGHPUT_SAMPLE of them."""
    since = timezone.now() - timedelta(minutes=minutes)
    done = StepRun.objects.filter(
        finished_at__gte=since, state=StepRun.State.SUCCEEDED, queued_at__isnull=False
    )
    finished = done.count()
    rows = done.order_by("-finished_at").values_list("queued_at", "finished_at")
    seconds = sorted((end - queued).total_seconds() for queued, end in rows[:THROUGHPUT_SAMPLE])

    def quantile(q: float) -> float | None:
        return seconds[min(len(seconds) - 1, int(q * len(seconds)))] if seconds else None

    return {
        "minutes": minutes,
        "finished": finished,
        "per_minute": finished / minutes,
        "p50": quantile(0.5),
        "p95": quantile(0.95),
    }


def agent_cards() -> list[Agent]:
    """Every agent with `current`: the (run id, step key) of each step it runs now (one
    query for all agents)."""
    agents = list(agent_list())
    running: dict[str, list[tuple[int, str]]] = {}
    rows = StepRun.objects.filter(state=StepRun.State.RUNNING).exclude(agent="")
    for agent, run_id, key in rows.values_list("agent", "run_id", "key").order_by("id"):
        running.setdefault(agent, []).append((run_id, key))
    for agent in agents:
        agent.current = running.get(agent.name, [])
    return agents


def run_outputs(run: Run) -> dict:
    """The outputs of a run's last steps (those no other step needs): what it produced
    (`hive run --wait` prints them; a sub-workflow's step ends with them)."""
    steps = run.workflow.spec["steps"]
    needed = {need for step in steps for need in step["needs"]}
    last = [s["id"] for s in steps if s["id"] not in needed]
    found = getattr(run, "top_steps", None)
    if found is None:
        found = run.steps.filter(group=None, step_id__in=last)
    return {s.key: s.output for s in found if s.step_id in last and s.state == "succeeded"}


def run_children(*, run: Run) -> QuerySet[Run]:
    """The runs the steps of `run` started (sub-workflows), oldest first."""
    return Run.objects.filter(parent_step__run=run).order_by("pk")
