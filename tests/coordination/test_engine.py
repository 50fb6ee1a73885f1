"""The engine's DAG rules on the test database, each step run in this process
(tests/coordination/harness.py): DAGs run in dependency order, outputs flow between
steps, and failures, retries, approvals, reruns and steps waiting for an agent
behave. What takes agent processes (time limits, a cancel stopping a running step,
a chain going on in one task) is in test_engine_agents.py."""

import uuid

import pytest

from coordination.models import Run, StepRun
from coordination.services import (
    RunError,
    run_cancel,
    run_rerun,
    run_start,
    step_approve,
    step_reject,
    step_retry,
)
from events.models import Event
from tests.runs import steps_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def agent(harness):
    return harness.agent(
        "engine", skills="noop,sleep,test.flaky,test.fail,test.upper", concurrency=2
    )


def test_every_step_change_is_an_event_naming_the_step_agent_and_try(harness, agent, make_workflow):
    workflow = make_workflow(
        [
            {"id": "one", "skill": "noop"},
            {"id": "each", "skill": "noop", "needs": "one", "foreach": "{{ [1, 2] }}"},
        ]
    )

    run = harness.settle(run_start(workflow=workflow, params={}))

    events = [(e.kind, e.data) for e in Event.objects.filter(subject=f"run:{run.pk}")]
    step = {"agent": "engine", "attempt": 1, "tries": 1}
    assert events[:4] == [
        ("run.started", {"workflow": str(workflow), "params": {}}),
        ("step.running", {"step": "one", **step}),
        ("step.succeeded", {"step": "one", **step}),
        ("step.expanded", {"step": "each", "items": 2}),
    ]
    # The two items run side by side: their events may interleave.
    items = [(kind, {"step": f"each[{i}]", **step})
             for i in (0, 1) for kind in ("step.running", "step.succeeded")]  # fmt: skip
    assert sorted(events[4:8], key=str) == sorted(items, key=str)
    assert events[8:] == [
        ("step.succeeded", {"step": "each", "items": 2}),
        ("run.succeeded", {"error": ""}),
    ]


def test_a_diamond_fans_out_and_in(harness, agent, make_workflow):
    workflow = make_workflow(
        [
            {"id": "top", "skill": "noop", "with": {"n": 1}},
            {"id": "left", "skill": "sleep", "needs": "top", "with": {"seconds": 0.5}},
            {"id": "right", "skill": "sleep", "needs": "top", "with": {"seconds": 0.5}},
            {
                "id": "bottom",
                "skill": "noop",
                "needs": ["left", "right"],
                "with": {
                    "l": "{{ steps.left.output.slept }}",
                    "r": "{{ steps.right.output.slept }}",
                },
            },
        ]
    )

    run = harness.settle(run_start(workflow=workflow, params={}))

    steps = steps_of(run)
    assert run.state == "succeeded"
    assert steps["bottom"].output == {"l": 0.5, "r": 0.5}
    # left and right ran side by side on the agent's two workers
    assert steps["left"].started_at < steps["right"].finished_at
    assert steps["bottom"].started_at >= max(steps["left"].finished_at, steps["right"].finished_at)


def test_foreach_runs_one_step_per_item_and_the_next_step_waits_for_all(
    harness, agent, make_workflow
):
    workflow = make_workflow(
        [
            {"id": "each", "skill": "test.upper", "foreach": "{{ params.words }}",
             "with": {"text": "{{ item }}"}},
            {"id": "after", "skill": "noop", "needs": "each",
             "with": {"count": "{{ steps.each.output | length }}"}},
        ]
    )  # fmt: skip
    words = [f"w{i}" for i in range(50)]

    run = harness.settle(run_start(workflow=workflow, params={"words": words}))

    steps = steps_of(run)
    assert run.state == "succeeded"
    assert steps["each"].output == [{"text": w.upper()} for w in words]
    assert steps["after"].output == {"count": 50}
    items = [s for s in steps.values() if s.group_id]
    assert len(items) == 50 and all(s.state == "succeeded" for s in items)
    assert steps["after"].started_at >= max(s.finished_at for s in items)


def test_a_foreach_longer_than_its_limit_fails_making_no_items(make_workflow, settings):
    settings.HIVE_FOREACH_MAX = 3
    workflow = make_workflow([{"id": "each", "skill": "noop", "foreach": "{{ params.n }}"}])

    run = run_start(workflow=workflow, params={"n": [1, 2, 3, 4]})

    run.refresh_from_db()
    assert (run.state, run.error) == (
        "failed", "step 'each' failed: foreach: 4 items, more than HIVE_FOREACH_MAX (3)",
    )  # fmt: skip
    assert list(StepRun.objects.filter(run=run).values_list("key", flat=True)) == ["each"]


