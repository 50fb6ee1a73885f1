"""The DAG state machine: runs and steps change state here, and only here.

Every change to a run's DAG happens inside an `Engine`, a transaction holding the
run's row lock (SQLite's IMMEDIATE transactions serialize writers the same way), so
fan-in counting and run completion are decided in the database, never by Celery
chords. Steps are sent to agents after commit (coordination.dispatch); a delivery is
only a hint: the agent claims the step with a conditional update, and a result is
stored only if the step is still running the same attempt.

A step that finished takes one path: `step_end` stores a try's result; `Engine.done`
counts down what waited for a step that succeeded (or was skipped, or failed with
on_failure: continue), be it the steps needing it or its foreach group, and starts
what that readied; `Engine.fail` retries or fails a step, and maybe the run.
"""

import functools
import logging
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.routing import RoutingError
from agents.skills.registry import schema_problem
from coordination import dispatch, flow
from coordination.errors import RunConflict, RunError
from coordination.models import Run, Signal, StepRun, Workflow
from coordination.selectors import run_outputs
from coordination.spec import WAIT_MAX, spec_dependents, step_wait, workflow_ref
from coordination.sql import step_event_emit, step_update, steps_update
from coordination.templates import TemplateError, evaluate, render
from events.kinds import run_subject
from events.services import event_emit
from hive_core.jsondata import SchemaValidator, json_problem
from hive_core.sql import Add

logger = logging.getLogger(__name__)

# States that let the steps needing this one go ahead ("none failed").
SATISFIED = frozenset({StepRun.State.SUCCEEDED, StepRun.State.SKIPPED})
# What a step's dispatch writes to its row.
_DISPATCH_FIELDS = (
    "state", "queue", "waiting_reason", "attempt", "task_id", "queued_at", "next_attempt_at",
    "inputs", "concurrency_key", "rate_key",
)  # fmt: skip


def step_end(
    *,
    step: StepRun,
    state: str,
    here: dispatch.Continuation | None = None,
    retryable: bool = True,
    **values,
) -> bool:
    """A running try of `step` (as claimed) ended in `state`, succeeded or failed:
    store it with `values` (its output; its error and traceback) and carry the run on;
    False if the step has moved on (a stale result). With `here`, a step this
    dispatches may be kept for the calling task to run.

    The run's lock, the step's end and its event, and the count down of what waits
    for it (the steps needing it) are one statement on PostgreSQL (see
    `sql.step_update`): a chain's every step waits on these round trips.
    """
    succeeded = state == StepRun.State.SUCCEEDED
    if succeeded and step.group_id is not None:
        return _item_succeed(step, values)
    graph, count_down = None, None
    if succeeded:
        graph = workflow_graph(step.workflow_digest, step.workflow_id)
        waiting = graph[1][step.step_id]
        # A top-level step's key is its id: the (run, key) index finds them.
        if waiting:
            count_down = {"run_id": step.run_id, "group_id": None, "key": waiting}
    with transaction.atomic():
        ended = _try_end(step, state, values, lock_run=step.run_id, count_down=count_down)
        if ended is None:
            return False
        graph = graph or workflow_graph(ended.workflow_digest, ended.workflow_id)
        engine = Engine(step.run_id, run=ended.run, graph=graph, here=here)
        engine.freed(ended)
        if succeeded:
            engine.done(ended, counted=ended.counted)
        else:
            engine.fail(ended, ended.error, retryable=retryable, finished=True)
        engine.settle()
    return True


def _item_succeed(item: StepRun, values: dict) -> bool:
    """A foreach item succeeded: count it down on its group, without the run's lock.

    Items of one group finish side by side on many agents. Only the group's
    counter row is shared, decremented last so its row lock is held until an
    immediate commit. The item that brings the count to zero completes the
    group in a second transaction that takes the run's lock first, as every
    other change to the run does, so no two transactions wait on each other
    in opposite order. Should this process die between the two, the reaper
    completes the group.
    """
    state = StepRun.State.SUCCEEDED
    ended = _try_end(item, state, values, lock_run=None, count_down={"id": item.group_id})
    if ended is None:
        return False
    if ended.concurrency_key:
        transaction.on_commit(lambda: capacity_wake(ended.concurrency_key))
    if ended.counted[0].pending_deps == 0:
        group_complete(group_id=item.group_id)
    return True


def _try_end(step: StepRun, state: str, values: dict, **statement) -> StepRun | None:
    return step_update(
        step.pk,
        where={"state": StepRun.State.RUNNING, "attempt": step.attempt},
        announce=f"step.{state}",
        state=state,
        finished_at=timezone.now(),
        lease_until=None,
        **statement,
        **values,
    )


