"""The /hive:* commands, on the same services as the API: reading, run control and
agent control on a real agent, each permission-checked and audited."""

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from agents.models import Agent, Message
from commands.models import Invocation
from commands.services import CommandFailure, command_execute, commands_load
from coordination.models import Run
from coordination.services import run_start
from tests.processes import wait_for
from tests.runs import steps_of, wait_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hive(users):
    def run(text: str, user: str = "admin") -> dict:
        return command_execute(text=text, user=users[user], source="cli").output

    return run


@pytest.fixture
def flaky(definitions):
    definitions("flaky.md", """
        ---
        params: {key: {type: string}, mode: {enum: [fast, slow], default: fast}}
        workflow:
          steps:
            - {id: first, skill: noop}
            - id: shaky
              skill: test.flaky
              needs: first
              with: {key: "{{ params.key }}", failures: 1}
        ---
    """)  # fmt: skip
    commands_load(paths=[definitions.root])


def test_help_lists_what_the_user_may_run_and_explains_one_command(hive, flaky):
    listing = hive("/hive:help", user="ada")
    one = hive("/hive:help /hive:retry")

    assert "flaky" in listing["commands"] and "hive:help" in listing["commands"]
    assert "hive:retry" not in listing["commands"]  # ada may not control runs
    assert one["message"].splitlines()[:4] == [
        "/hive:retry <run> <step>",
        "Retry a failed step of a run, and every step after it.",
        "arguments:",
        "  run: integer (required)",
    ]
    assert "  mode: fast | slow, default fast" in hive("/hive:help flaky")["message"].splitlines()


def test_run_control_and_agent_control_on_a_real_agent(hive, flaky, start_agent, users):
    start_agent("worker", skills="noop,test.flaky")
    started = command_execute(text=f"/flaky key={uuid.uuid4()}", user=users["ada"], source="api")
    run = wait_run(started.run)
    assert run.state == "failed"

    assert hive(f"/hive:run {run.pk}")["message"].splitlines() == [
        f"run {run.pk} of cmd:flaky@1: failed: step 'shaky' failed: flaky failure 1 of 1",
        "  first: succeeded on worker",
        "  shaky: failed on worker: flaky failure 1 of 1",
    ]
    assert hive("/hive:runs failed")["runs"] == [
        {"id": run.pk, "workflow": "cmd:flaky@1", "state": "failed"}
    ]
    hive(f"/hive:retry {run.pk} shaky")
    assert wait_run(run).state == "succeeded"
    assert steps_of(Run.objects.get(pk=run.pk))["shaky"].output == {"tries": 2}

    assert hive("/hive:agents")["agents"][0]["name"] == "worker"
    assert hive("/hive:drain worker")["message"] == "agent worker: draining"
    assert Agent.objects.get(name="worker").status == "draining"
    assert hive("/hive:resume worker")["message"] == "agent worker: idle"
    wait_for(lambda: Agent.objects.get(name="worker").status == "idle", timeout=10,
             what="the agent to take work again")  # fmt: skip
    assert "agents: 1 idle" in hive("/hive:status")["message"]


def test_failures_of_builtins_are_clear_and_audited(hive, users):
    with pytest.raises(CommandFailure, match="^no run 999$"):
        hive("/hive:cancel 999")
    with pytest.raises(CommandFailure, match="^no agent named 'ghost'$"):
        hive("/hive:drain ghost")
    with pytest.raises(CommandFailure) as denied:
        hive("/hive:drain ghost", user="ada")
    assert denied.value.code == "denied"
    assert list(Invocation.objects.order_by("id").values_list("command_name", "outcome")) == [
        ("hive:cancel", "failed"), ("hive:drain", "failed"), ("hive:drain", "denied"),
    ]  # fmt: skip


def test_reading_builtins_show_only_the_runs_the_api_shows_the_user(hive, users, make_workflow):
    workflow = make_workflow([{"id": "a", "skill": "noop"}])
    admins = run_start(workflow=workflow, params={}, user=users["admin"])
    adas = run_start(workflow=workflow, params={}, user=users["ada"])
    state = Run.objects.get(pk=adas.pk).state
    api = APIClient()
    api.force_authenticate(users["ada"])

    # Another user's run is no run to ada, as the API's 404 says.
    assert api.get(f"/api/v1/runs/{admins.pk}/").status_code == 404
    with pytest.raises(CommandFailure, match=f"^no run {admins.pk}$"):
        hive(f"/hive:run {admins.pk}", user="ada")
    assert [r["id"] for r in api.get("/api/v1/runs/").json()["results"]] == [adas.pk]
    assert [r["id"] for r in hive("/hive:runs", user="ada")["runs"]] == [adas.pk]
    assert [r["id"] for r in hive(f"/hive:runs {state}", user="ada")["runs"]] == [adas.pk]
    assert hive(f"/hive:run {adas.pk}", user="ada")["run"] == adas.pk
    assert hive("/hive:status", user="ada")["runs"] == {state: 1}
    # Those who see every run still do.
    assert [r["id"] for r in hive("/hive:runs")["runs"]] == [adas.pk, admins.pk]
    assert hive(f"/hive:run {admins.pk}")["run"] == admins.pk


