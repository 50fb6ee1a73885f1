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
import time
import uuid
from collections.abc import Mapping
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from agents.models import Agent
from agents.routing import RoutingError, agent_accepts_work, route
from agents.skills.registry import schema_problem
from coordination import dispatch
from coordination.models import Run, StepRun, Workflow
from coordination.spec import spec_dependents, spec_digest, spec_load
from coordination.templates import TemplateError, evaluate, render
from events.models import Event
from events.services import event_emit, event_publish_on_commit
from hive_core.db import prepared
from hive_core.jsondata import SchemaValidator, json_problem

logger = logging.getLogger(__name__)
Step = StepRun.State
RunState = Run.State
# States that let the steps needing this one go ahead ("none failed").
SATISFIED = frozenset({Step.SUCCEEDED, Step.SKIPPED})


class RunError(Exception):
    """The request cannot be carried out on this run or step; nothing changed.
    `field` names what was wrong, for the API's error body (default: params)."""

    def __init__(self, message: str, *, field: str = ""):
        super().__init__(message)
        self.field = field


class RunDenied(RunError):
    """The user may not do this to this run (the API's 403); nothing changed."""


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


class RunForbidden(RunError):
    """The user may take this action on runs, but not on this one; nothing changed."""


# The permission each action on a run needs, for the API's run actions and the
# /hive:* built-ins alike: the built-ins once asked change_run for all of them, so a
# user the API refused an approval (403) approved with /hive:approve.
RUN_ACTION_PERMISSIONS = {
    "cancel": "coordination.change_run",
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
        kind="workflow.saved", subject=f"workflow:{name}", data={"version": workflow.version}
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
) -> Run:
    """Validate `params`, create the run and its steps in one transaction, and send
    the steps that need nothing once it commits.

    `internal` is Hive's own params (each named `_...`), given only by the service
    that starts a command's run; `params` come from a caller and may not name one."""
    # A workflow without a params schema takes any params, but they are always named.
    if not isinstance(params, dict):
        raise RunError(f"params: must be a JSON object, not {type(params).__name__}")
    if workflow.name.startswith(COMMAND_WORKFLOW_PREFIX) and internal is None:
        command = workflow.name.removeprefix(COMMAND_WORKFLOW_PREFIX)
        raise RunError(
            f"{workflow.name} is the workflow of /{command}: it starts only as that "
            f"command (POST /api/v1/commands/execute with the text /{command} ...), "
            "which checks its permission, overlap and approval and audits it",
            field="workflow",
        )
    forged = sorted(name for name in params if str(name).startswith(INTERNAL_PARAM_PREFIX))
    if forged:
        raise RunError(
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
    _run_action_check(run_id=step.run_id, user=user, action="retry")
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
    """Let a step waiting for approval run; every door (API, /hive:approve, the
    dashboard's button, the admin's action) approves through here."""
    with transaction.atomic():
        engine = _Engine(step.run_id)
        step = engine.waiting_for_approval(step.pk)
        _approver_check(step=step, user=user)
        engine.note(step, approved_by=str(user or ""), at=timezone.now().isoformat())
        _emit_step(step, "step.approved", by=str(user or ""))
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
    have sent the step again (a newer attempt), or the run was cancelled. The
    step comes back with its run's workflow version (`workflow_id`,
    `workflow_digest`), so its result can count down the steps needing it.
    """
    now = timezone.now()
    return _update_step(
        step_run_id,
        where={"state": Step.QUEUED, "attempt": attempt},
        announce="step.running",
        state=Step.RUNNING,
        agent=agent,
        started_at=now,
        lease_until=now + timedelta(seconds=settings.HIVE_STEP_LEASE),
        tries=_Delta(1),
        # Should PostgreSQL crash before writing the claim out, the step is queued again
        # and its try runs again under the same idempotency key (`tries` is not counted
        # either); a result, committed later, is only durable with every claim before it.
        durable=False,
    )


def step_succeed(*, step: StepRun, output: object, here: "Continuation | None" = None) -> bool:
    """Store the output of `step` (as claimed) and advance the DAG; False if stale.
    With `here`, a step this dispatches may be kept for the calling task to run.

    The run's lock, the step's end and its event, and the count down of the
    steps needing it are one statement on PostgreSQL (see `_update_step`): a
    chain's every step waits on these round trips.
    """
    if step.group_id is not None:
        return _item_succeed(step, output)
    spec, dependents = _workflow_graph(step.workflow_digest, step.workflow_id)
    waiting = dependents[step.step_id]
    with transaction.atomic():
        finished = _update_step(
            step.pk,
            where={"state": Step.RUNNING, "attempt": step.attempt},
            announce=f"step.{Step.SUCCEEDED}",
            lock_run=step.run_id,
            # A top-level step's key is its id: the (run, key) index finds them.
            count_down={"run_id": step.run_id, "group_id": None, "key": waiting}
            if waiting
            else None,
            state=Step.SUCCEEDED,
            output=output,
            finished_at=timezone.now(),
            lease_until=None,
        )
        if finished is None:
            return False
        engine = _Engine(step.run_id, run=finished.run, graph=(spec, dependents), here=here)
        engine.advance(finished.counted)
        engine.settle()
    return True


def _item_succeed(step: StepRun, output: object) -> bool:
    """A foreach item succeeded: count it down on its group, without the run's lock.

    Items of one group finish side by side on many agents. Only the group's
    counter row is shared, decremented last so its row lock is held until an
    immediate commit. The item that brings the count to zero completes the
    group in a second transaction that takes the run's lock first, as every
    other change to the run does, so no two transactions wait on each other
    in opposite order. Should this process die between the two, the reaper
    completes the group.
    """
    finished = _update_step(
        step.pk,
        where={"state": Step.RUNNING, "attempt": step.attempt},
        announce=f"step.{Step.SUCCEEDED}",
        count_down={"id": step.group_id},
        state=Step.SUCCEEDED,
        output=output,
        finished_at=timezone.now(),
        lease_until=None,
    )
    if finished is None:
        return False
    if finished.counted[0].pending_deps == 0:
        group_complete(group_id=step.group_id)
    return True


def group_complete(*, group_id: int) -> None:
    """Every item of a foreach group has finished: complete it and advance the run."""
    with transaction.atomic():
        engine = _Engine(StepRun.objects.values_list("run_id", flat=True).get(pk=group_id))
        engine.group_done(engine.step(group_id))
        engine.settle()


def _emit_step(step: StepRun, kind: str, **data) -> None:
    """Every step event: on the run's timeline, naming the step."""
    event_emit(kind=kind, subject=f"run:{step.run_id}", data={"step": step.key, **data})


