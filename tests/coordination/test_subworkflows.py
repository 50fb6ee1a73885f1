"""Sub-workflows in this process: a step starts a child run and ends with it (its
outputs, or its failure), once per item with foreach; cancelling the parent cancels
its children; a definition naming an unknown workflow or leading back to itself is
refused by file and line. On real agents: test_waits_agents.py."""

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from coordination.models import Run, StepRun, Workflow
from coordination.services import run_cancel, run_start, signal_send, step_retry, workflow_save
from coordination.spec import SpecError, spec_load, spec_validate
from tests.runs import steps_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def agent(harness):
    return harness.agent("subs", skills="noop,test.fail", concurrency=4)


def _save(name: str, steps: list[dict], params: dict | None = None) -> Workflow:
    spec = spec_validate({"name": name, "steps": steps, "params": params or {}}, source=name)
    return workflow_save(name=name, spec=spec)[0]


@pytest.fixture
def release():
    return _save(
        "release",
        [{"id": "ship", "skill": "noop", "with": {"shipped": "{{ params.service }}"}}],
        params={"type": "object", "properties": {"service": {"type": "string"}},
                "required": ["service"]},
    )  # fmt: skip


def test_a_step_runs_a_sub_workflow_per_item_and_ends_with_their_outputs(harness, agent, release):
    parent = _save(
        "all",
        [{"id": "each", "workflow": "release@1", "foreach": "{{ params.services }}",
          "with": {"service": "{{ item }}"}},
         {"id": "after", "skill": "noop", "needs": "each",
          "with": {"got": "{{ steps.each.output }}"}}],
    )  # fmt: skip
    admin = User.objects.create_superuser("admin", password="pw")
    services = ["api", "web", "cli", "db", "ui"]

    run = harness.settle(run_start(workflow=parent, params={"services": services}, user=admin))

    assert run.state == "succeeded"
    children = Run.objects.filter(parent_step__run=run).order_by("pk")
    assert [c.params for c in children] == [{"service": s} for s in services]
    assert all(c.state == "succeeded" and c.created_by == admin for c in children)
    outputs = [{"ship": {"shipped": s}} for s in services]
    assert steps_of(run)["after"].output == {"got": outputs}
    api = APIClient()
    api.force_authenticate(admin)
    shown = api.get(f"/api/v1/runs/{run.pk}/").json()
    child = api.get(f"/api/v1/runs/{children[0].pk}/").json()
    assert shown["children"] == [c.pk for c in children] and shown["parent"] is None
    assert child["parent"] == {"run": run.pk, "step": "each[0]"}


def test_a_failing_child_fails_its_parents_step(harness, agent, release):
    failing = _save("failing", [{"id": "boom", "skill": "test.fail"}])
    parent = _save("calls-failing", [{"id": "call", "workflow": "failing"}])

    run = harness.settle(run_start(workflow=parent, params={}))

    child = Run.objects.get(parent_step__run=run)
    assert (run.state, child.state, child.workflow) == ("failed", "failed", failing)
    assert steps_of(run)["call"].error.startswith(f"workflow: run {child.pk} failed: step 'boom'")


def test_params_the_child_refuses_fail_the_step_and_start_nothing(harness, agent, release):
    parent = _save("bad-call", [{"id": "call", "workflow": "release", "with": {"nope": 1}}])

    run = harness.settle(run_start(workflow=parent, params={}))

    assert run.state == "failed"
    assert steps_of(run)["call"].error.startswith("workflow: release@1: with")
    assert not Run.objects.filter(parent_step__run=run).exists()


def test_cancelling_the_parent_cancels_its_children(harness, agent):
    waiting = _save("waits", [{"id": "gate", "wait_for": {"signal": "never"}}])
    parent = _save("calls-waits", [{"id": "call", "workflow": "waits"}])
    run = harness.settle(run_start(workflow=parent, params={}))
    child = Run.objects.get(parent_step__run=run)
    assert (run.state, child.state, child.workflow) == ("waiting", "waiting", waiting)

    run_cancel(run=run)

    child.refresh_from_db()
    assert (child.state, child.error) == ("cancelled", f"cancelled with its parent run {run.pk}")
    assert steps_of(Run.objects.get(pk=run.pk))["call"].state == "cancelled"


