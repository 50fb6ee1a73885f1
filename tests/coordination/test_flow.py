"""Flow control's rules on the test database, each step run in this process
(tests/coordination/harness.py): definitions refuse bad limits by file and line, a
run refuses a key that does not render, concurrency lines go by priority then wait,
a workflow's key queues whole runs, an operator's rate holds for a skill, and pause
and resume hold and release what is ready. On real agents: test_flow_agents.py."""

import pytest

from coordination import flow
from coordination.models import FlowKey, Run, StepRun
from coordination.reaper import runs_expire
from coordination.services import RunError, run_cancel, run_pause, run_resume, run_start
from events.models import Event
from tests.runs import definition_refusal, steps_of

pytestmark = pytest.mark.django_db(transaction=True)

ENV = {"type": "object", "properties": {"env": {"type": "string"}}}
DEFINITION = """\
name: deploy
params:
  type: object
  properties: {env: {type: string}}
steps:
  - id: ship
    skill: noop
    concurrency:
      key: "deploy:{{ params.env }}"
      limit: 1
    rate: {limit: 10, per: 60}
"""


@pytest.fixture
def agent(harness):
    return harness.agent("flow", skills="noop,sleep", concurrency=4)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (("limit: 1", "limit: 0"),
         ":10: step 'ship': concurrency.limit: 0 is less than the minimum of 1"),
        (("per: 60", "per: -5"),
         ":11: step 'ship': rate.per: -5 is less than or equal to the minimum of 0"),
        (('"deploy:{{ params.env }}"', '"deploy:{{ params.env"'),
         ":9: step 'ship': concurrency.key: template error: "),
        (("    skill: noop\n", "    skill: noop\n    priority: 12\n"),
         ":8: step 'ship': priority: 12 is greater than the maximum of 9"),
        (("name: deploy\n", "name: deploy\npriority: -1\n"),
         ":2: priority: -1 is less than the minimum of 0"),
        (("name: deploy\n", "name: deploy\ntimeout: 0\n"),
         ":2: timeout: 0 is less than or equal to the minimum of 0"),
        (("name: deploy\n",
          'name: deploy\nconcurrency: {key: "{{ steps.ship.output }}", limit: 1}\n'),
         ":2: concurrency.key: a run's key may read params only"),
    ],
)  # fmt: skip
def test_bad_flow_control_in_a_definition_names_file_line_and_field(tmp_path, change, error):
    assert change[0] in DEFINITION

    refusal = definition_refusal(tmp_path, DEFINITION.replace(*change))

    assert refusal.startswith(error), refusal


def test_a_key_that_does_not_render_refuses_the_run_and_creates_nothing(agent, make_workflow):
    workflow = make_workflow(
        [{"id": "ship", "skill": "noop"}],
        concurrency={"key": "deploy:{{ params.env }}", "limit": 1},
    )

    with pytest.raises(RunError) as caught:
        run_start(workflow=workflow, params={})

    assert caught.value.field == "concurrency.key"
    assert str(caught.value).startswith("concurrency.key: 'dict object' has no attribute 'env'")
    with pytest.raises(RunError, match=r"^priority: must be an integer from 0 to 9, not 12$"):
        run_start(workflow=workflow, params={"env": "x"}, priority=12)
    with pytest.raises(RunError, match=r"^deadline: must be a number of seconds"):
        run_start(workflow=workflow, params={"env": "x"}, deadline=-1)
    assert not Run.objects.exists() and not StepRun.objects.exists()


def test_a_step_key_that_does_not_render_fails_the_step_naming_the_field(
    harness, agent, make_workflow
):
    workflow = make_workflow(
        [{"id": "each", "skill": "noop", "foreach": "{{ [{'host': 'a'}, {}] }}",
          "concurrency": {"key": "host:{{ item.host }}", "limit": 1}}]
    )  # fmt: skip

    run = harness.settle(run_start(workflow=workflow, params={}))

    assert run.state == "failed"
    assert steps_of(run)["each"].error == "concurrency.key: 'dict object' has no attribute 'host'"


