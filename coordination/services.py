"""The engine's public services: what the API, the built-ins, the CLI, the admin and
the agents' tasks call to change runs and steps.

The DAG moves in coordination.engine, under the run's row lock; the hot path's
statements are in coordination.sql, the sending of steps in coordination.dispatch,
the recovery of lost work in coordination.reaper. Every refusal is a RunError
(coordination.errors), a HiveError of the kind that says why.
"""

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.skills.registry import schema_problem
from coordination import flow
from coordination.dispatch import Continuation
from coordination.engine import Engine, run_create, step_end
from coordination.errors import RunConflict, RunDenied, RunError, RunForbidden, RunInvalid
from coordination.flow import run_flow_check
from coordination.models import Run, Signal, StepRun, Workflow
from coordination.spec import SIGNAL_NAME, spec_digest, spec_load
from coordination.sql import step_event_emit, step_update
from events.kinds import run_subject, subject
from events.services import event_emit
from hive_core.jsondata import SchemaValidator, json_problem
from hive_core.sql import Add

# The public API, for the other apps and the tests.
__all__ = [
    "COMMAND_WORKFLOW_PREFIX", "INTERNAL_PARAM_PREFIX", "RUN_ACTION_CHECKS",
    "RUN_ACTION_PERMISSIONS", "SIGNAL_PAYLOAD_MAX", "Continuation", "RunConflict",
    "RunDenied", "RunError", "RunForbidden", "RunInvalid", "run_cancel", "run_flow_check",
    "run_pause", "run_rerun", "run_resume", "run_start", "signal_send",
    "step_approve", "step_claim", "step_fail", "step_handoff_record", "step_leases_renew",
    "step_reject", "step_retry", "step_succeed", "workflow_load",
    "workflow_save",
]  # fmt: skip

# Checks a higher layer adds to what a user does to a run, each
# `check(*, run, user, action) -> str` returning a refusal or "": commands makes
# retrying a command's run need the command's permission, since a retry runs the
# command's steps again (a user with change_steprun who sees every run re-ran a
# /deploy they may not execute). Filled in the higher app's ready().
RUN_ACTION_CHECKS: list = []


def _run_action_check(*, run_id: int, user, action: str) -> None:
    if user is None or not RUN_ACTION_CHECKS:
        return  # Hive itself (the reaper, a test) acts as nobody
    run = Run.objects.select_related("workflow").get(pk=run_id)
    for check in RUN_ACTION_CHECKS:
        refusal = check(run=run, user=user, action=action)
        if refusal:
            raise RunDenied(refusal)


# Params whose names start with this are Hive's own, set by the service starting the
# run and never by a caller: a command's run carries its invocation's context
# (`_command`: the user, the prompt, the invocation) there, and a caller who could
# set it forged the user and invocation the run's steps see.
INTERNAL_PARAM_PREFIX = "_"
# A command's workflow is named after it (`cmd:<command>`, see commands.loader) and
# starts only as that command: through commands' command_execute, which checks the
# command's permission, applies its overlap policy and records the Invocation. Any
# other start (the API's, `hive workflow start`, a rerun) would skip all three.
COMMAND_WORKFLOW_PREFIX = "cmd:"


# The permission each action on a run needs, for the API's run actions and the
# /hive:* built-ins alike: the built-ins once asked change_run for all of them, so a
# user the API refused an approval (403) approved with /hive:approve.
RUN_ACTION_PERMISSIONS = {
    "cancel": "coordination.change_run",
    "pause": "coordination.change_run",
    "resume": "coordination.change_run",
    "signal": "coordination.change_run",
    "rerun": "coordination.add_run",
    "retry": "coordination.change_steprun",
    "approve": "coordination.approve_steprun",
    "reject": "coordination.approve_steprun",
}


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
        kind="workflow.saved", subject=subject("workflow", name), data={"version": workflow.version}
    )
    return workflow, True


def workflow_load(*, path: Path) -> tuple[Workflow, bool]:
    """Validate a definition file and save it; its `name:` or the file's stem names it."""
    spec = spec_load(path)
    return workflow_save(name=spec["name"] or path.stem, spec=spec, source=str(path))


# --- runs ------------------------------------------------------------------------