def capacity_wake(key: str) -> int:
    """Start the steps waiting for a slot of `key`, head of the line first, while it
    has room (a slot freed, or the reaper looks); how many started."""
    started = 0
    while True:
        head = (
            StepRun.objects.filter(
                concurrency_key=key,
                state=StepRun.State.PENDING,
                waiting_reason__startswith=flow.WAIT_CAPACITY,
            )
            .order_by("-priority", "queued_at", "id")
            .values_list("pk", "run_id")
            .first()
        )
        if head is None:
            return started
        with transaction.atomic():
            engine = Engine(head[1])
            step = engine.step(head[0])
            if step.state == StepRun.State.PENDING and step.waiting_reason.startswith(
                flow.WAIT_CAPACITY
            ):
                engine.dispatch(step)
            engine.settle()
        if step.waiting_reason.startswith(flow.WAIT_CAPACITY):
            return started  # the line's head still waits: so does everyone behind it
        started += step.state == StepRun.State.QUEUED


def run_capacity_wake(key: str) -> int:
    """Start the runs waiting in line for `key`, while it has room; how many started."""
    started = 0
    while True:
        head = (
            Run.objects.filter(concurrency_key=key, state=Run.State.PENDING)
            .order_by("-priority", "id")
            .values_list("pk", flat=True)
            .first()
        )
        if head is None:
            return started
        with transaction.atomic():
            engine = Engine(head)
            if engine.run.state == Run.State.PENDING:
                engine.begin()
            engine.settle()
        if engine.run.state == Run.State.PENDING:
            return started
        started += 1


def run_create(
    *,
    workflow: Workflow,
    params: dict,
    user_id: int | None,
    priority: int,
    deadline,
    concurrency_key: str,
    rerun_of: Run | None = None,
    parent_step: StepRun | None = None,
) -> Run:
    """Create a run of `workflow` (its params checked already) and its steps, and start
    it (or queue it behind its concurrency key), in the caller's transaction; what it
    dispatches is sent once that commits."""
    run = Run.objects.create(
        workflow=workflow, params=params, state=Run.State.RUNNING, created_by_id=user_id,
        rerun_of=rerun_of, parent_step=parent_step, priority=priority, deadline=deadline,
        concurrency_key=concurrency_key,
    )  # fmt: skip
    StepRun.objects.bulk_create(
        StepRun(
            run=run, step_id=s["id"], key=s["id"], skill=s["skill"],
            pending_deps=len(s["needs"]),
            priority=run.priority if s.get("priority") is None else s["priority"],
        )
        for s in workflow.spec["steps"]
    )  # fmt: skip
    data = {"workflow": str(workflow), "params": params}
    if parent_step is not None:
        data["parent"] = {"run": parent_step.run_id, "step": parent_step.key}
    event_emit(kind="run.started", subject=run_subject(run.pk), data=data)
    engine = Engine(run.pk)
    engine.begin()
    engine.settle()
    return run


def child_end(*, run_id: int) -> None:
    """Run `run_id`, a sub-workflow, ended: its parent's step ends with it (succeeded,
    its outputs the step's; else failed), unless that step has moved on."""
    child = Run.objects.select_related("workflow").get(pk=run_id)
    parent = StepRun.objects.filter(pk=child.parent_step_id).values_list("run_id", flat=True)
    if not parent:
        return
    with transaction.atomic():
        engine = Engine(parent[0])
        step = engine.step(child.parent_step_id)
        if step.state != StepRun.State.WAITING or step.waiting_reason != child_reason(run_id):
            return  # cancelled, or retried with a new child since
        if child.state == Run.State.SUCCEEDED:
            engine.end_waiting(step, run_outputs(child), run=run_id)
        else:
            why = f": {child.error}" if child.error else ""
            engine.fail(step, f"workflow: run {run_id} {child.state}{why}", retryable=False)
        engine.settle()


def run_cancel_with_parent(*, run_id: int, parent: int) -> None:
    """Run `parent` ended: its open child `run_id` is cancelled with it."""
    with transaction.atomic():
        engine = Engine(run_id)
        if engine.run.state not in Run.TERMINAL:
            engine.finish_run(Run.State.CANCELLED, f"cancelled with its parent run {parent}")


def child_reason(run_id: int) -> str:
    """The waiting reason of a step waiting for its sub-workflow's run."""
    return f"waiting for run {run_id}"


def group_complete(*, group_id: int) -> None:
    """Every item of a foreach group has finished: complete it and carry the run on."""
    with transaction.atomic():
        engine = Engine(StepRun.objects.values_list("run_id", flat=True).get(pk=group_id))
        engine.group_complete(engine.step(group_id))
        engine.settle()


@lru_cache(maxsize=256)
def workflow_graph(digest: str, workflow_id: int) -> tuple[dict, dict, dict]:
    """A spec's steps by id, who needs each, and the rest of the spec (its flow control),
    cached by the spec's digest: a digest always means the same spec, even if a row id
    is ever reused."""
    spec = Workflow.objects.values_list("spec", flat=True).get(pk=workflow_id)
    rest = {name: value for name, value in spec.items() if name != "steps"}
    return {s["id"]: s for s in spec["steps"]}, spec_dependents(spec), rest


def signal_reason(name: str) -> str:
    """The waiting reason of a step waiting for the signal `name`."""
    return f"waiting for signal {name!r}"


