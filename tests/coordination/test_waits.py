"""Durable waits in this process: a definition refuses a bad sleep or wait by file and
line, a sleep and a wait for a signal hold no worker and end when due (the reaper's
pass) or when the signal comes (kept if it comes first), and every door that sends a
signal checks the run permission. On real agents and a restarted coordinator:
test_waits_agents.py."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from rest_framework.test import APIClient

from commands.errors import CommandFailure
from commands.executing import command_execute
from coordination.models import Signal, StepRun
from coordination.reaper import steps_reap
from coordination.services import RunError, run_start, signal_send
from tests.runs import definition_refusal, steps_of

pytestmark = pytest.mark.django_db(transaction=True)

DEFINITION = """\
name: deploy
steps:
  - id: ship
    skill: noop
  - id: soak
    needs: ship
    sleep: 1800
  - id: verdict
    needs: soak
    wait_for: {signal: ci-passed, timeout: 3600}
"""


@pytest.fixture
def agent(harness):
    return harness.agent("waits", skills="noop,sleep", concurrency=2)


def _due(run, key: str) -> None:
    """Bring a waiting step's time to now, as if it had slept it, and run the reaper."""
    StepRun.objects.filter(run=run, key=key).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    steps_reap(queue_lengths=lambda queues: dict.fromkeys(queues, 0))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (("sleep: 1800", "sleep: -1"), ":7: step 'soak': sleep: -1 is less than the minimum of 0"),
        (("sleep: 1800", "sleep: 1800\n    skill: noop"),
         ":5: step 'soak': give one of skill, sleep, sleep_until, wait_for or workflow: "
         "it gives skill and sleep"),
        (("sleep: 1800", "sleep: 1800\n    with: {x: 1}"),
         ":5: step 'soak': with: a sleep step runs no skill: it takes no with"),
        (("signal: ci-passed", "signal: CI passed"),
         ":10: step 'verdict': wait_for.signal: 'CI passed' does not match"),
        (("sleep: 1800", 'sleep: "{{ params.x"'), ":7: step 'soak': sleep: template error: "),
        (("    sleep: 1800\n", ""),
         ":5: step 'soak': give one of skill, sleep, sleep_until, wait_for or workflow: "
         "it gives none"),
    ],
)  # fmt: skip
def test_a_bad_wait_in_a_definition_names_file_line_and_field(tmp_path, change, error):
    assert change[0] in DEFINITION

    refusal = definition_refusal(tmp_path, DEFINITION.replace(*change))

    assert refusal.startswith(error), refusal


def test_a_sleep_holds_no_worker_and_ends_when_due(harness, agent, make_workflow):
    workflow = make_workflow(
        [{"id": "nap", "sleep": "{{ params.seconds }}"},
         {"id": "after", "skill": "noop", "needs": "nap",
          "with": {"woke": "{{ steps.nap.output }}"}}]
    )  # fmt: skip
    run = harness.settle(run_start(workflow=workflow, params={"seconds": 600}))

    nap = steps_of(run)["nap"]
    assert (run.state, nap.state) == ("waiting", "waiting")
    assert nap.waiting_reason.startswith("sleeping until ")
    assert 595 < (nap.next_attempt_at - nap.started_at).total_seconds() <= 600
    assert harness.sent == []  # nothing went to an agent

    _due(run, "nap")
    run = harness.settle(run)

    assert run.state == "succeeded"
    assert steps_of(run)["after"].output == {
        "woke": {"slept_until": steps_of(run)["nap"].output["slept_until"]}
    }


def test_a_sleep_that_does_not_render_to_seconds_fails_its_step(harness, agent, make_workflow):
    workflow = make_workflow([{"id": "nap", "sleep": "{{ params.seconds }}"}])

    run = harness.settle(run_start(workflow=workflow, params={"seconds": "soon"}))

    assert run.state == "failed"
    assert steps_of(run)["nap"].error == "sleep: expected a number of seconds, got 'soon'"


def test_sleep_until_a_past_time_ends_at_once(harness, agent, make_workflow):
    workflow = make_workflow([{"id": "nap", "sleep_until": "2020-01-01T00:00:00Z"}])

    run = harness.settle(run_start(workflow=workflow, params={}))

    assert run.state == "succeeded"
    assert steps_of(run)["nap"].output == {"slept_until": "2020-01-01T00:00:00+00:00"}


def test_a_signal_ends_the_step_waiting_for_it_with_its_payload(harness, agent, make_workflow):
    workflow = make_workflow(
        [{"id": "gate", "wait_for": {"signal": "ci-passed"}},
         {"id": "use", "skill": "noop", "needs": "gate",
          "with": {"got": "{{ steps.gate.output.build }}"}}]
    )  # fmt: skip
    run = harness.settle(run_start(workflow=workflow, params={}))
    assert steps_of(run)["gate"].waiting_reason == "waiting for signal 'ci-passed'"

    other = signal_send(run=run, name="deploy-done", payload=1)
    sent = signal_send(run=run, name="ci-passed", payload={"build": 42})
    run = harness.settle(run)

    assert other.step is None and sent.step.key == "gate"
    assert run.state == "succeeded"
    assert steps_of(run)["use"].output == {"got": 42}
    with pytest.raises(RunError, match=f"^run {run.pk} is already succeeded: cannot signal it$"):
        signal_send(run=run, name="ci-passed")
    assert Signal.objects.filter(run=run).count() == 2


