"""The engine's test harness (harness.py) itself: it runs what the engine sends after
commit, as the agent the queue reaches, and stops a step at its time limit as an
agent's pool does."""

import time

import pytest

from coordination.services import run_start
from tests.runs import steps_of

pytestmark = pytest.mark.django_db(transaction=True)


def test_what_the_engine_sends_runs_on_an_agent_consuming_its_queue(harness, make_workflow):
    harness.agent("left", skills="noop")
    harness.agent("right", skills="sleep")
    workflow = make_workflow(
        [
            {"id": "a", "skill": "noop"},
            {"id": "b", "skill": "sleep", "needs": "a", "with": {"seconds": 0}},
        ]
    )

    run = run_start(workflow=workflow, params={})

    # Sent once committed; nothing runs until the test drains.
    assert [(out.queue, out.attempt) for out in harness.outgoing] == [("skill.noop", 1)]
    ran = harness.drain()
    assert [(out.queue, agent) for out, agent in ran] == [
        ("skill.noop", "left"),
        ("skill.sleep", "right"),
    ]
    assert harness.outgoing == [] and harness.revoked == []
    steps = steps_of(run)
    assert (steps["a"].agent, steps["b"].agent) == ("left", "right")
    assert [out.task_id for out, _ in ran] == [steps["a"].task_id, steps["b"].task_id]


def test_a_step_is_stopped_at_its_time_limit(harness, make_workflow):
    harness.agent("napper", skills="sleep")
    workflow = make_workflow(
        [{"id": "hang", "skill": "sleep", "timeout": 1, "with": {"seconds": 30}}]
    )

    started = time.monotonic()
    run = harness.settle(run_start(workflow=workflow, params={}))

    assert run.state == "failed"
    assert steps_of(run)["hang"].error == "timed out after 1 s"
    assert time.monotonic() - started < 10
