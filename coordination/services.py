"""The engine: runs and steps change state here, and only here.

Every change to a run's DAG happens inside `_Engine`, a transaction holding the
run's row lock (SQLite's IMMEDIATE transactions serialize writers the same
way), so fan-in counting and run completion are decided in the database, never
by Celery chords. Steps are sent to agents after commit; a delivery is only a
hint: the agent claims the step with a conditional update, and a result is
stored only if the step is still running the same attempt.
"""

import logging
import random
import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from jsonschema import Draft202012Validator

from agents.models import Agent
from agents.routing import RoutingError, route
from agents.skills.registry import schema_problem
from coordination.models import Run, StepRun, Workflow
from coordination.spec import spec_dependents, spec_digest, spec_load
from coordination.templates import TemplateError, evaluate, render
from dashboard.events import event_emit

logger = logging.getLogger(__name__)
Step = StepRun.State
RunState = Run.State
# States that let the steps needing this one go ahead ("none failed").
SATISFIED = frozenset({Step.SUCCEEDED, Step.SKIPPED})


class RunError(Exception):
    """The request cannot be carried out on this run or step; nothing changed."""


# --- workflows -----------------------------------------------------------------


@transaction.atomic
def workflow_save(*, name: str, spec: dict, source: str = "") -> tuple[Workflow, bool]:
    """Store a validated spec as the newest version of `name` unless nothing changed."""
    digest = spec_digest(spec)
    latest = Workflow.objects.filter(name=name).order_by("-version").first()
    if latest and latest.digest == digest:
        return latest, False
    workflow = Workflow.objects.create(
        name=name,
        version=latest.version + 1 if latest else 1,
        description=spec.get("description", ""),
        spec=spec,
        digest=digest,
        source=source,
    )
    event_emit(
        kind="workflow.saved", subject=f"workflow:{name}", data={"version": workflow.version}
    )
    return workflow, True


def workflow_load(*, path: Path) -> tuple[Workflow, bool]:
    """Validate a definition file and save it; its `name:` or the file's stem names it."""
    spec = spec_load(path)
    return workflow_save(name=spec["name"] or path.stem, spec=spec, source=str(path))


# --- runs ------------------------------------------------------------------------


def run_start(*, workflow: Workflow, params: dict, user=None, rerun_of: Run | None = None) -> Run:
    """Validate `params`, create the run and its steps in one transaction, and send
    the steps that need nothing once it commits."""
    problem = schema_problem(Draft202012Validator(workflow.spec["params"]), params, at="params")
    if problem:
        raise RunError(problem)
    with transaction.atomic():
        run = Run.objects.create(
            workflow=workflow,
            params=params,
            state=RunState.RUNNING,
            created_by=user,
            rerun_of=rerun_of,
            started_at=timezone.now(),
        )
        StepRun.objects.bulk_create(
            StepRun(
                run=run,
                step_id=s["id"],
                key=s["id"],
                skill=s["skill"],
                pending_deps=len(s["needs"]),
            )
            for s in workflow.spec["steps"]
        )
        event_emit(
            kind="run.started",
            subject=f"run:{run.pk}",
            data={"workflow": str(workflow), "params": params},
        )
        engine = _Engine(run.pk)
        for step in engine.steps(pending_deps=0, group=None):
            engine.ready(step)
        engine.settle()
    return Run.objects.get(pk=run.pk)


def run_cancel(*, run: Run, user=None) -> Run:
    with transaction.atomic():
        engine = _Engine(run.pk)
        if engine.run.state in Run.TERMINAL:
            raise RunError(f"run {run.pk} is already {engine.run.state}")
        who = f" by {user}" if user else ""
        engine.finish_run(RunState.CANCELLED, f"cancelled{who}")
    return Run.objects.get(pk=run.pk)


def run_rerun(*, run: Run, user=None) -> Run:
    """A new run of the same workflow version with the same params."""
    return run_start(workflow=run.workflow, params=run.params, user=user, rerun_of=run)


def step_retry(*, step: StepRun, user=None) -> Run:
    """Run a failed step again, and everything after it (and every step a failure
    cancelled); earlier tries stay in each step's history."""
    with transaction.atomic():
        engine = _Engine(step.run_id)
        step = engine.step(step.pk)
        if step.group_id is not None:
            step = engine.step(step.group_id)
        if step.state != Step.FAILED:
            raise RunError(f"step {step.key!r} is {step.state}; only a failed step can be retried")
        engine.retry_from(step, by=str(user or ""))
    return Run.objects.get(pk=step.run_id)