def test_a_signal_sent_before_the_step_waits_is_kept_for_it(harness, agent, make_workflow):
    workflow = make_workflow(
        [{"id": "first", "skill": "noop"},
         {"id": "gate", "needs": "first", "wait_for": {"signal": "go"}}]
    )  # fmt: skip
    run = run_start(workflow=workflow, params={})  # `first` is queued, not yet run

    kept = signal_send(run=run, name="go", payload="early")
    run = harness.settle(run)

    assert kept.step is None
    assert run.state == "succeeded"
    assert steps_of(run)["gate"].output == "early"
    assert Signal.objects.get(pk=kept.pk).step.key == "gate"


def test_a_wait_times_out_and_fails_or_continues(harness, agent, make_workflow):
    workflow = make_workflow(
        [{"id": "strict", "wait_for": {"signal": "a", "timeout": 60}},
         {"id": "lenient", "wait_for": {"signal": "b", "timeout": 60}, "on_failure": "continue"}]
    )  # fmt: skip
    run = harness.settle(run_start(workflow=workflow, params={}))

    _due(run, "lenient")
    steps = steps_of(run)
    assert (steps["lenient"].state, steps["strict"].state) == ("failed", "waiting")
    assert steps["lenient"].error == "wait_for: no signal 'b' within 60 s"
    _due(run, "strict")

    run = harness.settle(run)
    assert (run.state, run.error) == (
        "failed",
        "step 'strict' failed: wait_for: no signal 'a' within 60 s",
    )


def test_bad_signals_are_refused_naming_the_field(agent, make_workflow):
    run = run_start(
        workflow=make_workflow([{"id": "gate", "wait_for": {"signal": "go"}}]), params={}
    )

    with pytest.raises(RunError, match=r"^name: 'No Spaces' does not match"):
        signal_send(run=run, name="No Spaces")
    with pytest.raises(RunError, match=r"^payload: more than 65536 bytes of JSON$"):
        signal_send(run=run, name="go", payload="x" * 70_000)
    assert not Signal.objects.exists()


def _user(name: str, *codenames: str) -> User:
    user = User.objects.create_user(name, password="pw")
    for codename in codenames:
        app, code = codename.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app, codename=code)
        )
    return User.objects.get(pk=user.pk)


def test_the_api_and_hive_signal_send_signals_with_the_run_permission(
    harness, agent, make_workflow
):
    workflow = make_workflow(
        [{"id": "one", "wait_for": {"signal": "one"}}, {"id": "two", "wait_for": {"signal": "two"}}]
    )
    ada = _user("ada", "coordination.change_run", "commands.execute_command")
    bob = _user("bob", "commands.execute_command")
    run = harness.settle(run_start(workflow=workflow, params={}, user=ada))
    api = APIClient()

    api.force_authenticate(bob)
    refused = api.post(f"/api/v1/runs/{run.pk}/signals/", {"name": "one"}, format="json")
    with pytest.raises(CommandFailure) as denied:
        command_execute(text=f"/hive:signal {run.pk} two", user=bob, source="api")
    api.force_authenticate(ada)
    bad = api.post(f"/api/v1/runs/{run.pk}/signals/", {"name": ""}, format="json")
    sent = api.post(f"/api/v1/runs/{run.pk}/signals/", {"name": "one", "payload": {"ok": True}},
                    format="json")  # fmt: skip
    command_execute(text=f"/hive:signal {run.pk} two '{{\"n\": 2}}'", user=ada, source="api")
    with pytest.raises(CommandFailure, match="payload: not JSON"):
        command_execute(text=f"/hive:signal {run.pk} two nope", user=ada, source="api")

    assert refused.status_code == 403 and "permission" in str(denied.value)
    assert bad.status_code == 400 and "name" in bad.json()["error"]["fields"]
    assert sent.status_code == 201
    assert (sent.json()["name"], sent.json()["step"]) == ("one", "one")
    run = harness.settle(run)
    assert run.state == "succeeded"
    assert (steps_of(run)["one"].output, steps_of(run)["two"].output) == ({"ok": True}, {"n": 2})
    assert Signal.objects.count() == 2


def test_the_signal_send_skill_signals_as_the_user_who_started_its_run(harness, make_workflow):
    harness.agent("signaller", skills="noop,signal.send")
    waiting = make_workflow([{"id": "gate", "wait_for": {"signal": "go"}}])
    sender = make_workflow(
        [{"id": "send", "skill": "signal.send",
          "with": {"run": "{{ params.run }}", "name": "go", "payload": "from a step"}}]
    )  # fmt: skip
    ada = _user("ada", "coordination.change_run")
    bob = _user("bob")
    target = harness.settle(run_start(workflow=waiting, params={}, user=ada))

    denied = harness.settle(run_start(workflow=sender, params={"run": target.pk}, user=bob))
    sent = harness.settle(run_start(workflow=sender, params={"run": target.pk}, user=ada))

    assert denied.state == "failed"
    assert steps_of(denied)["send"].error == "permission denied: bob may not signal runs"
    assert sent.state == "succeeded"
    assert steps_of(sent)["send"].output == {"signal": Signal.objects.get().pk, "step": "gate"}
    target = harness.settle(target)
    assert target.state == "succeeded" and steps_of(target)["gate"].output == "from a step"