def run_start(
    *,
    workflow: Workflow,
    params: dict,
    user=None,
    rerun_of: Run | None = None,
    internal: Mapping | None = None,
    priority: int | None = None,
    deadline: float | None = None,
) -> Run:
    """Validate `params`, create the run and its steps in one transaction, and send
    the steps that need nothing once it commits (or queue the run behind its
    workflow's concurrency key).

    `internal` is Hive's own params (each named `_...`), given only by the service
    that starts a command's run; `params` come from a caller and may not name one.
    `priority` (0-9) and `deadline` (seconds from now) override the workflow's
    `priority` and `timeout`."""
    params = _run_params(workflow=workflow, params=params, internal=internal)
    flow_fields = flow.run_flow(workflow=workflow, params=params, priority=priority,
                                deadline=deadline)  # fmt: skip
    with transaction.atomic():
        run = run_create(workflow=workflow, params=params, user_id=getattr(user, "pk", None),
                         rerun_of=rerun_of, **flow_fields)  # fmt: skip
    return Run.objects.get(pk=run.pk)


def run_pause(*, run: Run, user=None) -> Run:
    """Hold the run: nothing new is dispatched (ready steps wait, `paused`), running
    steps finish, approvals can still be decided."""
    _run_action_check(run_id=run.pk, user=user, action="pause")
    with transaction.atomic():
        engine = Engine(run.pk)
        engine.pause(by=str(user or ""))
        engine.settle()
    return Run.objects.get(pk=run.pk)


def run_resume(*, run: Run, user=None) -> Run:
    """Let a paused run go on: what is ready is dispatched."""
    _run_action_check(run_id=run.pk, user=user, action="resume")
    with transaction.atomic():
        engine = Engine(run.pk)
        engine.resume(by=str(user or ""))
        engine.settle()
    return Run.objects.get(pk=run.pk)


def _run_params(*, workflow: Workflow, params: dict, internal: Mapping | None) -> dict:
    """The params a run of `workflow` starts with: the caller's, checked, and Hive's own."""
    # A workflow without a params schema takes any params, but they are always named.
    if not isinstance(params, dict):
        raise RunInvalid(f"params: must be a JSON object, not {type(params).__name__}")
    if workflow.name.startswith(COMMAND_WORKFLOW_PREFIX) and internal is None:
        command = workflow.name.removeprefix(COMMAND_WORKFLOW_PREFIX)
        raise RunInvalid(
            f"{workflow.name} is the workflow of /{command}: it starts only as that "
            f"command (POST /api/v1/commands/execute with the text /{command} ...), "
            "which checks its permission, overlap and approval and audits it",
            field="workflow",
        )
    forged = sorted(name for name in params if str(name).startswith(INTERNAL_PARAM_PREFIX))
    if forged:
        raise RunInvalid(
            f"params.{forged[0]}: reserved for Hive (params named "
            f"'{INTERNAL_PARAM_PREFIX}...' are set by Hive, never by a caller)",
            field=f"params.{forged[0]}",
        )
    if internal:
        assert all(name.startswith(INTERNAL_PARAM_PREFIX) for name in internal), internal
        params = {**params, **internal}
    problem = json_problem(params, at="params") or schema_problem(
        SchemaValidator(workflow.spec["params"]), params, at="params"
    )
    if problem:
        raise RunInvalid(problem)
    return params


def run_cancel(*, run: Run, user=None) -> Run:
    with transaction.atomic():
        engine = Engine(run.pk)
        if engine.run.state in Run.TERMINAL:
            raise RunConflict(f"run {run.pk} is already {engine.run.state}")
        who = f" by {user}" if user else ""
        engine.finish_run(Run.State.CANCELLED, f"cancelled{who}")
    return Run.objects.get(pk=run.pk)


# A signal's payload is stored and becomes a step's output: bounded.
SIGNAL_PAYLOAD_MAX = 64 * 1024