def test_steps_waiting_for_a_key_start_by_priority_then_in_the_order_they_came(
    harness, agent, make_workflow
):
    def deploy(priority):
        workflow = make_workflow(
            [{"id": "ship", "skill": "noop", "concurrency": {"key": "deploy", "limit": 1}}],
            priority=priority,
        )
        return run_start(workflow=workflow, params={})

    first, low, high, low_later = deploy(0), deploy(0), deploy(5), deploy(0)

    assert [steps_of(r)["ship"].state for r in (first, low, high, low_later)] == [
        "queued", "pending", "pending", "pending"
    ]  # fmt: skip
    assert steps_of(low)["ship"].waiting_reason == "waiting for capacity: deploy 1/1"
    assert Run.objects.get(pk=low.pk).state == "waiting"
    harness.run_sent()  # no reaper: a step that ends hands its slot on itself
    order = sorted(
        (steps_of(r)["ship"] for r in (first, low, high, low_later)), key=lambda s: s.started_at
    )
    assert [s.run_id for s in order] == [first.pk, high.pk, low.pk, low_later.pk]
    assert all(Run.objects.get(pk=s.run_id).state == "succeeded" for s in order)


def test_keys_are_locked_in_order_and_a_step_whose_key_sorts_first_starts_after_commit(
    harness, agent, make_workflow
):
    # Both steps are ready in run_start's transaction; `second` locks "b" first, so
    # `first`'s "a" is not locked behind it (another transaction may hold "a" and
    # wait for "b"): it joins the line of "a", which moves once the start commits.
    workflow = make_workflow(
        [{"id": "second", "skill": "noop", "concurrency": {"key": "b", "limit": 1}},
         {"id": "first", "skill": "noop", "concurrency": {"key": "a", "limit": 1}}]
    )  # fmt: skip

    run = run_start(workflow=workflow, params={})

    assert {s.key: s.state for s in steps_of(run).values()} == {
        "second": "queued", "first": "queued"
    }  # fmt: skip
    assert harness.settle(run).state == "succeeded"
    waited = Event.objects.filter(kind="step.waiting", subject=f"run:{run.pk}")
    assert [e.data for e in waited] == [{"step": "first", "reason": "waiting for capacity: a"}]


def test_a_workflow_key_queues_whole_runs_oldest_first(harness, agent, make_workflow):
    workflow = make_workflow(
        [{"id": "ship", "skill": "noop"}, {"id": "check", "skill": "noop", "needs": "ship"}],
        params=ENV,
        concurrency={"key": "release:{{ params.env }}", "limit": 2},
    )
    runs = [run_start(workflow=workflow, params={"env": "prod"}) for _ in range(4)]
    other = run_start(workflow=workflow, params={"env": "dev"})

    states = [Run.objects.get(pk=r.pk) for r in runs]
    assert [r.state for r in states] == ["running", "running", "pending", "pending"]
    assert states[2].waiting_reason == "waiting for capacity: release:prod 2/2"
    assert steps_of(states[2])["ship"].state == "pending" and states[2].started_at is None
    assert Run.objects.get(pk=other.pk).state == "running"

    harness.run_sent()  # no reaper: a run that ends hands its slot on itself

    done = [Run.objects.get(pk=r.pk) for r in runs]
    assert [r.state for r in done] == ["succeeded"] * 4
    # The two in line started as slots freed, the older first.
    assert done[2].started_at >= min(done[0].finished_at, done[1].finished_at)
    assert done[2].started_at <= done[3].started_at


def test_a_cancelled_run_in_line_leaves_it_and_a_cancelled_holder_frees_its_slot(
    harness, agent, make_workflow
):
    workflow = make_workflow(
        [{"id": "ship", "skill": "noop"}], concurrency={"key": "k", "limit": 1}
    )
    holder, waiting, last = (run_start(workflow=workflow, params={}) for _ in range(3))

    run_cancel(run=waiting)
    run_cancel(run=holder)

    assert Run.objects.get(pk=last.pk).state == "running"
    assert harness.settle(last).state == "succeeded"