def step_approve(*, step: StepRun, user=None) -> StepRun:
    with transaction.atomic():
        engine = _Engine(step.run_id)
        step = engine.waiting_for_approval(step.pk)
        engine.note(step, approved_by=str(user or ""), at=timezone.now().isoformat())
        engine.emit(step, "step.approved", by=str(user or ""))
        engine.start(step)
        engine.settle()
    return StepRun.objects.get(pk=step.pk)


def step_reject(*, step: StepRun, user=None, reason: str = "") -> StepRun:
    with transaction.atomic():
        engine = _Engine(step.run_id)
        step = engine.waiting_for_approval(step.pk)
        why = f": {reason}" if reason else ""
        engine.fail(step, f"rejected by {user or 'an approver'}{why}", retryable=False)
        engine.settle()
    return StepRun.objects.get(pk=step.pk)


# --- what agents call -------------------------------------------------------------


def step_claim(*, step_run_id: int, attempt: int, agent: str) -> StepRun | None:
    """Take a queued step for `agent`; None if it is not this delivery's to take.

    Zero rows updated is normal: Redis delivers at least once, the reaper may
    have sent the step again (a newer attempt), or the run was cancelled.
    """
    now = timezone.now()
    with transaction.atomic():
        claimed = StepRun.objects.filter(pk=step_run_id, state=Step.QUEUED, attempt=attempt).update(
            state=Step.RUNNING,
            agent=agent,
            started_at=now,
            lease_until=now + timedelta(seconds=settings.HIVE_STEP_LEASE),
            tries=F("tries") + 1,
        )
        if not claimed:
            return None
        step = StepRun.objects.select_related("run").get(pk=step_run_id)
        event_emit(
            kind="step.running",
            subject=f"run:{step.run_id}",
            data={"step": step.key, "agent": agent, "attempt": step.attempt, "try": step.tries},
        )
    return step


def step_succeed(*, step_run_id: int, attempt: int, output: object) -> bool:
    """Store a step's output and advance the DAG; False if the result is stale."""
    with transaction.atomic():
        engine = _Engine(StepRun.objects.values_list("run_id", flat=True).get(pk=step_run_id))
        step = engine.finish(step_run_id, attempt, Step.SUCCEEDED, output=output)
        if step is None:
            return False
        engine.done(step)
        engine.settle()
    return True


def step_fail(
    *, step_run_id: int, attempt: int, error: str, traceback: str = "", retryable: bool = True
) -> bool:
    """Record a failed try: retry it after its backoff, or fail it (and maybe the run)."""
    with transaction.atomic():
        engine = _Engine(StepRun.objects.values_list("run_id", flat=True).get(pk=step_run_id))
        step = engine.finish(step_run_id, attempt, Step.FAILED, error=error, traceback=traceback)
        if step is None:
            return False
        engine.fail(step, error, retryable=retryable, finished=True)
        engine.settle()
    return True


def step_leases_renew(*, agent: str, step_run_ids: list[int]) -> int:
    """The agent still runs these steps: push their leases forward."""
    lease = timezone.now() + timedelta(seconds=settings.HIVE_STEP_LEASE)
    return StepRun.objects.filter(pk__in=step_run_ids, agent=agent, state=Step.RUNNING).update(
        lease_until=lease
    )


# --- the reaper -------------------------------------------------------------------


