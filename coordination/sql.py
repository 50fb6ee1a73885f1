"""The statements of the engine's hot path: a step's claim and its result.

Claims and results are what every step costs: on PostgreSQL each is one statement
(data-modifying CTEs) in one round trip, prepared once per connection; elsewhere
they run in turn in one transaction. Their UPDATE ... RETURNING comes from the
builder agents uses too (hive_core.sql).
"""

from django.db import connection, transaction

from coordination.models import Run, StepRun, Workflow
from events.kinds import run_subject
from events.models import Event
from events.services import event_emit, event_publish_on_commit
from hive_core.db import prepared
from hive_core.sql import Add, update_sql

# The data of every step event besides its own: the step's key, agent, attempt and
# tries; the announcing statement writes the same from the step's columns.
_ANNOUNCED = {"step": "key", "agent": "agent", "attempt": "attempt", "tries": "tries"}


def step_event_emit(step: StepRun, kind: str, **data) -> None:
    """Every step event: on the run's timeline, naming the step."""
    event_emit(kind=kind, subject=run_subject(step.run_id), data={"step": step.key, **data})


def step_update(
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
    id) first takes the run's row lock, as the Engine does, and reads the run back
    as `run` (its state and params). Not `durable`: PostgreSQL acknowledges the
    commit before its WAL is on disk (synchronous_commit off, for this statement
    only). Claims and results are the hot path of every step: on PostgreSQL these
    writes are one statement (data-modifying CTEs) in one round trip; elsewhere
    they run in turn in one transaction.
    """
    if connection.vendor == "postgresql" and announce:
        return _step_update_announcing(pk, where, announce, count_down, lock_run, durable, values)
    with transaction.atomic(savepoint=False):
        run = None
        if lock_run is not None:
            run = (
                Run.objects.select_for_update()
                .only("state", "params", "workflow", "concurrency_key")
                .get(pk=lock_run)
            )
        step = next(iter(steps_update({"id": pk, **where}, **values)), None)
        if step is None:
            return None
        if announce:
            step_event_emit(
                step, announce, agent=step.agent, attempt=step.attempt, tries=step.tries
            )
            step.workflow_id, step.workflow_digest = Workflow.objects.filter(
                runs=step.run_id
            ).values_list("pk", "digest")[0]
        step.counted = steps_update(count_down, pending_deps=Add(-1)) if count_down else []
        if run is not None:
            step.run = run
    return step


def _step_update_announcing(
    pk, where, announce, count_down, lock_run, durable, values
) -> StepRun | None:
    """`step_update` with its event, as one prepared statement (PostgreSQL)."""
    sql, params = _announcing_sql(pk, where, announce, count_down, lock_run, values)
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
            concurrency_key=step.run_concurrency_key,
        )
    data = {name: getattr(step, column) for name, column in _ANNOUNCED.items()}
    event = Event(pk=step.event_id, kind=announce, subject=run_subject(step.run_id), data=data)
    event.created_at = step.event_at
    event_publish_on_commit(event)
    return step


def _announcing_sql(pk, where, announce, count_down, lock_run, values) -> tuple[str, list]:
    qn = connection.ops.quote_name
    event_table = qn(Event._meta.db_table)
    run_table, workflow_table = qn(Run._meta.db_table), qn(Workflow._meta.db_table)
    data = ", ".join(f"'{name}', s.{qn(column)}" for name, column in _ANNOUNCED.items())
    # Only quoted names from the models are formatted in; every value is a parameter.
    ctes, params, locked = [], [], ""
    run_state = run_params = run_key = "NULL"
    if lock_run is not None:
        # The run's row first, as on every path that changes a run (the Engine): the
        # step's UPDATE waits for it (a one-time filter), so locks come in that order.
        ctes.append(
            f"r AS (SELECT state, params, concurrency_key FROM {run_table} "  # noqa: S608
            "WHERE id = %s FOR UPDATE)"
        )
        params.append(lock_run)
        run_state, run_params, locked = "(SELECT state FROM r)", "(SELECT params FROM r)", "r"
        run_key = "(SELECT concurrency_key FROM r)"
    update, update_params = _update_sql({"id": pk, **where}, values, after=locked)
    ctes += [
        f"s AS ({update})",
        # The subject is the run's (events.kinds.run_subject), spelled out in SQL.
        f"e AS (INSERT INTO {event_table} (kind, subject, data, created_at) "  # noqa: S608
        f"SELECT %s, 'run:' || s.run_id, jsonb_build_object({data}), now() FROM s "
        "RETURNING id, created_at)",
    ]
    params += [*update_params, announce]
    counted = ""
    if count_down:
        # Counted rows are locked last, as on every other path (see engine._item_succeed).
        down, down_params = _update_sql(count_down, {"pending_deps": Add(-1)}, after="s")
        ctes.append(f"c AS ({down})")
        params += down_params
        counted = (
            f"UNION ALL SELECT {_step_columns('c')}, "  # noqa: S608
            "NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM c"
        )
    # The step's row, then the rows counted down, in one result: their columns are
    # the same; the step's carries its event, its workflow version and the run.
    sql = (
        f"WITH {', '.join(ctes)} "  # noqa: S608
        f"SELECT {_step_columns('s')}, e.id AS event_id, e.created_at AS event_at, "
        "w.id AS workflow_id, w.digest AS workflow_digest, "
        f"{run_state} AS run_state, {run_params} AS run_params, "
        f"{run_key} AS run_concurrency_key "
        f"FROM s CROSS JOIN e JOIN {run_table} rw ON rw.id = s.run_id "
        f"JOIN {workflow_table} w ON w.id = rw.workflow_id {counted}"
    )
    return sql, params


def _step_columns(table: str) -> str:
    """A step's columns, named (as a prepared statement's result must be; see
    `prepared`) and read from `table`."""
    qn = connection.ops.quote_name
    return ", ".join(f"{table}.{qn(f.column)}" for f in StepRun._meta.concrete_fields)


def steps_update(where: dict, **values) -> list[StepRun]:
    """UPDATE the steps matching `where` (a list means IN, None IS NULL) and read them
    back in the same statement (UPDATE ... RETURNING, PostgreSQL and SQLite 3.35+):
    claims, results and fan-in counts are the hot path of every step, and this
    halves their round trips."""
    return list(StepRun.objects.raw(*_update_sql(where, values)))


def _update_sql(where: dict, values: dict, *, after: str = "") -> tuple[str, list]:
    """The UPDATE ... RETURNING of `steps_update`, by the steps' field names; with
    `after` (a CTE's name), it changes nothing unless that CTE returned a row."""
    fields = StepRun._meta
    columns = {}
    for name, value in values.items():
        field = fields.get_field(name)
        columns[field.column] = (
            value if isinstance(value, Add) else field.get_db_prep_save(value, connection)
        )
    matches = {fields.get_field(name).column: value for name, value in where.items()}
    return update_sql(fields.db_table, values=columns, where=matches, after=after)