def _wake_time(spec: dict, kind: str, context: dict, now):
    """When a `sleep` (seconds) or `sleep_until` (an ISO 8601 time) step ends, rendered."""
    value = render(spec[kind], context) if isinstance(spec[kind], str) else spec[kind]
    if kind == "sleep":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TemplateError(f"expected a number of seconds, got {value!r}")
        try:
            seconds = float(value)
        except ValueError:
            raise TemplateError(f"expected a number of seconds, got {value!r}") from None
        if not 0 <= seconds <= WAIT_MAX:
            raise TemplateError(f"{seconds:g} s is not from 0 to {WAIT_MAX} s")
        return now + timedelta(seconds=seconds)
    try:
        due = datetime.fromisoformat(str(value))
    except ValueError:
        raise TemplateError(f"expected an ISO 8601 time, got {value!r}") from None
    due = due if due.tzinfo else due.replace(tzinfo=UTC)
    if due > now + timedelta(seconds=WAIT_MAX):
        raise TemplateError(f"{due.isoformat()} is more than {WAIT_MAX} s away")
    return due


def _flow_keys(spec: dict, skill: str, context: dict) -> tuple[str, str]:
    """A step's concurrency and rate keys, rendered (a rate without a key is its
    skill's); a TemplateError names the field."""
    keys = []
    for field in ("concurrency", "rate"):
        flow_spec = spec.get(field)
        key = ""
        if flow_spec:
            try:
                key = str(render(flow_spec.get("key", flow.skill_key(skill)), context))
            except TemplateError as exc:
                raise TemplateError(f"{field}.key: {exc}") from None
            if not key or len(key) > 200:
                raise TemplateError(f"{field}.key: rendered to {len(key)} characters (1-200)")
        keys.append(key)
    return keys[0], keys[1]


class _StepResults(Mapping):
    """`steps.<id>.output` and `.state` for templates, read only when a template asks."""

    def __init__(self, queryset):
        self._queryset = queryset
        self._loaded: dict | None = None

    def _rows(self) -> dict:
        if self._loaded is None:
            rows = self._queryset.values_list("key", "output", "state")
            self._loaded = {key: {"output": out, "state": state} for key, out, state in rows}
        return self._loaded

    def __getitem__(self, key):
        return self._rows()[key]

    def __iter__(self):
        return iter(self._rows())

    def __len__(self) -> int:
        return len(self._rows())