def test_an_operators_rate_on_a_skill_holds_for_every_step_of_it(harness, agent, make_workflow):
    FlowKey.objects.create(key="skill:noop", rate_limit=2, rate_per=60)
    flow.operator_rates_forget()  # this process read them last within the TTL
    workflow = make_workflow([{"id": "each", "skill": "noop", "foreach": "{{ range(4) | list }}"}])

    run = run_start(workflow=workflow, params={})
    harness.run_sent()

    items = StepRun.objects.filter(run=run).exclude(group=None).order_by("item_index")
    assert sorted(s.state for s in items) == ["pending", "pending", "succeeded", "succeeded"]
    waiting = [s for s in items if s.state == "pending"]
    assert {s.waiting_reason for s in waiting} == {"waiting for rate: skill:noop 2/60s"}
    assert all(s.next_attempt_at is not None and s.tries == 0 for s in waiting)
    assert len(FlowKey.objects.get(key="skill:noop").starts) == 2


def test_pause_holds_queued_and_ready_steps_and_resume_sends_them(harness, agent, make_workflow):
    workflow = make_workflow(
        [{"id": "one", "skill": "noop"}, {"id": "two", "skill": "noop", "needs": "one"}]
    )
    run = run_start(workflow=workflow, params={})  # `one` is queued, not yet taken

    run = run_pause(run=run)

    assert (run.state, run.waiting_reason) == ("paused", "paused")
    harness.drain()  # its message is delivered, and dropped: the step is not queued
    steps = steps_of(run)
    assert (steps["one"].state, steps["one"].waiting_reason, steps["one"].tries) == (
        "pending", "paused", 0,
    )  # fmt: skip
    with pytest.raises(RunError, match=f"^run {run.pk} is already paused$"):
        run_pause(run=run)

    run = harness.settle(run_resume(run=run))

    assert run.state == "succeeded"
    with pytest.raises(RunError, match=f"^run {run.pk} is already succeeded: cannot pause it$"):
        run_pause(run=run)
    with pytest.raises(RunError, match=f"^run {run.pk} is already succeeded: cannot resume it$"):
        run_resume(run=run)
    kinds = Event.objects.filter(subject=f"run:{run.pk}", kind__in=["run.paused", "run.resumed"])
    assert [e.kind for e in kinds] == ["run.paused", "run.resumed"]


def test_pause_takes_waiting_steps_out_of_their_lines(harness, agent, make_workflow):
    workflow = make_workflow(
        [{"id": "ship", "skill": "noop", "concurrency": {"key": "k", "limit": 1}},
         {"id": "far", "skill": "noop", "agent": "nobody"}]
    )  # fmt: skip
    holder, waiter = (run_start(workflow=workflow, params={}) for _ in range(2))
    assert steps_of(waiter)["ship"].waiting_reason == "waiting for capacity: k 1/1"

    run_pause(run=waiter)

    steps = steps_of(waiter)
    assert steps["ship"].waiting_reason == steps["far"].waiting_reason == "paused"
    harness.run_sent()  # the holder ends; the paused run's step is not in the line
    assert steps_of(waiter)["ship"].state == "pending"
    run_resume(run=waiter)
    assert steps_of(waiter)["ship"].state == "queued"
    assert steps_of(waiter)["far"].waiting_reason.startswith("waiting for an agent")
    run_cancel(run=holder)


def test_resuming_a_run_that_is_not_paused_is_a_conflict(agent, make_workflow):
    run = run_start(workflow=make_workflow([{"id": "one", "skill": "noop"}]), params={})

    with pytest.raises(RunError, match=f"^run {run.pk} is running, not paused$"):
        run_resume(run=run)


def test_a_deadline_given_at_start_overrides_the_workflows_timeout(agent, make_workflow):
    workflow = make_workflow([{"id": "one", "skill": "sleep", "with": {"seconds": 5}}], timeout=600)

    run = run_start(workflow=workflow, params={}, deadline=0.001)

    assert (run.deadline - run.created_at).total_seconds() < 1
    assert runs_expire() == 1
    run = Run.objects.get(pk=run.pk)
    assert (run.state, run.error) == ("cancelled", "deadline exceeded")
    assert steps_of(run)["one"].state == "cancelled"
