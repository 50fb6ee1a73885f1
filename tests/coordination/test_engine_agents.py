"""The engine on real agent processes: a DAG runs on an agent, a step's time limit
stops it, a cancel stops the step running on an agent, a failed run stops its other
running steps, and a chain goes on in the task of the step before. The DAG's rules
themselves run in this process (test_engine.py)."""

import time
import uuid

import pytest

from agents.models import Agent
from coordination.models import StepRun
from coordination.services import RunError, run_cancel, run_start
from tests.processes import wait_for
from tests.runs import steps_of, wait_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def agent(shared_agent, transactional_db):
    """One agent for the module's tests: none of them needs a fresh one."""
    return shared_agent(
        "engine", skills="noop,sleep,test.flaky,test.fail,test.upper", concurrency=2
    )


def test_a_linear_chain_runs_in_order_passing_outputs(agent, make_workflow):
    workflow = make_workflow(
        [
            {"id": "a", "skill": "test.upper", "with": {"text": "{{ params.word }}"}},
            {
                "id": "b",
                "skill": "noop",
                "needs": "a",
                "with": {"got": "{{ steps.a.output.text }}!"},
            },
            {"id": "c", "skill": "noop", "needs": "b", "with": {"final": "{{ steps.b.output }}"}},
        ],
        params={"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    )

    run = wait_run(run_start(workflow=workflow, params={"word": "hive"}))

    assert run.state == "succeeded"
    steps = steps_of(run)
    assert steps["c"].output == {"final": {"got": "HIVE!"}}
    assert steps["a"].finished_at <= steps["b"].started_at
    assert steps["b"].finished_at <= steps["c"].started_at
    assert {s.agent for s in steps.values()} == {"engine"}
    assert all(s.tries == 1 for s in steps.values())


def test_a_step_out_of_retries_fails_the_run_and_cancels_the_rest(
    agent, coordinator, make_workflow
):
    workflow = make_workflow(
        [
            {"id": "bad", "skill": "test.flaky", "retries": 1, "backoff": 0.1,
             "with": {"key": str(uuid.uuid4()), "failures": 5}},
            {"id": "slow", "skill": "sleep", "with": {"seconds": 30}},
            {"id": "never", "skill": "noop", "needs": "bad"},
        ]
    )  # fmt: skip

    run = wait_run(run_start(workflow=workflow, params={}))

    steps = steps_of(run)
    assert run.state == "failed"
    assert run.error == "step 'bad' failed: flaky failure 2 of 5"
    assert (steps["bad"].state, steps["bad"].tries) == ("failed", 2)
    assert steps["slow"].state == "cancelled" and steps["never"].state == "cancelled"


def test_a_step_that_exceeds_its_timeout_fails(agent, make_workflow):
    workflow = make_workflow(
        [{"id": "hang", "skill": "sleep", "timeout": 1, "with": {"seconds": 30}}]
    )

    started = time.monotonic()
    run = wait_run(run_start(workflow=workflow, params={}))

    assert run.state == "failed"
    assert steps_of(run)["hang"].error == "timed out after 1 s"
    assert time.monotonic() - started < 20


# Kept: the long step runs in the task that ran the step before it (Continuation).
@pytest.mark.parametrize("kept", [False, True], ids=["sent", "kept"])
def test_cancel_mid_run_stops_the_running_step_and_starts_nothing_more(agent, make_workflow, kept):
    before = [{"id": "a", "skill": "noop"}] if kept else []
    workflow = make_workflow(
        [
            *before,
            {
                "id": "long",
                "skill": "sleep",
                "with": {"seconds": 60},
                "needs": [s["id"] for s in before],
            },
            {"id": "after", "skill": "noop", "needs": "long"},
        ]
    )
    run = run_start(workflow=workflow, params={})
    wait_for(
        lambda: StepRun.objects.get(run=run, key="long").state == "running",
        timeout=30,
        what="the long step to run",
    )
    if kept:
        steps = steps_of(run)
        assert steps["long"].task_id == steps["a"].task_id

    run = run_cancel(run=run)

    assert run.state == "cancelled"
    steps = steps_of(run)
    assert steps["long"].state == "cancelled" and steps["after"].state == "cancelled"
    # Revoking the task terminated the pool process running the step: the agent
    # reports nothing running well before the 60 s sleep would have ended.
    wait_for(
        lambda: Agent.objects.filter(name="engine", load=0).exists(),
        timeout=20,
        what="the agent to run nothing",
    )
    with pytest.raises(RunError, match=f"run {run.pk} is already cancelled"):
        run_cancel(run=run)


def test_a_chain_goes_on_in_the_task_that_ran_the_step_before(agent, coordinator, make_workflow):
    # The second step outlives HIVE_STEP_LEASE (4 s in the tests): kept by the task
    # of the first, its lease is still renewed, so it is not taken for lost.
    workflow = make_workflow(
        [
            {"id": "a", "skill": "noop"},
            {"id": "b", "skill": "sleep", "needs": "a", "with": {"seconds": 6}},
        ]
    )

    run = wait_run(run_start(workflow=workflow, params={}), timeout=60)

    assert run.state == "succeeded"
    steps = steps_of(run)
    assert steps["b"].tries == 1 and not steps["b"].history
    assert steps["b"].task_id == steps["a"].task_id