def test_approve_and_reject_find_the_waiting_step(hive, definitions, users):
    definitions("gate.md", "---\napproval: true\nworkflow: {steps: [{id: a, skill: noop}]}\n---\n")
    commands_load(paths=[definitions.root])
    first = command_execute(text="/gate", user=users["ada"], source="api")
    second = command_execute(text="/gate", user=users["ada"], source="api")

    assert hive(f"/hive:reject {first.run_id} reason='not today'")["message"] == (
        f"run {first.run_id}: approval rejected"
    )
    assert Run.objects.get(pk=first.run_id).error == (
        "step 'approval' failed: rejected by admin: not today"
    )
    with pytest.raises(CommandFailure, match="step 'approval' is failed, not waiting for approval"):
        hive(f"/hive:approve {first.run_id} approval")
    with pytest.raises(CommandFailure, match=f"run {first.run_id} is failed: no step waits"):
        hive(f"/hive:approve {first.run_id}")
    assert hive(f"/hive:approve {second.run_id}")["step"] == "approval"


def _user(name: str, *codenames: str):
    user = get_user_model().objects.create_user(name)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.mark.parametrize(
    "text, path, needs, done",
    [
        ("/hive:approve {run}", "steps/approval/approve/", "approve_steprun", None),
        ("/hive:reject {run}", "steps/approval/reject/", "approve_steprun", None),
        ("/hive:retry {run} approval", "steps/approval/retry/", "change_steprun",
         "step 'approval' is waiting; only a failed step can be retried"),
        ("/hive:cancel {run}", "cancel/", "change_run", None),
    ],
)  # fmt: skip
def test_run_control_builtins_need_the_apis_permission_and_visibility(
    hive, definitions, users, text, path, needs, done
):
    definitions("gate.md", "---\napproval: true\nworkflow: {steps: [{id: a, skill: noop}]}\n---\n")
    commands_load(paths=[definitions.root])
    run = command_execute(text="/gate", user=users["admin"], source="api").run_id
    text, url = text.format(run=run), f"/api/v1/runs/{run}/{path}"
    others = {"change_run", "change_steprun", "approve_steprun"} - {needs}
    # Every other run permission, and sight of every run: only the one it needs is missing.
    lacking = _user("lacking", "execute_command", "view_run", *others)
    blind = _user("blind", "execute_command", needs)  # may not see admin's run
    allowed = _user("allowed", "execute_command", "view_run", needs)
    api = APIClient()

    api.force_authenticate(lacking)
    assert api.post(url, {}, format="json").status_code == 403
    with pytest.raises(CommandFailure, match=f"needs coordination.{needs} ") as denied:
        command_execute(text=text, user=lacking, source="cli")
    assert denied.value.code == "denied"
    api.force_authenticate(blind)
    assert api.post(url, {}, format="json").status_code == 404
    with pytest.raises(CommandFailure, match=f"^no run {run}$"):
        command_execute(text=text, user=blind, source="cli")
    assert steps_of(Run.objects.get(pk=run))["approval"].state == "waiting"  # nothing changed

    if done is None:
        command_execute(text=text, user=allowed, source="cli")
        assert steps_of(Run.objects.get(pk=run))["approval"].state != "waiting"
    else:  # past the permission and the visibility, to the state of the step
        with pytest.raises(CommandFailure, match=f"^{done}$"):
            command_execute(text=text, user=allowed, source="cli")


def test_pause_and_resume_a_run_with_the_apis_permission(hive, users, make_workflow, harness):
    harness.agent("a1")  # takes nothing until drained: the step stays queued
    run = run_start(workflow=make_workflow([{"id": "a", "skill": "noop"}]), params={},
                    user=users["admin"])  # fmt: skip
    state = Run.objects.get(pk=run.pk).state
    lacking = _user("lacking", "execute_command", "view_run", "change_steprun", "change_agent")
    blind = _user("blind", "execute_command", "change_run")  # may not see admin's run
    allowed = _user("allowed", "execute_command", "view_run", "change_run")
    api = APIClient()

    api.force_authenticate(lacking)
    for action in ("pause", "resume"):
        assert api.post(f"/api/v1/runs/{run.pk}/{action}/").status_code == 403
        with pytest.raises(CommandFailure, match="needs coordination.change_run ") as denied:
            command_execute(text=f"/hive:{action} {run.pk}", user=lacking, source="cli")
        assert denied.value.code == "denied"
    api.force_authenticate(blind)
    for action in ("pause", "resume"):
        assert api.post(f"/api/v1/runs/{run.pk}/{action}/").status_code == 404
        with pytest.raises(CommandFailure, match=f"^no run {run.pk}$"):
            command_execute(text=f"/hive:{action} {run.pk}", user=blind, source="cli")
    assert Run.objects.get(pk=run.pk).state == state  # nothing changed
    assert steps_of(Run.objects.get(pk=run.pk))["a"].state == "queued"

    def allowed_to(text: str) -> dict:
        return command_execute(text=text, user=allowed, source="cli").output

    assert allowed_to(f"/hive:pause {run.pk}")["message"] == f"run {run.pk}: paused"
    with pytest.raises(CommandFailure, match=f"^run {run.pk} is already paused$"):
        allowed_to(f"/hive:pause {run.pk}")
    assert allowed_to(f"/hive:run {run.pk}")["message"].splitlines()[1] == "  a: pending: paused"
    assert allowed_to(f"/hive:resume {run.pk}")["message"] == f"run {run.pk}: {state}"
    with pytest.raises(CommandFailure, match=f"^run {run.pk} is {state}, not paused$"):
        allowed_to(f"/hive:resume {run.pk}")
    assert steps_of(Run.objects.get(pk=run.pk))["a"].state == "queued"
    harness.drain()
    assert Run.objects.get(pk=run.pk).state == "succeeded"
    with pytest.raises(CommandFailure) as finished:
        allowed_to(f"/hive:pause {run.pk}")
    assert (str(finished.value), finished.value.code) == (
        f"run {run.pk} is already succeeded: cannot pause it", "failed",
    )  # fmt: skip
    outcomes = Invocation.objects.filter(user=allowed).order_by("id").values_list("outcome")
    assert [o for (o,) in outcomes] == ["done", "failed", "done", "done", "failed", "failed"]


