"""The statements of a step's claim and result, the engine's hot path: what each one
writes, and how few round trips a chain step costs on PostgreSQL."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents import routing
from agents.models import Agent
from coordination.models import StepRun
from coordination.services import run_start, step_claim, step_succeed
from events.models import Event

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def chain(redis_url, make_workflow, monkeypatch):
    """A run of a -> b -> c on an agent row that offers `noop` (no process: nothing claims)."""
    Agent.objects.create(name="hot", role="worker", skills=["noop"], status=Agent.Status.IDLE)
    # Routing reads the agents at most once a second: make it read this one now.
    monkeypatch.setattr(routing, "_agents_cache", (0.0, []))
    links = [
        {"id": "a", "skill": "noop"},
        {"id": "b", "skill": "noop", "needs": ["a"]},
        {"id": "c", "skill": "noop", "needs": ["b"], "with": {"x": "{{ steps.b.output }}"}},
    ]
    return run_start(workflow=make_workflow(links), params={})


def test_a_claim_reads_back_the_step_and_its_workflow_version(chain):
    first = StepRun.objects.get(run=chain, key="a")

    claimed = step_claim(step_run_id=first.pk, attempt=first.attempt, agent="hot")

    assert (claimed.state, claimed.agent, claimed.tries) == ("running", "hot", 1)
    assert (claimed.workflow_id, claimed.workflow_digest) == (
        chain.workflow_id,
        chain.workflow.digest,
    )
    assert Event.objects.filter(kind="step.running", subject=f"run:{chain.pk}").count() == 1
    assert step_claim(step_run_id=first.pk, attempt=first.attempt, agent="hot") is None
    if connection.vendor == "postgresql":
        # The claim's commit was not waited for; what follows on the connection is.
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone() == ("on",)


def test_a_result_ends_the_step_counts_down_and_queues_the_next_in_two_statements(chain):
    first = StepRun.objects.get(run=chain, key="a")
    claimed = step_claim(step_run_id=first.pk, attempt=first.attempt, agent="hot")

    with CaptureQueriesContext(connection) as captured:
        assert step_succeed(step=claimed, output={"n": 1})

    steps = {s.key: s for s in StepRun.objects.filter(run=chain)}
    assert (steps["a"].state, steps["a"].output) == ("succeeded", {"n": 1})
    assert (steps["b"].state, steps["b"].pending_deps, steps["b"].attempt) == ("queued", 0, 1)
    assert (steps["c"].state, steps["c"].pending_deps) == ("pending", 1)
    kinds = Event.objects.filter(subject=f"run:{chain.pk}").values_list("kind", flat=True)
    assert list(kinds).count("step.succeeded") == 1
    if connection.vendor == "postgresql":
        # Lock the run, end the step, its event, the count down: one statement;
        # then the next step's dispatch. (Its first use on a connection prepares it.)
        statements = [
            q["sql"]
            for q in captured
            if q["sql"] not in ("BEGIN", "COMMIT") and not q["sql"].startswith("PREPARE")
        ]
        assert len(statements) == 2, statements


def _prepares(run) -> list[str]:
    """Claim the first step of `run`; the statements that prepared."""
    step = StepRun.objects.get(run=run, key="a")
    with CaptureQueriesContext(connection) as captured:
        assert step_claim(step_run_id=step.pk, attempt=step.attempt, agent="hot")
    return [q["sql"] for q in captured if q["sql"].startswith("PREPARE")]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements: PostgreSQL")
def test_the_claim_is_prepared_once_per_connection_and_outlives_a_new_column(chain):
    runs = [chain] + [run_start(workflow=chain.workflow, params={}) for _ in range(3)]

    assert len(_prepares(runs[0])) == 1
    assert _prepares(runs[1]) == []  # the same connection: prepared already
    connection.close()
    assert len(_prepares(runs[2])) == 1  # a new connection prepares it again
    with connection.cursor() as cursor:
        # A migration adding a column while agents run: a prepared `RETURNING *` would
        # fail with "cached plan must not change result type".
        cursor.execute("ALTER TABLE coordination_steprun ADD COLUMN hot_path_test integer")
        try:
            assert _prepares(runs[3]) == []
        finally:
            cursor.execute("ALTER TABLE coordination_steprun DROP COLUMN hot_path_test")


def test_a_stale_result_changes_nothing(chain):
    first = StepRun.objects.get(run=chain, key="a")
    claimed = step_claim(step_run_id=first.pk, attempt=first.attempt, agent="hot")
    StepRun.objects.filter(pk=first.pk).update(attempt=first.attempt + 1, state="queued")

    assert not step_succeed(step=claimed, output={"n": 1})

    assert StepRun.objects.get(run=chain, key="b").pending_deps == 1
    assert not Event.objects.filter(kind="step.succeeded").exists()


def test_outputs_reach_the_next_steps_inputs_through_the_chain(chain):
    for key, output in (("a", 1), ("b", {"deep": [2]})):
        step = StepRun.objects.get(run=chain, key=key)
        claimed = step_claim(step_run_id=step.pk, attempt=step.attempt, agent="hot")
        assert step_succeed(step=claimed, output=output)

    last = StepRun.objects.get(run=chain, key="c")
    assert (last.state, last.inputs) == ("queued", {"x": {"deep": [2]}})
    claimed = step_claim(step_run_id=last.pk, attempt=last.attempt, agent="hot")
    assert step_succeed(step=claimed, output=None)
    chain.refresh_from_db()
    assert chain.state == "succeeded"