def step_fail(*, step: StepRun, error: str, traceback: str = "", retryable: bool = True) -> bool:
    """Record a failed try of `step` (as claimed): retry it after its backoff, or fail
    it (and maybe the run)."""
    with transaction.atomic():
        engine = _Engine(step.run_id)
        step = engine.finish(step.pk, step.attempt, Step.FAILED, error=error, traceback=traceback)
        if step is None:
            return False
        engine.fail(step, error, retryable=retryable, finished=True)
        engine.settle()
    return True


def step_leases_renew(*, agent: str, task_ids: list[str]) -> int:
    """The agent still runs these tasks: push the leases of their steps forward (by
    task id: a task may have gone on to a step it kept, see Continuation)."""
    lease = timezone.now() + timedelta(seconds=settings.HIVE_STEP_LEASE)
    return StepRun.objects.filter(task_id__in=task_ids, agent=agent, state=Step.RUNNING).update(
        lease_until=lease
    )


# A task goes on with steps it dispatched for at most this long, then sends them
# through the broker: a drain, a warm shutdown or other work on its queues waits no
# longer than that (and the step already started) for a chain to let go.
KEEP_FOR = 1.0


class Continuation:
    """Lets the task that finished a step run the next one itself.

    A chain's step would otherwise go through Redis to a pool process that claims
    it after the hop: about half of each chain step's time. The engine keeps one
    step it dispatches for the task when it has no timeout (the task's time limits
    were set for the step it was sent with), is routed to one of the `queues` of
    this agent, and the agent takes work. The kept step is queued, claimed and run
    as any other; it carries the task's id, so revoking the task (a cancel) stops
    it, and the agent renews the leases of its tasks' steps. Should the process die
    before it claims the step, the reaper sends it as a lost message.
    """

    def __init__(self, *, agent: str, queues: list[str], task_id: str):
        self.agent, self.queues, self.task_id = agent, frozenset(queues), task_id
        self.until = time.monotonic() + KEEP_FOR
        self._step: StepRun | None = None

    def takes(self, step: StepRun, timeout: float | None) -> bool:
        return (
            timeout is None
            and step.queue in self.queues
            and time.monotonic() < self.until
            and agent_accepts_work(self.agent)
        )

    def keep(self, step: StepRun) -> None:
        """After commit: the step is the task's to run next."""
        self._step = step

    def take(self) -> StepRun | None:
        step, self._step = self._step, None
        return step