def signal_send(
    *, run: Run, name: str, payload: object = None, user=None, source: str = "api"
) -> Signal:
    """Send the signal `name` to `run`: it ends the first step waiting for it (its
    payload that step's output), or is kept for the first step that waits for it."""
    problem = schema_problem(SchemaValidator(SIGNAL_NAME), name, at="name")
    problem = problem or json_problem(payload, at="payload")
    if not problem and len(json.dumps(payload)) > SIGNAL_PAYLOAD_MAX:
        problem = f"payload: more than {SIGNAL_PAYLOAD_MAX} bytes of JSON"
    if problem:
        raise RunInvalid(problem, field=problem.split(":")[0].split(".")[0])
    _run_action_check(run_id=run.pk, user=user, action="signal")
    with transaction.atomic():
        engine = Engine(run.pk)
        engine.open_check("signal")
        signal = Signal.objects.create(
            run_id=run.pk, name=name, payload=payload, sent_by=user, source=source
        )
        event_emit(kind="run.signalled", subject=run_subject(run.pk),
                   data={"signal": name, "by": str(user or ""), "source": source})  # fmt: skip
        engine.signal(signal)
        engine.settle()
    return Signal.objects.select_related("step").get(pk=signal.pk)


def run_rerun(*, run: Run, user=None) -> Run:
    """A new run of the same workflow version with the same params and priority."""
    try:
        return run_start(
            workflow=run.workflow, params=run.params, user=user, rerun_of=run, priority=run.priority
        )
    except RunInvalid as exc:
        # A rerun brings no params of its own: what refuses it is the run it repeats
        # (a command's run, which runs again only as its command), a conflict.
        raise RunConflict(str(exc), field=exc.field) from None


def step_retry(*, step: StepRun, user=None) -> Run:
    """Run a failed step again, and everything after it (and every step a failure
    cancelled); earlier tries stay in each step's history."""
    _run_action_check(run_id=step.run_id, user=user, action="retry")
    with transaction.atomic():
        engine = Engine(step.run_id)
        step = engine.step(step.pk)
        if step.group_id is not None:
            step = engine.step(step.group_id)
        if step.state != StepRun.State.FAILED:
            raise RunConflict(
                f"step {step.key!r} is {step.state}; only a failed step can be retried"
            )
        engine.retry_from(step, by=str(user or ""))
    return Run.objects.get(pk=step.run_id)


def step_approve(*, step: StepRun, user=None) -> StepRun:
    """Let a step waiting for approval run; every door (API, /hive:approve, the
    dashboard's button, the admin's action) approves through here."""
    with transaction.atomic():
        engine = Engine(step.run_id)
        step = engine.waiting_for_approval(step.pk)
        _approver_check(step=step, user=user)
        engine.note(step, approved_by=str(user or ""), at=timezone.now().isoformat())
        step_event_emit(step, "step.approved", by=str(user or ""))
        engine.start(step)
        engine.settle()
    return StepRun.objects.get(pk=step.pk)


def _approver_check(*, step: StepRun, user) -> None:
    """An approval gate is a second pair of eyes: with HIVE_ALLOW_SELF_APPROVAL off, the
    user who started the run may not open it. (Rejecting one's own run stays allowed.)"""
    if settings.HIVE_ALLOW_SELF_APPROVAL or user is None:
        return
    started_by = Run.objects.values_list("created_by_id", flat=True).get(pk=step.run_id)
    if started_by is not None and started_by == user.pk:
        raise RunForbidden(
            f"step {step.key!r} of run {step.run_id}: you started this run, and "
            "HIVE_ALLOW_SELF_APPROVAL is off; another approver must approve it"
        )


def step_reject(*, step: StepRun, user=None, reason: str = "") -> StepRun:
    with transaction.atomic():
        engine = Engine(step.run_id)
        step = engine.waiting_for_approval(step.pk)
        why = f": {reason}" if reason else ""
        engine.fail(step, f"rejected by {user or 'an approver'}{why}", retryable=False)
        engine.settle()
    return StepRun.objects.get(pk=step.pk)


# --- what agents call -------------------------------------------------------------


def step_claim(*, step_run_id: int, attempt: int, agent: str, rates=()) -> StepRun | None:
    """Take a queued step for `agent`; None if it is not this delivery's to take.

    Zero rows updated is normal: Redis delivers at least once, the reaper may
    have sent the step again (a newer attempt), or the run was cancelled or
    paused. The step comes back with its run's workflow version (`workflow_id`,
    `workflow_digest`), so its result can count down the steps needing it.
    A step that starts under `rates` ([key, limit, per] each, flow.step_rates)
    is counted against them as it is claimed, or waits for its slot (None).
    """
    if rates:
        return _step_claim_rated(step_run_id=step_run_id, attempt=attempt, agent=agent,
                                 rates=rates)  # fmt: skip
    return _claim(step_run_id=step_run_id, attempt=attempt, agent=agent, now=timezone.now())