def test_resume_takes_a_run_or_an_agent_each_with_its_own_permission(hive, users, make_workflow):
    run = run_start(workflow=make_workflow([{"id": "a", "skill": "noop"}]), params={})
    hive(f"/hive:pause {run.pk}")
    keeper = _user("keeper", "change_agent", "view_run")  # agents, not runs
    runner = _user("runner", "change_run", "view_run")  # runs, not agents
    nobody = _user("nobody", "execute_command", "view_run")

    with pytest.raises(CommandFailure) as denied:
        command_execute(text=f"/hive:resume {run.pk}", user=keeper, source="cli")
    assert (str(denied.value), denied.value.code) == (
        "permission denied: resuming a run needs coordination.change_run and keeper does not "
        "have it", "denied",
    )  # fmt: skip
    with pytest.raises(CommandFailure) as denied:
        command_execute(text="/hive:resume ghost", user=runner, source="cli")
    assert (str(denied.value), denied.value.code) == (
        "permission denied: resuming an agent needs agents.change_agent and runner does not "
        "have it", "denied",
    )  # fmt: skip
    with pytest.raises(CommandFailure) as denied:
        command_execute(text="/hive:resume ghost", user=nobody, source="cli")
    assert str(denied.value) == (
        "permission denied: /hive:resume needs coordination.change_run or agents.change_agent "
        "and nobody does not have any"
    )
    assert Run.objects.get(pk=run.pk).state == "paused"
    # Past the permission, each goes on to its target.
    with pytest.raises(CommandFailure, match="^no agent named 'ghost'$"):
        command_execute(text="/hive:resume ghost", user=keeper, source="cli")
    resumed = command_execute(text=f"/hive:resume {run.pk}", user=runner, source="cli")
    assert resumed.output["run"] == run.pk and Run.objects.get(pk=run.pk).state != "paused"
    # Each is listed to whoever may use it at all, and its help says both.
    for user, listed in ((keeper, True), (runner, True), (nobody, False)):
        user.user_permissions.add(Permission.objects.get(codename="execute_command"))
        user = get_user_model().objects.get(pk=user.pk)  # permissions are cached
        commands = command_execute(text="/hive:help", user=user, source="cli").output["commands"]
        assert ("hive:resume" in commands) is listed, user
    assert hive("/hive:help hive:resume")["message"].splitlines()[:3] == [
        "/hive:resume <target>",
        "Resume a paused run (its id) or a drained agent (its name).",
        "arguments:",
    ]
    with pytest.raises(CommandFailure, match="target: 0 is less than the minimum of 1"):
        hive("/hive:resume 0")


def test_send_reaches_an_agent_even_one_that_is_down_until_it_is_back(hive, start_agent, users):
    up = start_agent("listener", skills="noop")
    up.stop()
    Agent.objects.filter(name="listener").update(status="offline")

    answer = hive("/hive:send listener deploy is done, thanks!")
    message = Message.objects.get(pk=answer["id"])
    assert (message.state, message.recipient, message.sender) == (
        "pending",
        "listener",
        "user:admin",
    )

    start_agent("listener", skills="noop")
    handled = wait_for(
        lambda: Message.objects.filter(pk=message.pk, state="handled").first(),
        timeout=30,
        what="the note to be handled",
    )
    assert handled.payload == {"text": "deploy is done, thanks!"}
    assert answer["message"] == f"message {message.pk} sent to listener"


def test_send_needs_the_permission_and_a_known_agent(hive, users):
    with pytest.raises(CommandFailure) as denied:
        hive("/hive:send anyone hello", user="ada")
    with pytest.raises(CommandFailure) as unknown:
        hive("/hive:send nobody hello")

    assert denied.value.code == "denied"
    assert str(unknown.value) == "to: no agent named 'nobody' is registered"
    assert Message.objects.count() == 0