# --- the reaper -------------------------------------------------------------------


def steps_reap(*, queue_lengths) -> dict[str, int]:
    """Recover what Redis or a dead agent lost, and send what is due.

    - running steps whose agent is offline or whose lease ran out: tried again
      (a step that keeps losing its worker fails after HIVE_STEP_MAX_LOST tries);
    - queued steps unclaimed for HIVE_DISPATCH_TIMEOUT whose queue is empty
      (`queue_lengths(queues)` asks Redis): the message was lost, send it again;
    - retries whose backoff has passed, and steps waiting for an agent: sent;
    - foreach groups whose items all finished but were not completed: completed.
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
    # A foreach group whose last item's process died before completing it.
    for group_id in StepRun.objects.filter(
        state=Step.RUNNING, pending_deps=0, agent=""
    ).values_list("pk", flat=True):
        group_complete(group_id=group_id)
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


class _Delta:
    """`column = column + n` in `_update_step`."""

    def __init__(self, n: int):
        self.n = n


def _update_step(
    pk: int,
    *,
    where: dict,
    announce: str = "",
    count_down: dict | None = None,
    lock_run: int | None = None,
    durable: bool = True,
    **values,
) -> StepRun | None:
    """UPDATE one step if it matches `where` and read it back; None if it did not match.

    `announce` records the event of that kind for the step (its key, agent,
    attempt and tries) and reads back the run's workflow version
    (`workflow_id`, `workflow_digest`); `count_down` takes one from the pending
    count of the steps it matches, read back as `counted`; `lock_run` (the step's run
    id) first takes the run's row lock, as `_Engine` does, and reads the run back
    as `run` (its state and params). Not `durable`: PostgreSQL acknowledges the
    commit before its WAL is on disk (synchronous_commit off, for this statement
    only). Claims and results are the hot path of every step: on PostgreSQL these
    writes are one statement (data-modifying CTEs) in one round trip; elsewhere
    they run in turn in one transaction.
    """
    if connection.vendor == "postgresql" and announce:
        return _update_step_announcing(pk, where, announce, count_down, lock_run, durable, values)
    with transaction.atomic(savepoint=False):
        run = None
        if lock_run is not None:
            run = (
                Run.objects.select_for_update().only("state", "params", "workflow").get(pk=lock_run)
            )
        step = next(iter(_update_steps({"id": pk, **where}, **values)), None)
        if step is None:
            return None
        if announce:
            _emit_step(step, announce, agent=step.agent, attempt=step.attempt, tries=step.tries)
            step.workflow_id, step.workflow_digest = Workflow.objects.filter(
                runs=step.run_id
            ).values_list("pk", "digest")[0]
        step.counted = _update_steps(count_down, pending_deps=_Delta(-1)) if count_down else []
        if run is not None:
            step.run = run
    return step


def _update_step_announcing(
    pk, where, announce, count_down, lock_run, durable, values
) -> StepRun | None:
    qn = connection.ops.quote_name
    event_table = qn(Event._meta.db_table)
    run_table, workflow_table = qn(Run._meta.db_table), qn(Workflow._meta.db_table)
    # The data of every step event (_emit_step): the step's key, agent, attempt, tries.
    fields = {"step": "key", "agent": "agent", "attempt": "attempt", "tries": "tries"}
    data = ", ".join(f"'{name}', s.{qn(column)}" for name, column in fields.items())
    # Only quoted names from the models are formatted in; every value is a parameter.
    ctes, params, run_state, run_params, locked = [], [], "NULL", "NULL", ""
    if lock_run is not None:
        # The run's row first, as on every path that changes a run (_Engine): the
        # step's UPDATE waits for it (a one-time filter), so locks come in that order.
        ctes.append(f"r AS (SELECT state, params FROM {run_table} WHERE id = %s FOR UPDATE)")  # noqa: S608
        params.append(lock_run)
        run_state, run_params, locked = "(SELECT state FROM r)", "(SELECT params FROM r)", "r"
    update, update_params = _update_sql({"id": pk, **where}, values, after=locked)
    ctes += [
        f"s AS ({update})",
        f"e AS (INSERT INTO {event_table} (kind, subject, data, created_at) "  # noqa: S608
        f"SELECT %s, 'run:' || s.run_id, jsonb_build_object({data}), now() FROM s "
        "RETURNING id, created_at)",
    ]
    params += [*update_params, announce]
    counted = ""
    if count_down:
        # Counted rows are locked last, as on every other path (see _item_succeed).
        down, down_params = _update_sql(count_down, {"pending_deps": _Delta(-1)}, after="s")
        ctes.append(f"c AS ({down})")
        params += down_params
        counted = (
            f"UNION ALL SELECT {_step_columns('c')}, "  # noqa: S608
            "NULL, NULL, NULL, NULL, NULL, NULL FROM c"
        )
    # The step's row, then the rows counted down, in one result: their columns are
    # the same; the step's carries its event, its workflow version and the run.
    sql = (
        f"WITH {', '.join(ctes)} "  # noqa: S608
        f"SELECT {_step_columns('s')}, e.id AS event_id, e.created_at AS event_at, "
        "w.id AS workflow_id, w.digest AS workflow_digest, "
        f"{run_state} AS run_state, {run_params} AS run_params "
        f"FROM s CROSS JOIN e JOIN {run_table} rw ON rw.id = s.run_id "
        f"JOIN {workflow_table} w ON w.id = rw.workflow_id {counted}"
    )
    sql, params = prepared(sql, params)
    if not durable:
        # SET LOCAL lasts for the implicit transaction of this multi-statement query.
        sql = f"SET LOCAL synchronous_commit TO OFF; {sql}"
    rows = list(StepRun.objects.raw(sql, params))
    step = next((row for row in rows if row.pk == pk), None)
    if step is None:
        return None
    step.counted = [row for row in rows if row.pk != pk]
    if lock_run is not None:
        params_field = Run._meta.get_field("params")
        step.run = Run(
            pk=step.run_id,
            workflow_id=step.workflow_id,
            state=step.run_state,
            params=params_field.from_db_value(step.run_params, None, connection),
        )
    data = {name: getattr(step, column) for name, column in fields.items()}
    event = Event(pk=step.event_id, kind=announce, subject=f"run:{step.run_id}", data=data)
    event.created_at = step.event_at
    event_publish_on_commit(event)
    return step


def _step_columns(table: str) -> str:
    """A step's columns, named (as a prepared statement's result must be; see
    `prepared`) and read from `table`."""
    qn = connection.ops.quote_name
    return ", ".join(f"{table}.{qn(f.column)}" for f in StepRun._meta.concrete_fields)


def _update_steps(where: dict, **values) -> list[StepRun]:
    """UPDATE the steps matching `where` (a list means IN, None IS NULL) and read them
    back in the same statement (UPDATE ... RETURNING, PostgreSQL and SQLite 3.35+):
    claims, results and fan-in counts are the hot path of every step, and this
    halves their round trips."""
    return list(StepRun.objects.raw(*_update_sql(where, values)))


def _update_sql(where: dict, values: dict, *, after: str = "") -> tuple[str, list]:
    """The UPDATE ... RETURNING of `_update_steps`; with `after` (a CTE's name), it
    changes nothing unless that CTE returned a row, and runs after it."""
    qn = connection.ops.quote_name
    fields = StepRun._meta
    sets, params = [], []
    for name, value in values.items():
        column = qn(fields.get_field(name).column)
        if isinstance(value, _Delta):
            sets.append(f"{column} = {column} + %s")
            params.append(value.n)
        else:
            sets.append(f"{column} = %s")
            params.append(fields.get_field(name).get_db_prep_save(value, connection))
    conditions = []
    for name, value in where.items():
        column = qn(fields.get_field(name).column)
        if value is None:
            conditions.append(f"{column} IS NULL")
        elif isinstance(value, list):
            conditions.append(f"{column} IN ({', '.join(['%s'] * len(value))})")
            params.extend(value)
        else:
            conditions.append(f"{column} = %s")
            params.append(value)
    if after:
        conditions.append(f"EXISTS (SELECT 1 FROM {after})")  # noqa: S608 - a CTE's name
    # Only quoted column names from the model are formatted in; every value is a parameter.
    sql = (
        f"UPDATE {qn(fields.db_table)} SET {', '.join(sets)} "  # noqa: S608
        f"WHERE {' AND '.join(conditions)} RETURNING *"
    )
    return sql, params


_DISPATCH_FIELDS = (
    "state", "queue", "waiting_reason", "attempt", "task_id", "queued_at", "next_attempt_at",
    "inputs",
)  # fmt: skip


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


@lru_cache(maxsize=256)
def _workflow_graph(digest: str, workflow_id: int) -> tuple[dict, dict]:
    """A spec's steps by id and who needs each, cached by the spec's digest: a digest
    always means the same spec, even if a row id is ever reused."""
    spec = Workflow.objects.values_list("spec", flat=True).get(pk=workflow_id)
    return {s["id"]: s for s in spec["steps"]}, spec_dependents(spec)


class _Engine:
    """One run's DAG inside a transaction that holds the run's row lock."""

    def __init__(
        self,
        run_id: int,
        *,
        run: Run | None = None,
        graph: tuple | None = None,
        here: Continuation | None = None,
    ):
        """Lock run `run_id`'s row; or take `run` and its `graph` (of `_workflow_graph`)
        from a statement of the caller's that has locked it already. With `here`, one
        step dispatched may be kept for the calling task (see Continuation)."""
        if run is None:
            # Lock the run's row only (`of`): locking the workflow's too would make every
            # run of the workflow queue on it. The spec itself comes from the cache.
            run = (
                Run.objects.select_for_update(of=("self",))
                .select_related("workflow")
                .defer("workflow__spec")
                .get(pk=run_id)
            )
            graph = _workflow_graph(run.workflow.digest, run.workflow_id)
        self.run = run
        self.spec, self.dependents = graph
        self._maybe_waiting = self.run.state == RunState.WAITING
        self._outbox: list[StepRun] = []
        self._here, self._kept = here, None
        self._revoke: list[str] = []
        self._routes: dict[tuple, str | RoutingError] = {}
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
        if step.state != Step.WAITING:
            raise RunError(f"step {step.key!r} is {step.state}, not waiting for approval")
        return step

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
                self._set(step, Step.SKIPPED, finished_at=timezone.now())
                _emit_step(step, "step.skipped", when=spec["when"])
                return self.done(step)
        if spec["approval"]:
            self._set(step, Step.WAITING, waiting_reason="waiting for approval")
            self._maybe_waiting = True
            _emit_step(step, "step.waiting", reason="approval")
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
        self._set(group, Step.RUNNING, pending_deps=len(items), started_at=timezone.now())
        _emit_step(group, "step.expanded", items=len(items))
        if not items:
            return self.group_done(group)
        children = [
            self._prepare(
                StepRun(
                    run=self.run,
                    step_id=group.step_id,
                    key=f"{group.key}[{i}]",
                    group=group,
                    item_index=i,
                    item=item,
                    skill=group.skill,
                    inputs=inputs[i],
                )
            )
            for i, item in enumerate(items)
        ]
        StepRun.objects.bulk_create(children)
        self._outbox += [child for child in children if child.state == Step.QUEUED]
        return None

    def dispatch(self, step: StepRun) -> None:
        """Queue the step (sent after commit, or kept for the calling task), or leave it
        waiting for an agent."""
        self._prepare(step)
        queued = step.state == Step.QUEUED
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
        queue = self._route(step)
        if isinstance(queue, RoutingError):
            reason = f"waiting for an agent: {queue}"
            if reason != step.waiting_reason:  # the reaper asks again every pass
                _emit_step(step, "step.waiting", reason=reason)
            self._maybe_waiting = True
            step.state, step.waiting_reason = Step.PENDING, reason
        else:
            step.state, step.queue, step.waiting_reason = Step.QUEUED, queue, ""
            step.attempt += 1
            step.task_id, step.next_attempt_at = str(uuid.uuid4()), None
            step.queued_at = timezone.now()
        return step

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
        return _update_step(
            pk,
            where={"state": Step.RUNNING, "attempt": attempt},
            announce=f"step.{state}",
            state=state,
            finished_at=timezone.now(),
            lease_until=None,
            **fields,
        )

    def done(self, step: StepRun) -> None:
        """`step` succeeded, was skipped, or failed with on_failure: continue."""
        if step.group_id is not None:
            return self._item_done(step)
        waiting = self.dependents[step.step_id]
        if not waiting:
            return None
        # A top-level step's key is its id: the (run, key) index finds them.
        counted = _update_steps(
            {"run_id": self.run.pk, "group_id": None, "key": waiting}, pending_deps=_Delta(-1)
        )
        return self.advance(counted)

    def advance(self, counted: list[StepRun]) -> None:
        """Start the steps whose count of dependencies left has just come down to zero."""
        for ready in sorted(counted, key=lambda s: s.pk):
            if ready.pending_deps == 0 and ready.state == Step.PENDING:
                self.ready(ready)
        return None

    def _item_done(self, item: StepRun) -> None:
        self.steps(pk=item.group_id).update(pending_deps=F("pending_deps") - 1)
        self.group_done(self.step(item.group_id))

    def group_done(self, group: StepRun) -> None:
        """When every item of a foreach group has finished, the group succeeds with
        their outputs, in item order."""
        if group.pending_deps != 0 or group.state != Step.RUNNING:
            return
        outputs = list(self.steps(group=group).values_list("output", flat=True))
        self._set(group, Step.SUCCEEDED, output=outputs, finished_at=timezone.now())
        _emit_step(group, "step.succeeded", items=len(outputs))
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
            _emit_step(step, "step.retrying", error=error, delay=round(delay, 2))
            return None
        if not finished:
            self._set(step, Step.FAILED, error=error, finished_at=now)
            _emit_step(step, "step.failed", error=error)
        if spec["on_failure"] == "continue":
            return self.done(step)
        if step.group_id is not None:
            # The group fails with its item (rather than be cancelled with the rest), so
            # it shows the failure and can be retried: items are retried as their group.
            group = self.step(step.group_id)
            self._set(group, Step.FAILED, error=f"{step.key}: {error}", finished_at=now)
            _emit_step(group, "step.failed", error=group.error)
        return self.finish_run(RunState.FAILED, f"step {step.key!r} failed: {error}")

    def lost(self, step: StepRun) -> None:
        """Its agent died or stopped renewing the lease while it ran: try again, up to a cap."""
        cap = max(self.spec[step.step_id]["retries"] + 1, settings.HIVE_STEP_MAX_LOST)
        why = f"lost its worker on agent {step.agent!r} while running"
        self._archive(step, error=why)
        if step.tries >= cap:
            self._set(step, Step.FAILED, finished_at=timezone.now(), lease_until=None,
                      error=f"{why}, {step.tries} times; giving up")  # fmt: skip
            _emit_step(step, "step.failed", error=step.error)
            self.fail(step, step.error, retryable=False, finished=True)
            return
        _emit_step(step, "step.lost", agent=step.agent)
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
        # Lock the open steps in id order, as lease renewals do, so two multi-row
        # updates never wait on each other in opposite order.
        rows = self.steps(state__in=StepRun.OPEN).select_for_update().order_by("id")
        rows = list(rows.values_list("pk", "state", "task_id"))
        self._revoke += [task for _, state, task in rows if state == Step.RUNNING and task]
        StepRun.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(
            state=Step.CANCELLED, finished_at=timezone.now(), lease_until=None
        )
        Run.objects.filter(pk=self.run.pk).update(
            state=state, error=error, finished_at=timezone.now()
        )
        self.run.state = state
        event_emit(kind=f"run.{state}", subject=f"run:{self.run.pk}", data={"error": error})

    def settle(self) -> None:
        """Finish the run when no step is left, or say whether it waits (approval, agents)."""
        if self.run.state in Run.TERMINAL:
            return
        # A step queued in this transaction is open: no need to ask the database.
        queued = self._outbox or self._kept
        if not queued and not self.steps(state__in=StepRun.OPEN).exists():
            return self.finish_run(RunState.SUCCEEDED)
        if not self._maybe_waiting:
            return None  # nothing this transaction did can have started or ended a wait
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
        """After commit: hand the queued steps to Celery (or the kept one to the calling
        task), stop the cancelled ones."""
        if self._kept:
            self._here.keep(self._kept)
        dispatch.send([
            dispatch.Outgoing(step.pk, step.attempt, step.task_id, step.queue,
                              self.spec[step.step_id]["timeout"])
            for step in self._outbox
        ])  # fmt: skip
        dispatch.revoke(self._revoke)


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
    _emit_step(step, "step.handoff", sender=sender, to=to, message=message_id)