def steps_reap(*, queue_lengths) -> dict[str, int]:
    """Recover what Redis or a dead agent lost, and send what is due.

    - running steps whose agent is offline or whose lease ran out: tried again
      (a step that keeps losing its worker fails after HIVE_STEP_MAX_LOST tries);
    - queued steps unclaimed for HIVE_DISPATCH_TIMEOUT whose queue is empty
      (`queue_lengths(queues)` asks Redis): the message was lost, send it again;
    - retries whose backoff has passed, and steps waiting for an agent: sent.
    """
    now = timezone.now()
    offline = Agent.objects.filter(status=Agent.Status.OFFLINE).values("name")
    lost = StepRun.objects.filter(state=Step.RUNNING).filter(
        Q(agent__in=offline) | Q(lease_until__lt=now)
    )
    stale_cutoff = now - timedelta(seconds=settings.HIVE_DISPATCH_TIMEOUT)
    stale = list(StepRun.objects.filter(state=Step.QUEUED, queued_at__lt=stale_cutoff))
    lengths = queue_lengths(sorted({s.queue for s in stale})) if stale else {}
    unsent = [s for s in stale if not lengths.get(s.queue)]
    due = StepRun.objects.filter(state=Step.PENDING, pending_deps=0).filter(
        Q(next_attempt_at__lte=now) | ~Q(waiting_reason="")
    )
    counts = {"lost": 0, "resent": 0, "due": 0}
    work = [("lost", s) for s in lost] + [("resent", s) for s in unsent] + [("due", s) for s in due]
    for kind, found in work:
        try:
            with transaction.atomic():
                engine = _Engine(found.run_id)
                step = engine.step(found.pk)
                if (step.state, step.attempt) != (found.state, found.attempt):
                    continue  # it moved on while we looked
                if kind == "lost":
                    engine.lost(step)
                else:
                    engine.dispatch(step)
                engine.settle()
            counts[kind] += 1
        except Exception:
            # One step the reaper cannot handle must not stop it recovering the rest.
            logger.exception("reaper: could not handle step %s (%s)", found.pk, kind)
    return counts


# --- the DAG of one run --------------------------------------------------------------