class Engine:
    """One run's DAG inside a transaction that holds the run's row lock."""

    def __init__(
        self,
        run_id: int,
        *,
        run: Run | None = None,
        graph: tuple | None = None,
        here: dispatch.Continuation | None = None,
    ):
        """Lock run `run_id`'s row; or take `run` and its `graph` (of `workflow_graph`)
        from a statement of the caller's that has locked it already. With `here`, one
        step dispatched may be kept for the calling task (see dispatch.Continuation)."""
        if run is None:
            # Lock the run's row only (`of`): locking the workflow's too would make every
            # run of the workflow queue on it. The spec itself comes from the cache.
            run = (
                Run.objects.select_for_update(of=("self",))
                .select_related("workflow")
                .defer("workflow__spec")
                .get(pk=run_id)
            )
            graph = workflow_graph(run.workflow.digest, run.workflow_id)
        self.run = run
        self.spec, self.dependents, self.spec_run = graph
        self._maybe_waiting = self.run.state == Run.State.WAITING
        self._outbox: list[StepRun] = []
        self._here, self._kept = here, None
        self._revoke: list[str] = []
        self._router = dispatch.Router()
        self._capacity = flow.Capacity()
        # Concurrency keys a step (or this run) let go of: their lines move after commit.
        self._freed: set[str] = set()
        self._runs_freed: set[str] = set()
        # What runs after commit, each in a transaction of its own (sub-workflows).
        self._after: list = []
        transaction.on_commit(self._send)

    # reading

    def steps(self, **filters):
        return StepRun.objects.filter(run=self.run, **filters).order_by("id")

    def step(self, pk: int) -> StepRun:
        return StepRun.objects.get(pk=pk, run=self.run)

    def context(self, item: object = None) -> dict:
        steps = _StepResults(self.steps(group=None))
        return {"params": self.run.params, "steps": steps, "run": {"id": self.run.pk}, "item": item}

    def waiting_for_approval(self, pk: int) -> StepRun:
        step = self.step(pk)
        if step.state != StepRun.State.WAITING:
            raise RunConflict(f"step {step.key!r} is {step.state}, not waiting for approval")
        return step

    # the run's flow

    def begin(self) -> None:
        """Start the run: its steps that need nothing go ahead, unless its workflow's
        concurrency key is full and it waits in line (pending) for a slot."""
        run, limit = self.run, (self.spec_run.get("concurrency") or {}).get("limit")
        reason = flow.run_capacity_reason(run, limit=limit) if run.concurrency_key else ""
        if reason:
            if reason != run.waiting_reason:
                Run.objects.filter(pk=run.pk).update(state=Run.State.PENDING, waiting_reason=reason)
                event_emit(kind="run.pending", subject=run_subject(run.pk), data={"reason": reason})
            run.state, run.waiting_reason = Run.State.PENDING, reason
            return
        run.state, run.started_at, run.waiting_reason = Run.State.RUNNING, timezone.now(), ""
        Run.objects.filter(pk=run.pk).update(
            state=run.state, started_at=run.started_at, waiting_reason=""
        )
        for step in self.steps(pending_deps=0, group=None, state=StepRun.State.PENDING):
            self.ready(step)

    def pause(self, *, by: str) -> None:
        """Dispatch nothing new: ready and queued steps wait (`paused`), running ones
        finish, approvals can still be decided."""
        self.open_check("pause")
        if self.run.state == Run.State.PAUSED:
            raise RunConflict(f"run {self.run.pk} is already paused")
        reason = f"paused by {by}" if by else "paused"
        Run.objects.filter(pk=self.run.pk).update(state=Run.State.PAUSED, waiting_reason=reason)
        self.run.state, self.run.waiting_reason = Run.State.PAUSED, reason
        event_emit(kind="run.paused", subject=run_subject(self.run.pk), data={"by": by})
        # A queued step's message may still reach an agent: its claim finds it pending.
        # Steps waiting for an agent, a slot or a rate leave those lines: resume sends
        # them again, each to wait anew if it must.
        waiting = Q(state=StepRun.State.PENDING) & ~Q(waiting_reason__in=["", flow.WAIT_PAUSED])
        held = self.steps().filter(Q(state=StepRun.State.QUEUED) | waiting)
        for step in held.select_for_update():
            self._wait(step, flow.WAIT_PAUSED)
            StepRun.objects.filter(pk=step.pk).update(
                **{f: getattr(step, f) for f in _DISPATCH_FIELDS}
            )

    def resume(self, *, by: str) -> None:
        """Go on: dispatch what waited while paused (a run that never started goes back
        in line)."""
        self.open_check("resume")
        if self.run.state != Run.State.PAUSED:
            raise RunConflict(f"run {self.run.pk} is {self.run.state}, not paused")
        event_emit(kind="run.resumed", subject=run_subject(self.run.pk), data={"by": by})
        Run.objects.filter(pk=self.run.pk).update(waiting_reason="")
        self.run.waiting_reason = ""
        if self.run.started_at is None:
            return self.begin()
        # Until settle says whether it waits, the run is running again: dispatch reads it.
        self.run.state, self._maybe_waiting = Run.State.RUNNING, True
        Run.objects.filter(pk=self.run.pk).update(state=Run.State.RUNNING)
        event_emit(kind="run.running", subject=run_subject(self.run.pk), data={})
        paused = self.steps(state=StepRun.State.PENDING, waiting_reason=flow.WAIT_PAUSED)
        for step in paused.order_by("-priority", "id"):
            self.dispatch(step)
        return None

    def open_check(self, action: str) -> None:
        if self.run.state in Run.TERMINAL:
            raise RunConflict(f"run {self.run.pk} is already {self.run.state}: cannot {action} it")

    # moving steps along

    def ready(self, step: StepRun) -> None:
        """Every dependency of `step` is done: skip it, hold it for approval, or start it."""
        spec = self.spec[step.step_id]
        if spec["when"]:
            try:
                go = evaluate(spec["when"], self.context())
            except TemplateError as exc:
                return self.fail(step, f"when: {exc}", retryable=False)
            if not go:
                self._set(step, StepRun.State.SKIPPED, finished_at=timezone.now())
                step_event_emit(step, "step.skipped", when=spec["when"])
                return self.done(step)
        if spec["approval"]:
            self._set(step, StepRun.State.WAITING, waiting_reason="waiting for approval")
            self._maybe_waiting = True
            step_event_emit(step, "step.waiting", reason="approval")
            return None
        return self.start(step)

    def start(self, step: StepRun) -> None:
        spec = self.spec[step.step_id]
        context = self.context()
        if spec["foreach"] is not None:
            return self._expand(step, context)
        if kind := step_wait(spec):
            return self._wait_start(step, spec, kind, context)
        if spec.get("workflow"):
            try:
                inputs = render(spec["with"], context)
            except TemplateError as exc:
                return self.fail(step, f"with: {exc}", retryable=False)
            return self._child_start(step, spec, inputs)
        try:
            step.inputs = render(spec["with"], context)
        except TemplateError as exc:
            return self.fail(step, f"with: {exc}", retryable=False)
        try:
            step.concurrency_key, step.rate_key = _flow_keys(spec, step.skill, context)
        except TemplateError as exc:
            return self.fail(step, str(exc), retryable=False)
        return self.dispatch(step)

    # durable waits: a step that sleeps or waits for a signal holds no worker; the
    # reaper ends it when its time comes (`wake`), a signal when it arrives (`signal`)

    def _wait_start(self, step: StepRun, spec: dict, kind: str, context: dict) -> None:
        now = timezone.now()
        if kind == "wait_for":
            name, timeout = spec["wait_for"]["signal"], spec["wait_for"].get("timeout")
            kept = Signal.objects.filter(run=self.run, name=name, step=None).order_by("id")
            if signal := kept.first():  # sent before the step waited
                step.started_at = now
                return self._signal_deliver(signal, step)
            due = now + timedelta(seconds=timeout) if timeout else None
            reason = signal_reason(name)
        else:
            try:
                due = _wake_time(spec, kind, context, now)
            except TemplateError as exc:
                return self.fail(step, f"{kind}: {exc}", retryable=False)
            reason = f"sleeping until {due.isoformat(timespec='seconds')}"
            if due <= now:
                step.started_at = now
                return self._wait_end(step, {"slept_until": due.isoformat()})
        self._set(step, StepRun.State.WAITING, waiting_reason=reason, next_attempt_at=due,
                  started_at=now)  # fmt: skip
        self._maybe_waiting = True
        step_event_emit(step, "step.waiting", reason=reason)
        return None

    def wake(self, step: StepRun) -> None:
        """A waiting step's time came: a sleep ends, a wait for a signal times out."""
        spec = self.spec[step.step_id]
        if step_wait(spec) == "wait_for":
            name, timeout = spec["wait_for"]["signal"], spec["wait_for"]["timeout"]
            error = f"wait_for: no signal {name!r} within {timeout:g} s"
            return self.fail(step, error, retryable=False)
        return self._wait_end(step, {"slept_until": step.next_attempt_at.isoformat()})

    def signal(self, signal: Signal) -> StepRun | None:
        """`signal` was sent to the run: it ends the first step waiting for its name, or
        is kept for the first that will. Returns the step it ended."""
        waiting = self.steps(state=StepRun.State.WAITING, waiting_reason=signal_reason(signal.name))
        step = waiting.first()
        if step is not None:
            self._signal_deliver(signal, step)
        return step

    def _signal_deliver(self, signal: Signal, step: StepRun) -> None:
        Signal.objects.filter(pk=signal.pk).update(step=step, delivered_at=timezone.now())
        self._wait_end(step, signal.payload, signal=signal.name)

    def _child_start(self, step: StepRun, spec: dict, params: object) -> None:
        """A sub-workflow's step: start its run (the child), with `params`; the step
        waits for it, holding no worker, and ends with it (`child_end`)."""
        name, version = workflow_ref(spec["workflow"])
        versions = Workflow.objects.filter(name=name).order_by("-version")
        workflow = versions.filter(version=version).first() if version else versions.first()
        if workflow is None:
            return self.fail(step, f"workflow: no workflow {spec['workflow']!r}", retryable=False)
        depth, parent = 1, self.run.pk
        while parent := Run.objects.filter(pk=parent).values_list("parent_step__run", flat=True)[0]:
            depth += 1
            if depth >= settings.HIVE_SUBWORKFLOW_DEPTH:
                return self.fail(step, f"workflow: more than {settings.HIVE_SUBWORKFLOW_DEPTH} "
                                 "runs deep (HIVE_SUBWORKFLOW_DEPTH)", retryable=False)  # fmt: skip
        problem = (
            (None if isinstance(params, dict) else "with: must be an object of params")
            or json_problem(params, at="with")
            or schema_problem(SchemaValidator(workflow.spec["params"]), params, at="with")
        )
        if problem:
            return self.fail(step, f"workflow: {workflow}: {problem}", retryable=False)
        try:
            fields = flow.run_flow(workflow=workflow, params=params, priority=step.priority,
                                   deadline=None)  # fmt: skip
        except RunError as exc:
            return self.fail(step, f"workflow: {workflow}: {exc}", retryable=False)
        user_id = Run.objects.values_list("created_by_id", flat=True).get(pk=self.run.pk)
        child = run_create(workflow=workflow, params=params, user_id=user_id, parent_step=step,
                           **fields)  # fmt: skip
        reason = child_reason(child.pk)
        self._set(step, StepRun.State.WAITING, waiting_reason=reason, started_at=timezone.now(),
                  inputs=params)  # fmt: skip
        self._maybe_waiting = True
        step_event_emit(step, "step.waiting", reason=reason, run=child.pk)
        return None

    def end_waiting(self, step: StepRun, output: object, **data) -> None:
        """A step that waited (a sleep, a signal, a sub-workflow) succeeded with `output`."""
        self._wait_end(step, output, **data)

    def _wait_end(self, step: StepRun, output: object, **data) -> None:
        self._set(step, StepRun.State.SUCCEEDED, output=output, finished_at=timezone.now(),
                  waiting_reason="", next_attempt_at=None, started_at=step.started_at)  # fmt: skip
        step_event_emit(step, "step.succeeded", **data)
        self.done(step)

    def _expand(self, group: StepRun, context: dict) -> None:
        """A foreach step: one item step per element; the group waits for all of them.

        The items are rendered first and created already queued, in one insert.
        """
        spec = self.spec[group.step_id]
        try:
            items = render(spec["foreach"], context)
            if not isinstance(items, list):
                raise TemplateError(f"expected a list, got {type(items).__name__}")
            if len(items) > settings.HIVE_FOREACH_MAX:
                raise TemplateError(
                    f"{len(items)} items, more than HIVE_FOREACH_MAX ({settings.HIVE_FOREACH_MAX})"
                )
            inputs = [render(spec["with"], {**context, "item": item}) for item in items]
        except TemplateError as exc:
            return self.fail(group, f"foreach: {exc}", retryable=False)
        try:
            keys = [_flow_keys(spec, group.skill, {**context, "item": item}) for item in items]
        except TemplateError as exc:
            return self.fail(group, str(exc), retryable=False)
        # The items' keys are locked at once, in order (see flow.Capacity).
        self._capacity.lock(key for key, _ in keys if key)
        self._set(group, StepRun.State.RUNNING, pending_deps=len(items), started_at=timezone.now())
        step_event_emit(group, "step.expanded", items=len(items))
        if not items:
            return self.group_complete(group)
        children = [
            StepRun(
                run=self.run,
                step_id=group.step_id,
                key=f"{group.key}[{i}]",
                group=group,
                item_index=i,
                item=item,
                skill=group.skill,
                inputs=inputs[i],
                priority=group.priority,
                concurrency_key=keys[i][0],
                rate_key=keys[i][1],
            )
            for i, item in enumerate(items)
        ]
        if spec.get("workflow"):
            # One sub-workflow's run per item, each item waiting for its own.
            StepRun.objects.bulk_create(children)
            for child in children:
                self._child_start(child, spec, child.inputs)
            return None
        StepRun.objects.bulk_create([self._prepare(child) for child in children])
        self._outbox += [child for child in children if child.state == StepRun.State.QUEUED]
        return None

    def dispatch(self, step: StepRun) -> None:
        """Queue the step (sent after commit, or kept for the calling task), or leave it
        waiting (for an agent, a slot of its concurrency key, the run's resume)."""
        self._prepare(step)
        queued = step.state == StepRun.State.QUEUED
        here = self._here
        if (
            queued
            and here
            and not self._kept
            and here.takes(step, self.spec[step.step_id]["timeout"])
        ):
            step.task_id, self._kept = here.task_id, step
        StepRun.objects.filter(pk=step.pk).update(**{f: getattr(step, f) for f in _DISPATCH_FIELDS})
        if queued and step is not self._kept:
            self._outbox.append(step)

    def _prepare(self, step: StepRun) -> StepRun:
        """Queue `step` on its agents' queue, or leave it pending with why it waits: the
        run is paused, no agent takes it, its concurrency key has no slot free."""
        if self.run.state == Run.State.PAUSED:
            return self._wait(step, flow.WAIT_PAUSED)
        spec = self.spec[step.step_id]
        queue = self._router.route(step, spec)
        if isinstance(queue, RoutingError):
            return self._wait(step, f"{flow.WAIT_AGENT}: {queue}")
        if concurrency := spec.get("concurrency"):
            reason = self._capacity.admit(
                step, key=step.concurrency_key, limit=concurrency["limit"]
            )
            if reason:
                if not step.waiting_reason.startswith(flow.WAIT_CAPACITY):
                    step.queued_at = timezone.now()  # it joins the line now
                return self._wait(step, reason)
        dispatch.step_queue(step, queue=queue)
        return step

    def _wait(self, step: StepRun, reason: str, *, until=None) -> StepRun:
        """Leave `step` pending with `reason` (until `until`, when the reaper sends it):
        a step that held a slot of its concurrency key lets it go."""
        if step.state in flow.HOLDING and step.concurrency_key:
            self._freed.add(step.concurrency_key)
        if reason != step.waiting_reason:  # the reaper asks again every pass
            step_event_emit(step, "step.waiting", reason=reason)
        self._maybe_waiting = True
        step.state, step.waiting_reason, step.next_attempt_at = StepRun.State.PENDING, reason, until
        return step

    def wait_rate(self, step: StepRun, reason: str, *, until) -> None:
        """A rate it starts under has no room: `step` (queued) waits, holding no worker,
        until its slot time."""
        self._wait(step, reason, until=until)
        StepRun.objects.filter(pk=step.pk).update(**{f: getattr(step, f) for f in _DISPATCH_FIELDS})

    def freed(self, step: StepRun) -> None:
        """`step` ended: the line of the concurrency key it held moves after commit."""
        if step.concurrency_key:
            self._freed.add(step.concurrency_key)

    # a step finished

    def done(self, step: StepRun, *, counted: list[StepRun] | None = None) -> None:
        """`step` succeeded, was skipped, or failed with on_failure: continue. Count down
        what waits for it (the steps needing it; an item's group) and go on with what
        has nothing left to wait for. `counted`: the rows the statement that ended the
        step has counted down already."""
        if counted is None:
            counted = self._count_down(step)
        for waiting in sorted(counted, key=lambda s: s.pk):
            if waiting.pending_deps != 0:
                continue
            if waiting.pk == step.group_id:
                self.group_complete(waiting)
            elif waiting.state == StepRun.State.PENDING:
                self.ready(waiting)

    def _count_down(self, step: StepRun) -> list[StepRun]:
        if step.group_id is not None:
            return steps_update({"id": step.group_id}, pending_deps=Add(-1))
        waiting = self.dependents[step.step_id]
        if not waiting:
            return []
        # A top-level step's key is its id: the (run, key) index finds them.
        where = {"run_id": self.run.pk, "group_id": None, "key": waiting}
        return steps_update(where, pending_deps=Add(-1))

    def group_complete(self, group: StepRun) -> None:
        """When every item of a foreach group has finished, the group succeeds with
        their outputs, in item order."""
        if group.pending_deps != 0 or group.state != StepRun.State.RUNNING:
            return
        outputs = list(self.steps(group=group).values_list("output", flat=True))
        self._set(group, StepRun.State.SUCCEEDED, output=outputs, finished_at=timezone.now())
        step_event_emit(group, "step.succeeded", items=len(outputs))
        self.done(group)

    def fail(self, step: StepRun, error: str, *, retryable: bool, finished: bool = False) -> None:
        """A try failed: schedule a retry if allowed, else fail the step and apply on_failure."""
        spec = self.spec[step.step_id]
        now = timezone.now()
        if retryable and step.tries < spec["retries"] + 1:
            # Exponential backoff with jitter, so retries of many steps do not align.
            delay = spec["backoff"] * 2 ** (step.tries - 1) * random.uniform(0.8, 1.2)  # noqa: S311
            self._archive(step)
            self._set(step, StepRun.State.PENDING, next_attempt_at=now + timedelta(seconds=delay),
                      error=error)  # fmt: skip
            step_event_emit(step, "step.retrying", error=error, delay=round(delay, 2))
            return None
        if not finished:
            self._set(step, StepRun.State.FAILED, error=error, finished_at=now)
            step_event_emit(step, "step.failed", error=error)
        if spec["on_failure"] == "continue":
            return self.done(step)
        if step.group_id is not None:
            # The group fails with its item (rather than be cancelled with the rest), so
            # it shows the failure and can be retried: items are retried as their group.
            group = self.step(step.group_id)
            self._set(group, StepRun.State.FAILED, error=f"{step.key}: {error}", finished_at=now)
            step_event_emit(group, "step.failed", error=group.error)
        return self.finish_run(Run.State.FAILED, f"step {step.key!r} failed: {error}")

    def lost(self, step: StepRun) -> None:
        """Its agent died or stopped renewing the lease while it ran: try again, up to a cap."""
        cap = max(self.spec[step.step_id]["retries"] + 1, settings.HIVE_STEP_MAX_LOST)
        why = f"lost its worker on agent {step.agent!r} while running"
        self._archive(step, error=why)
        if step.tries >= cap:
            self._set(step, StepRun.State.FAILED, finished_at=timezone.now(), lease_until=None,
                      error=f"{why}, {step.tries} times; giving up")  # fmt: skip
            step_event_emit(step, "step.failed", error=step.error)
            self.fail(step, step.error, retryable=False, finished=True)
            return
        step_event_emit(step, "step.lost", agent=step.agent)
        self.dispatch(step)

    def retry_from(self, step: StepRun, *, by: str) -> None:
        """Reset `step`, its downstream steps and the steps a failure cancelled."""
        reset = {step.step_id}
        cancelled = self.steps(group=None, state=StepRun.State.CANCELLED)
        reset |= set(cancelled.values_list("step_id", flat=True))
        frontier = list(reset)
        while frontier:
            for dependent in self.dependents[frontier.pop()]:
                if dependent not in reset:
                    reset.add(dependent)
                    frontier.append(dependent)
        done = set(self.steps(group=None, state__in=SATISFIED).values_list("step_id", flat=True))
        done -= reset
        for old in self.steps(group=None, step_id__in=reset):
            self._archive(old, retried_by=by)
            self.steps(group=old).delete()
            needs = self.spec[old.step_id]["needs"]
            self._set(
                old, StepRun.State.PENDING, pending_deps=sum(n not in done for n in needs),
                tries=0, output=None, error="", traceback="", inputs=None, agent="",
                waiting_reason="", next_attempt_at=None, started_at=None, finished_at=None,
            )  # fmt: skip
        Run.objects.filter(pk=self.run.pk).update(
            state=Run.State.RUNNING, error="", finished_at=None
        )
        self.run.state = Run.State.RUNNING
        event_emit(
            kind="run.retried", subject=run_subject(self.run.pk), data={"from": step.key, "by": by}
        )
        pending = StepRun.State.PENDING
        for ready in self.steps(group=None, step_id__in=reset, pending_deps=0, state=pending):
            self.ready(ready)
        self.settle()

    # the run

    def finish_run(self, state: str, error: str = "") -> None:
        """End the run: every step not finished is cancelled, running ones are stopped."""
        # Lock the open steps in id order, as lease renewals do, so two multi-row
        # updates never wait on each other in opposite order.
        rows = self.steps(state__in=StepRun.OPEN).select_for_update().order_by("id")
        rows = list(rows.values_list("pk", "state", "task_id", "concurrency_key"))
        running = StepRun.State.RUNNING
        self._revoke += [task for _, state, task, _ in rows if state == running and task]
        self._freed |= {key for _, state, _, key in rows if key and state in flow.HOLDING}
        if self.run.concurrency_key:
            self._runs_freed.add(self.run.concurrency_key)
        StepRun.objects.filter(pk__in=[pk for pk, _, _, _ in rows]).update(
            state=StepRun.State.CANCELLED, finished_at=timezone.now(), lease_until=None
        )
        Run.objects.filter(pk=self.run.pk).update(
            state=state, error=error, finished_at=timezone.now(), waiting_reason=""
        )
        self.run.state = state
        event_emit(kind=f"run.{state}", subject=run_subject(self.run.pk), data={"error": error})
        # A sub-workflow's end moves its parent's step; a parent's cancels its children.
        # Each in a transaction of its own after this one, so no run waits on another's lock.
        parent_step = Run.objects.values_list("parent_step_id", flat=True).get(pk=self.run.pk)
        if parent_step is not None:
            self._after.append(functools.partial(child_end, run_id=self.run.pk))
        if any(s.get("workflow") for s in self.spec.values()):
            open_children = Run.objects.filter(parent_step__run=self.run.pk).exclude(
                state__in=Run.TERMINAL
            )
            self._after += [
                functools.partial(run_cancel_with_parent, run_id=child, parent=self.run.pk)
                for child in open_children.values_list("pk", flat=True)
            ]

    def settle(self) -> None:
        """Finish the run when no step is left, or say whether it waits (approval, agents)."""
        if self.run.state in Run.TERMINAL:
            return
        # A step queued in this transaction is open: no need to ask the database.
        queued = self._outbox or self._kept
        if not queued and not self.steps(state__in=StepRun.OPEN).exists():
            return self.finish_run(Run.State.SUCCEEDED)
        if self.run.state in (Run.State.PAUSED, Run.State.PENDING):
            return None  # it stays so until resumed, or started from its line
        if not self._maybe_waiting:
            return None  # nothing this transaction did can have started or ended a wait
        waiting = self.steps(state=StepRun.State.WAITING).exists() or (
            self.steps(state=StepRun.State.PENDING).exclude(waiting_reason="").exists()
        )
        state = Run.State.WAITING if waiting else Run.State.RUNNING
        if state != self.run.state:
            Run.objects.filter(pk=self.run.pk).update(state=state)
            event_emit(kind=f"run.{state}", subject=run_subject(self.run.pk), data={})
            self.run.state = state
        return None

    # helpers

    def _set(self, step: StepRun, state: str, **fields) -> None:
        fields["state"] = state
        for name, value in fields.items():
            setattr(step, name, value)
        StepRun.objects.filter(pk=step.pk).update(**fields)

    def _archive(self, step: StepRun, **extra) -> None:
        """Keep the try that just ended in the step's history."""
        entry = {
            "attempt": step.attempt, "try": step.tries, "state": step.state, "agent": step.agent,
            "error": step.error, "started_at": step.started_at and step.started_at.isoformat(),
            "finished_at": step.finished_at and step.finished_at.isoformat(),
        }  # fmt: skip
        self.note(step, **{**entry, **extra})

    def note(self, step: StepRun, **entry) -> None:
        """Add an entry to the step's history (tries, approvals, retries)."""
        step.history = [*step.history, entry]
        StepRun.objects.filter(pk=step.pk).update(history=step.history)

    def _send(self) -> None:
        """After commit: hand the queued steps to Celery (or the kept one to the calling
        task), stop the cancelled ones."""
        if self._kept:
            kept = self._kept
            self._here.keep(kept, rates=flow.step_rates(kept, self.spec[kept.step_id]))
        dispatch.send([
            dispatch.Outgoing(step.pk, step.attempt, step.task_id, step.queue,
                              self.spec[step.step_id]["timeout"], step.priority,
                              flow.step_rates(step, self.spec[step.step_id]))
            for step in self._outbox
        ])  # fmt: skip
        dispatch.revoke(self._revoke)
        try:
            lines = (self._freed - self._capacity.quiet) | self._capacity.deferred
            for key in sorted(lines):
                capacity_wake(key)
            for key in sorted(self._runs_freed):
                run_capacity_wake(key)
        except Exception:
            # What this transaction did is committed; the reaper's next pass moves the
            # lines this could not.
            logger.exception("engine: a concurrency key's line did not move")
        for then in self._after:
            try:
                then()
            except Exception:
                # The reaper ends a parent's step whose child ended (and a child whose
                # parent ended) on its next pass.
                logger.exception("engine: a sub-workflow's parent or child did not follow")