def _step_claim_rated(*, step_run_id: int, attempt: int, agent: str, rates) -> StepRun | None:
    """Claim a step under rates: its start is counted, under the rate keys' locks, in
    the claim's transaction and at its time, so the starts themselves keep the rate
    across every agent. Over the rate, the step waits pending, holding no worker,
    until its slot time (the reaper sends it then)."""
    now = timezone.now()
    with transaction.atomic():
        reason, slot = flow.rate_take(rates, now=now.timestamp())
        if not reason:
            claimed = _claim(step_run_id=step_run_id, attempt=attempt, agent=agent, now=now)
            # A stale delivery starts nothing: its start is not counted either.
            transaction.set_rollback(claimed is None)
            return claimed
    # Over the rate: the step waits, a change of the run's steps, under the run's lock.
    run_id = StepRun.objects.filter(pk=step_run_id).values_list("run_id", flat=True).first()
    if run_id is None:
        return None
    with transaction.atomic():
        engine = Engine(run_id)
        step = engine.step(step_run_id)
        if (step.state, step.attempt) == (StepRun.State.QUEUED, attempt):
            engine.wait_rate(step, reason, until=datetime.fromtimestamp(slot, tz=UTC))
            engine.settle()
    return None


def _claim(*, step_run_id: int, attempt: int, agent: str, now) -> StepRun | None:
    return step_update(
        step_run_id,
        where={"state": StepRun.State.QUEUED, "attempt": attempt},
        announce="step.running",
        state=StepRun.State.RUNNING,
        agent=agent,
        started_at=now,
        lease_until=now + timedelta(seconds=settings.HIVE_STEP_LEASE),
        tries=Add(1),
        # Should PostgreSQL crash before writing the claim out, the step is queued again
        # and its try runs again under the same idempotency key (`tries` is not counted
        # either); a result, committed later, is only durable with every claim before it.
        durable=False,
    )


def step_succeed(*, step: StepRun, output: object, here: Continuation | None = None) -> bool:
    """Store the output of `step` (as claimed) and advance the DAG; False if stale.
    With `here`, a step this dispatches may be kept for the calling task to run."""
    return step_end(step=step, state=StepRun.State.SUCCEEDED, output=output, here=here)


def step_fail(*, step: StepRun, error: str, traceback: str = "", retryable: bool = True) -> bool:
    """Record a failed try of `step` (as claimed): retry it after its backoff, or fail
    it (and maybe the run); False if stale."""
    return step_end(step=step, state=StepRun.State.FAILED, retryable=retryable, error=error,
                    traceback=traceback)  # fmt: skip


def step_leases_renew(*, agent: str, task_ids: list[str]) -> int:
    """The agent still runs these tasks: push the leases of their steps forward (by
    task id: a task may have gone on to a step it kept, see Continuation)."""
    lease = timezone.now() + timedelta(seconds=settings.HIVE_STEP_LEASE)
    return StepRun.objects.filter(
        task_id__in=task_ids, agent=agent, state=StepRun.State.RUNNING
    ).update(lease_until=lease)


# --- messaging (agents/mailbox.py) ---------------------------------------------------


@transaction.atomic
def step_handoff_record(*, step: StepRun, sender: str, to: str, message_id: int) -> None:
    """Record on the run that `sender` handed `step`'s context to agent `to` (message
    `message_id`): an entry in the step's history and a `step.handoff` event.

    Under the run's row lock, as the engine writes history: an engine transaction
    holding an older copy of the history would otherwise write over the entry.
    """
    Run.objects.select_for_update(of=("self",)).only("id").get(pk=step.run_id)
    history = StepRun.objects.values_list("history", flat=True).get(pk=step.pk)
    entry = {"handoff": {"from": sender, "to": to, "message": message_id},
             "at": timezone.now().isoformat()}  # fmt: skip
    StepRun.objects.filter(pk=step.pk).update(history=[*history, entry])
    step.history = [*history, entry]
    step_event_emit(step, "step.handoff", sender=sender, to=to, message=message_id)