class _Engine:
    """One run's DAG inside a transaction that holds the run's row lock."""

    def __init__(self, run_id: int):
        self.run = Run.objects.select_for_update().select_related("workflow").get(pk=run_id)
        spec = self.run.workflow.spec
        self.spec = {s["id"]: s for s in spec["steps"]}
        self.dependents = spec_dependents(spec)
        self._outbox: list[StepRun] = []
        self._revoke: list[str] = []
        self._routes: dict[tuple, str | RoutingError] = {}
        transaction.on_commit(self._send)

    # reading

    def steps(self, **filters):
        return StepRun.objects.filter(run=self.run, **filters).order_by("id")

    def step(self, pk: int) -> StepRun:
        return StepRun.objects.get(pk=pk, run=self.run)

    def context(self, item: object = None) -> dict:
        steps = {
            key: {"output": output, "state": state}
            for key, output, state in self.steps(group=None).values_list("key", "output", "state")
        }
        return {"params": self.run.params, "steps": steps, "run": {"id": self.run.pk}, "item": item}

    def waiting_for_approval(self, pk: int) -> StepRun:
        step = self.step(pk)
        if step.state != Step.WAITING:
            raise RunError(f"step {step.key!r} is {step.state}, not waiting for approval")
        return step

    # moving steps along

    def emit(self, step: StepRun, kind: str, **data) -> None:
        event_emit(kind=kind, subject=f"run:{self.run.pk}", data={"step": step.key, **data})

    def ready(self, step: StepRun) -> None:
        """Every dependency of `step` is done: skip it, hold it for approval, or start it."""
        spec = self.spec[step.step_id]
        if spec["when"]:
            try:
                go = evaluate(spec["when"], self.context())
            except TemplateError as exc:
                return self.fail(step, f"when: {exc}", retryable=False)
            if not go:
                self._set(step, Step.SKIPPED, finished_at=timezone.now())
                self.emit(step, "step.skipped", when=spec["when"])
                return self.done(step)
        if spec["approval"]:
            self._set(step, Step.WAITING, waiting_reason="waiting for approval")
            self.emit(step, "step.waiting", reason="approval")
            return None
        return self.start(step)

    def start(self, step: StepRun) -> None:
        spec = self.spec[step.step_id]
        context = self.context()
        if spec["foreach"] is not None:
            return self._expand(step, context)
        try:
            step.inputs = render(spec["with"], context)
        except TemplateError as exc:
            return self.fail(step, f"with: {exc}", retryable=False)
        return self.dispatch(step)

    def _expand(self, group: StepRun, context: dict) -> None:
        """A foreach step: one item step per element; the group waits for all of them."""
        spec = self.spec[group.step_id]
        try:
            items = render(spec["foreach"], context)
        except TemplateError as exc:
            return self.fail(group, f"foreach: {exc}", retryable=False)
        if not isinstance(items, list):
            return self.fail(
                group, f"foreach: expected a list, got {type(items).__name__}", retryable=False
            )
        self._set(group, Step.RUNNING, pending_deps=len(items), started_at=timezone.now())
        self.emit(group, "step.expanded", items=len(items))
        if not items:
            self._set(group, Step.SUCCEEDED, output=[], finished_at=timezone.now())
            return self.done(group)
        children = StepRun.objects.bulk_create(
            StepRun(
                run=self.run,
                step_id=group.step_id,
                key=f"{group.key}[{i}]",
                group=group,
                item_index=i,
                item=item,
                skill=group.skill,
            )
            for i, item in enumerate(items)
        )
        ready = []
        for child in children:
            try:
                child.inputs = render(spec["with"], {**context, "item": child.item})
            except TemplateError as exc:
                self.fail(child, f"with: {exc}", retryable=False)
                continue
            ready.append(child)
        self._dispatch_many(ready)
        return None

    def dispatch(self, step: StepRun) -> None:
        self._dispatch_many([step])

    def _dispatch_many(self, steps: list[StepRun]) -> None:
        """Queue the steps (sent after commit), or leave them waiting for an agent."""
        now = timezone.now()
        for step in steps:
            queue = self._route(step)
            if isinstance(queue, RoutingError):
                reason = f"waiting for an agent: {queue}"
                if reason != step.waiting_reason:  # the reaper asks again every pass
                    self.emit(step, "step.waiting", reason=reason)
                step.state, step.waiting_reason = Step.PENDING, reason
            else:
                step.state, step.queue, step.waiting_reason = Step.QUEUED, queue, ""
                step.attempt += 1
                step.task_id, step.queued_at, step.next_attempt_at = str(uuid.uuid4()), now, None
                self._outbox.append(step)
        StepRun.objects.bulk_update(
            steps,
            ["state", "queue", "waiting_reason", "attempt", "task_id", "queued_at",
             "next_attempt_at", "inputs"],
        )  # fmt: skip

    def _route(self, step: StepRun) -> str | RoutingError:
        spec = self.spec[step.step_id]
        key = (step.skill, spec["agent"], spec["role"])
        if key not in self._routes:
            try:
                self._routes[key] = route(skill=step.skill, agent=spec["agent"], role=spec["role"])
            except RoutingError as exc:
                self._routes[key] = exc
        return self._routes[key]

    def finish(self, pk: int, attempt: int, state: str, **fields) -> StepRun | None:
        """End a running try; None if the step has moved on (a stale result)."""
        ended = StepRun.objects.filter(pk=pk, state=Step.RUNNING, attempt=attempt).update(
            state=state, finished_at=timezone.now(), lease_until=None, **fields
        )
        if not ended:
            return None
        step = self.step(pk)
        self.emit(step, f"step.{state}", agent=step.agent, attempt=step.attempt, tries=step.tries)
        return step

    def done(self, step: StepRun) -> None:
        """`step` succeeded, was skipped, or failed with on_failure: continue."""
        if step.group_id is not None:
            return self._item_done(step)
        waiting = self.dependents[step.step_id]
        if not waiting:
            return None
        self.steps(group=None, step_id__in=waiting).update(pending_deps=F("pending_deps") - 1)
        for ready in self.steps(
            group=None, step_id__in=waiting, pending_deps=0, state=Step.PENDING
        ):
            self.ready(ready)
        return None

    def _item_done(self, item: StepRun) -> None:
        self.steps(pk=item.group_id).update(pending_deps=F("pending_deps") - 1)
        group = self.step(item.group_id)
        if group.pending_deps == 0 and group.state == Step.RUNNING:
            outputs = list(self.steps(group=group).values_list("output", flat=True))
            self._set(group, Step.SUCCEEDED, output=outputs, finished_at=timezone.now())
            self.emit(group, "step.succeeded", items=len(outputs))
            self.done(group)

    def fail(self, step: StepRun, error: str, *, retryable: bool, finished: bool = False) -> None:
        """A try failed: schedule a retry if allowed, else fail the step and apply on_failure."""
        spec = self.spec[step.step_id]
        now = timezone.now()
        if retryable and step.tries < spec["retries"] + 1:
            # Exponential backoff with jitter, so retries of many steps do not align.
            delay = spec["backoff"] * 2 ** (step.tries - 1) * random.uniform(0.8, 1.2)  # noqa: S311
            self._archive(step)
            self._set(
                step, Step.PENDING, next_attempt_at=now + timedelta(seconds=delay), error=error
            )
            self.emit(step, "step.retrying", error=error, delay=round(delay, 2))
            return None
        if not finished:
            self._set(step, Step.FAILED, error=error, finished_at=now)
            self.emit(step, "step.failed", error=error)
        if spec["on_failure"] == "continue":
            return self.done(step)
        return self.finish_run(RunState.FAILED, f"step {step.key!r} failed: {error}")

    def lost(self, step: StepRun) -> None:
        """Its agent died or stopped renewing the lease while it ran: try again, up to a cap."""
        cap = max(self.spec[step.step_id]["retries"] + 1, settings.HIVE_STEP_MAX_LOST)
        why = f"lost its worker on agent {step.agent!r} while running"
        self._archive(step, error=why)
        if step.tries >= cap:
            self._set(step, Step.FAILED, finished_at=timezone.now(), lease_until=None,
                      error=f"{why}, {step.tries} times; giving up")  # fmt: skip
            self.emit(step, "step.failed", error=step.error)
            self.fail(step, step.error, retryable=False, finished=True)
            return
        self.emit(step, "step.lost", agent=step.agent)
        self.dispatch(step)

    def retry_from(self, step: StepRun, *, by: str) -> None:
        """Reset `step`, its downstream steps and the steps a failure cancelled."""
        reset = {step.step_id}
        reset |= set(self.steps(group=None, state=Step.CANCELLED).values_list("step_id", flat=True))
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
                old, Step.PENDING, pending_deps=sum(n not in done for n in needs), tries=0,
                output=None, error="", traceback="", inputs=None, agent="", waiting_reason="",
                next_attempt_at=None, started_at=None, finished_at=None,
            )  # fmt: skip
        Run.objects.filter(pk=self.run.pk).update(
            state=RunState.RUNNING, error="", finished_at=None
        )
        self.run.state = RunState.RUNNING
        event_emit(
            kind="run.retried", subject=f"run:{self.run.pk}", data={"from": step.key, "by": by}
        )
        for ready in self.steps(group=None, step_id__in=reset, pending_deps=0, state=Step.PENDING):
            self.ready(ready)
        self.settle()

    # the run

    def finish_run(self, state: str, error: str = "") -> None:
        """End the run: every step not finished is cancelled, running ones are stopped."""
        open_steps = self.steps().exclude(state__in=StepRun.TERMINAL)
        self._revoke += [
            t for t in open_steps.filter(state=Step.RUNNING).values_list("task_id", flat=True) if t
        ]
        open_steps.update(state=Step.CANCELLED, finished_at=timezone.now(), lease_until=None)
        Run.objects.filter(pk=self.run.pk).update(
            state=state, error=error, finished_at=timezone.now()
        )
        self.run.state = state
        event_emit(kind=f"run.{state}", subject=f"run:{self.run.pk}", data={"error": error})

    def settle(self) -> None:
        """Finish the run when no step is left, or say whether it waits (approval, agents)."""
        if self.run.state in Run.TERMINAL:
            return
        if not self.steps().exclude(state__in=StepRun.TERMINAL).exists():
            return self.finish_run(RunState.SUCCEEDED)
        waiting = self.steps(state=Step.WAITING).exists() or (
            self.steps(state=Step.PENDING).exclude(waiting_reason="").exists()
        )
        state = RunState.WAITING if waiting else RunState.RUNNING
        if state != self.run.state:
            Run.objects.filter(pk=self.run.pk).update(state=state)
            event_emit(kind=f"run.{state}", subject=f"run:{self.run.pk}", data={})
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
        """After commit: hand the queued steps to Celery, stop the cancelled ones."""
        from coordination.tasks import execute_step_task

        if self._outbox:
            _declare_queues({step.queue for step in self._outbox})
        for step in self._outbox:
            timeout = self.spec[step.step_id]["timeout"]
            execute_step_task.apply_async(
                (step.pk, step.attempt),
                queue=step.queue,
                task_id=step.task_id,
                soft_time_limit=timeout,
                # The hard limit backs up a skill that ignores the soft one.
                time_limit=timeout + settings.HIVE_HARD_TIMEOUT_GRACE if timeout else None,
            )
        if self._revoke:
            from hive_project.celery import app

            app.control.revoke(self._revoke, terminate=True, signal="SIGTERM")


def _declare_queues(names: set[str]) -> None:
    """Bind each queue to its exchange in Redis, every time.

    Kombu remembers the queues it declared and skips them afterwards, but the
    bindings live in Redis: after a FLUSHALL or a restart without persistence a
    message published to the exchange would be routed nowhere.
    """
    from hive_project.celery import app

    with app.producer_or_acquire() as producer:
        for name in names:
            app.amqp.queues[name].bind(producer.channel).declare()