@pytest.mark.parametrize(
    ("steps", "error"),
    [
        ("  - {id: call, workflow: nowhere}\n", ":2: step 'call': workflow: no workflow 'nowhere'"),
        ("  - {id: call, workflow: release@7}\n",
         ":2: step 'call': workflow: no version 7 of workflow 'release'"),
        ("  - {id: call, workflow: loop}\n", ":2: step 'call': workflow: loop -> loop is a cycle"),
        ("  - {id: call, workflow: middle}\n",
         ":2: step 'call': workflow: loop -> middle -> loop is a cycle"),
        ("  - {id: call, workflow: 'cmd:demo:release'}\n",
         ":2: step 'call': workflow: cmd:demo:release is a command's"),
    ],
)  # fmt: skip
def test_an_unknown_or_cyclic_sub_workflow_is_refused_at_load(tmp_path, release, steps, error):
    _save("loop", [{"id": "x", "skill": "noop"}])  # version 1 of `loop` calls nothing
    _save("middle", [{"id": "back", "workflow": "loop"}])
    path = tmp_path / "loop.yaml"
    path.write_text("steps:\n" + steps)

    with pytest.raises(SpecError) as caught:
        spec_load(path)

    assert str(caught.value).startswith(f"{path}{error}"), str(caught.value)


def test_the_run_pages_link_parent_and_children_both_ways(harness, agent, release, client):
    parent = _save("one-release", [{"id": "call", "workflow": "release", "with": {"service": "x"}}])
    admin = User.objects.create_superuser("admin", password="pw")
    run = harness.settle(run_start(workflow=parent, params={}, user=admin))
    child = Run.objects.get(parent_step__run=run)
    client.force_login(admin)

    parents_page = client.get(f"/runs/{run.pk}/").content.decode()
    childs_page = client.get(f"/runs/{child.pk}/").content.decode()

    assert f'<a href="/runs/{child.pk}/" data-run-child>run {child.pk}</a>' in parents_page
    assert f'<a href="/runs/{run.pk}/" data-run-parent>run {run.pk}</a>' in childs_page


def test_a_retried_step_starts_a_new_child(harness, agent):
    _save("flaky-child", [{"id": "gate", "wait_for": {"signal": "go", "timeout": 60}}])
    parent = _save("calls-flaky", [{"id": "call", "workflow": "flaky-child"}])
    run = harness.settle(run_start(workflow=parent, params={}))
    first = Run.objects.get(parent_step__run=run)
    run_cancel(run=first)  # the child fails the parent's step
    run = harness.settle(run)
    assert run.state == "failed"

    step_retry(step=StepRun.objects.get(run=run, key="call"))

    second = Run.objects.filter(parent_step__run=run).exclude(pk=first.pk).get()
    signal_send(run=second, name="go", payload=1)
    run = harness.settle(run)
    assert run.state == "succeeded" and steps_of(run)["call"].output == {"gate": 1}


def test_runs_nest_no_deeper_than_the_limit(harness, agent, settings):
    settings.HIVE_SUBWORKFLOW_DEPTH = 3
    _save("leaf", [{"id": "x", "skill": "noop"}])
    _save("level-2", [{"id": "down", "workflow": "leaf"}])
    _save("level-1", [{"id": "down", "workflow": "level-2"}])
    top = _save("level-0", [{"id": "down", "workflow": "level-1"}])

    run = harness.settle(run_start(workflow=top, params={}))

    assert run.state == "failed"
    deepest = Run.objects.get(workflow__name="level-2")
    assert steps_of(deepest)["down"].error == (
        "workflow: more than 3 runs deep (HIVE_SUBWORKFLOW_DEPTH)"
    )