def test_when_skips_a_step_and_its_dependents_still_run(harness, agent, make_workflow):
    workflow = make_workflow(
        [
            {"id": "prod_only", "skill": "noop", "when": "params.env == 'prod'"},
            {"id": "always", "skill": "noop", "needs": "prod_only",
             "with": {"skipped": "{{ steps.prod_only.state }}"}},
        ]
    )  # fmt: skip

    run = harness.settle(run_start(workflow=workflow, params={"env": "staging"}))

    steps = steps_of(run)
    assert (run.state, steps["prod_only"].state) == ("succeeded", "skipped")
    assert steps["always"].output == {"skipped": "skipped"}


def test_retries_back_off_then_succeed(harness, agent, make_workflow):
    workflow = make_workflow(
        [{"id": "flaky", "skill": "test.flaky", "retries": 3, "backoff": 0.5,
          "with": {"key": str(uuid.uuid4()), "failures": 2}}]
    )  # fmt: skip

    run = harness.settle(run_start(workflow=workflow, params={}))

    step = steps_of(run)["flaky"]
    assert (run.state, step.tries, step.output) == ("succeeded", 3, {"tries": 3})
    assert [h["error"] for h in step.history] == ["flaky failure 1 of 2", "flaky failure 2 of 2"]
    first_end, second_start = step.history[0]["finished_at"], step.history[1]["started_at"]
    assert first_end < second_start


def test_on_failure_continue_lets_the_run_go_on(harness, agent, make_workflow):
    workflow = make_workflow(
        [
            {"id": "optional", "skill": "test.fail", "on_failure": "continue"},
            {"id": "next", "skill": "noop", "needs": "optional", "with": {"ok": True}},
        ]
    )

    run = harness.settle(run_start(workflow=workflow, params={}))

    steps = steps_of(run)
    assert (run.state, steps["optional"].state, steps["next"].state) == (
        "succeeded",
        "failed",
        "succeeded",
    )
    assert steps["optional"].error == "this step always fails"


def test_retry_from_a_failed_step_reruns_it_and_everything_after(harness, agent, make_workflow):
    key = str(uuid.uuid4())
    workflow = make_workflow(
        [
            {"id": "first", "skill": "noop", "with": {"n": 1}},
            {"id": "shaky", "skill": "test.flaky", "needs": "first",
             "with": {"key": key, "failures": 1}},
            {"id": "last", "skill": "noop", "needs": "shaky",
             "with": {"after": "{{ steps.shaky.output }}"}},
        ]
    )  # fmt: skip
    run = harness.settle(run_start(workflow=workflow, params={}))
    assert run.state == "failed"
    first_finished = steps_of(run)["first"].finished_at

    run = harness.settle(step_retry(step=steps_of(run)["shaky"]))

    steps = steps_of(run)
    assert run.state == "succeeded"
    assert steps["last"].output == {"after": {"tries": 2}}
    assert steps["first"].finished_at == first_finished  # not run again
    assert steps["shaky"].history[0]["error"] == "flaky failure 1 of 1"
    assert steps["last"].history[0]["state"] == "cancelled"


def test_a_failed_foreach_item_fails_its_group_which_retries_all_items(
    harness, agent, make_workflow
):
    key = str(uuid.uuid4())
    workflow = make_workflow(
        [
            {"id": "each", "skill": "test.flaky", "foreach": "{{ [0, 1, 2] }}",
             "with": {"key": f"{key}:{{{{ item }}}}", "failures": "{{ 1 if item == 1 else 0 }}"}},
            {"id": "after", "skill": "noop", "needs": "each"},
        ]
    )  # fmt: skip
    run = harness.settle(run_start(workflow=workflow, params={}))
    steps = steps_of(run)
    assert (run.state, run.error) == ("failed", "step 'each[1]' failed: flaky failure 1 of 1")
    assert (steps["each"].state, steps["each"].error) == (
        "failed", "each[1]: flaky failure 1 of 1",
    )  # fmt: skip

    run = harness.settle(step_retry(step=steps["each[1]"]))

    steps = steps_of(run)
    assert (run.state, steps["after"].state) == ("succeeded", "succeeded")
    # Item 1 failed once and now succeeded; items 0 and 2 may or may not have run
    # before the failure cancelled the rest, so their counts are 1 or 2.
    assert steps["each"].output[1] == {"tries": 2}
    assert all(s.state == "succeeded" for s in steps.values())


def test_approval_holds_the_step_without_a_worker_until_approved(harness, agent, make_workflow):
    workflow = make_workflow(
        [
            {"id": "gate", "skill": "noop", "approval": True, "with": {"env": "{{ params.env }}"}},
            {"id": "deploy", "skill": "noop", "needs": "gate"},
        ]
    )
    run = run_start(workflow=workflow, params={"env": "prod"})

    assert run.state == "waiting"
    gate = StepRun.objects.get(run=run, key="gate")
    assert (gate.state, gate.queue, gate.task_id) == ("waiting", "", "")

    step_approve(step=gate, user="ada")
    run = harness.settle(run)

    assert run.state == "succeeded"
    assert steps_of(run)["gate"].history[0]["approved_by"] == "ada"


def test_a_step_sent_before_its_run_was_cancelled_is_not_run_when_delivered(
    harness, agent, make_workflow
):
    """The cancel's DAG rule; stopping a step already running is the agent's part
    (test_engine_agents.py)."""
    workflow = make_workflow(
        [{"id": "a", "skill": "noop"}, {"id": "b", "skill": "noop", "needs": "a"}]
    )
    run = run_start(workflow=workflow, params={})

    run = run_cancel(run=run)
    delivered = harness.drain()  # the message sent for `a` still reaches the agent

    assert run.state == "cancelled"
    assert [out.step_run_id for out, _ in delivered] == [steps_of(run)["a"].pk]
    assert {key: (s.state, s.tries) for key, s in steps_of(run).items()} == {
        "a": ("cancelled", 0),
        "b": ("cancelled", 0),
    }
    assert Run.objects.get(pk=run.pk).state == "cancelled"


def test_rejecting_an_approval_fails_the_run(agent, make_workflow):
    workflow = make_workflow([{"id": "gate", "skill": "noop", "approval": True}])
    run = run_start(workflow=workflow, params={})

    step_reject(step=StepRun.objects.get(run=run, key="gate"), user="bob", reason="not today")

    run = Run.objects.get(pk=run.pk)
    assert run.state == "failed"
    assert run.error == "step 'gate' failed: rejected by bob: not today"
    with pytest.raises(RunError, match="step 'gate' is failed, not waiting for approval"):
        step_approve(step=StepRun.objects.get(run=run, key="gate"))


def test_rerun_starts_a_new_run_with_the_same_version_and_params(harness, agent, make_workflow):
    workflow = make_workflow([{"id": "echo", "skill": "noop", "with": {"v": "{{ params.v }}"}}])
    first = harness.settle(run_start(workflow=workflow, params={"v": 7}))

    second = harness.settle(run_rerun(run=first))

    assert second.pk != first.pk and second.rerun_of_id == first.pk
    assert (second.workflow_id, second.params, second.state) == (workflow.pk, {"v": 7}, "succeeded")
    assert steps_of(second)["echo"].output == {"v": 7}


def test_invalid_params_start_nothing(make_workflow):
    workflow = make_workflow(
        [{"id": "a", "skill": "noop"}],
        params={"type": "object", "properties": {"env": {"enum": ["staging", "prod"]}}},
    )

    with pytest.raises(RunError, match=r"^params.env: 'qa' is not one of \['staging', 'prod'\]$"):
        run_start(workflow=workflow, params={"env": "qa"})
    assert not Run.objects.exists()


def test_a_step_no_agent_offers_waits_and_says_why_until_one_arrives(harness, make_workflow):
    harness.agent("plain", skills="noop")
    workflow = make_workflow([{"id": "nap", "skill": "sleep", "with": {"seconds": 0}}])

    run = run_start(workflow=workflow, params={})

    step = StepRun.objects.get(run=run, key="nap")
    assert run.state == "waiting"
    assert step.waiting_reason == "waiting for an agent: any agent does not offer skill 'sleep'"

    harness.agent("napper", skills="sleep")
    run = harness.settle(run)
    assert run.state == "succeeded"
    assert steps_of(run)["nap"].agent == "napper"


def test_output_json_cannot_hold_fails_the_step_without_retries(harness, make_workflow):
    harness.agent("odd", skills="test.unjsonable")
    workflow = make_workflow([{"id": "odd", "skill": "test.unjsonable", "retries": 3}])

    run = harness.settle(run_start(workflow=workflow, params={}))

    step = steps_of(run)["odd"]
    assert (run.state, step.tries) == ("failed", 1)
    assert step.error == "output is not JSON: Object of type set is not JSON serializable"


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("{{ steps.a.output.nope }}", "with: 'dict object' has no attribute 'nope'"),
        ("{{ 1 / steps.a.output.n }}", "with: ZeroDivisionError: division by zero"),
        ("{{ steps.a.output.items }}", "with: the value is a builtin_function_or_method"),
    ],
    ids=["undefined", "error", "not-json"],
)
def test_a_template_failing_on_an_output_fails_its_step(
    harness, agent, make_workflow, template, error
):
    """Rendered in the task that finished `a`: the failure is b's, and a's result stands."""
    workflow = make_workflow(
        [
            {"id": "a", "skill": "noop", "with": {"n": 0}},
            {"id": "b", "skill": "noop", "needs": "a", "with": {"y": template}},
        ]
    )

    run = harness.settle(run_start(workflow=workflow, params={}))

    steps = steps_of(run)
    assert (run.state, steps["a"].state, steps["a"].tries) == ("failed", "succeeded", 1)
    assert (steps["b"].state, steps["b"].tries) == ("failed", 0)
    assert steps["b"].error.startswith(error)
