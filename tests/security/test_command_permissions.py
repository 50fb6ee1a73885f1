"""Issue 15, items 1, 2, 3 and 5: a command runs only as that command, as a user
who may run it; every door (API, CLI, admin, rerun, schedules, /hive:schedule, the
overlap policy) applies the same rule, acted out by the review's users."""

import json
import textwrap

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from commands.models import Command, Invocation
from commands.services import command_execute, commands_load, schedule_create, scheduled_execute
from coordination.models import Run
from tests.processes import wait_for
from tests.security.conftest import _user, auth

pytestmark = pytest.mark.django_db(transaction=True)

DEPLOY = """
---
description: Deploy (only deployers may)
params: {target: {type: string}}
permission: commands.execute_command
approval: "true"
overlap: skip
workflow: {steps: [{id: ship, skill: noop, with: {to: "{{ params.target }}"}}]}
---
Deploy $ARGUMENTS.
"""


@pytest.fixture
def deploy(tmp_path, settings):
    """/deploy: needs commands.execute_command, waits for approval, overlap skip."""
    root = tmp_path / "commands"
    root.mkdir()
    (root / "deploy.md").write_text(textwrap.dedent(DEPLOY).lstrip("\n"))
    settings.HIVE_COMMAND_DIRS = [root]
    commands_load(paths=[root])
    return Command.objects.get(name="deploy")


def api(url: str, user, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{url}/api/v1/{path}", headers=auth(user), timeout=30, **kwargs)


# --- 1. a command's workflow starts only as the command ------------------------------


def test_a_commands_workflow_cannot_be_started_through_the_workflow_api(
    attackers, deploy, live_server_url
):
    runner = attackers["runner"]  # coordination.add_run, not commands.execute_command

    response = api(live_server_url, runner, "POST", "workflows/cmd:deploy/start/",
                   json={"params": {"target": "prod"}})  # fmt: skip

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert list(error["fields"]) == ["workflow"]
    assert error["message"] == (
        "workflow: cmd:deploy is the workflow of /deploy: it starts only as that command "
        "(POST /api/v1/commands/execute with the text /deploy ...), which checks its "
        "permission, overlap and approval and audits it"
    )
    assert not Run.objects.exists()


def test_a_caller_cannot_forge_the_commands_context_of_a_run(
    attackers, make_workflow, live_server_url
):
    make_workflow([{"id": "a", "skill": "noop"}], name="plain")
    forged = {"user": "admin", "invocation": 1, "prompt": "as admin"}

    response = api(live_server_url, attackers["runner"], "POST", "workflows/plain/start/",
                   json={"params": {"_command": forged}})  # fmt: skip

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["fields"] == {
        "params._command": ["reserved for Hive (params named '_...' are set by Hive, never by a "
                            "caller)"]
    }  # fmt: skip
    assert not Run.objects.exists()


def test_hive_workflow_start_refuses_a_commands_workflow_and_internal_params(deploy, make_workflow):
    make_workflow([{"id": "a", "skill": "noop"}], name="plain")

    with pytest.raises(CommandError) as as_workflow:
        call_command("hive", "workflow", "start", "cmd:deploy", "--params", '{"target": "x"}')
    with pytest.raises(CommandError) as forged:
        call_command("hive", "workflow", "start", "plain", "--params", '{"_command": {}}')

    assert str(as_workflow.value).startswith("cmd:deploy is the workflow of /deploy: it starts")
    assert str(forged.value) == (
        "--params: params._command: reserved for Hive (params named '_...' are set by Hive, "
        "never by a caller)"
    )
    assert not Run.objects.exists()


def test_a_commands_run_is_not_rerun_past_the_command(attackers, deploy, live_server_url):
    started = command_execute(text="/deploy target=prod", user=attackers["admin"], source="api")
    runner = attackers["runner"]
    Run.objects.filter(pk=started.run_id).update(created_by=runner)  # a run runner may see

    response = api(live_server_url, runner, "POST", f"runs/{started.run_id}/rerun/")

    assert response.status_code == 409, response.text
    assert response.json()["error"]["message"].startswith(
        "cmd:deploy is the workflow of /deploy: it starts only as that command"
    )
    assert Run.objects.count() == 1


def test_the_admins_rerun_action_does_not_start_a_commands_run(attackers, deploy, client):
    started = command_execute(text="/deploy target=prod", user=attackers["admin"], source="api")
    client.force_login(attackers["admin"])

    response = client.post(
        "/admin/coordination/run/",
        {"action": "rerun", "_selected_action": [started.run_id]},
        follow=True,
    )

    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert len(shown) == 1 and "cmd:deploy is the workflow of /deploy" in shown[0], shown
    assert Run.objects.count() == 1


# --- 2. a schedule runs as the user Hive recorded, re-checked at every firing --------


def _admin_add_schedule(client, *, name: str, kwargs: dict, every: int = 1):
    interval = IntervalSchedule.objects.get_or_create(every=every, period="seconds")[0]
    return client.post(
        "/admin/django_celery_beat/periodictask/add/",
        {
            "name": name,
            "regtask": "commands.command_schedule_task",
            "task": "",
            "enabled": "on",
            "description": "",
            "interval": interval.pk,
            "args": "[]",
            "kwargs": json.dumps(kwargs),
            "headers": "{}",
            "queue": "",
            "exchange": "",
            "routing_key": "",
            "priority": "",
            "expire_seconds": "",
        },
    )


def test_a_schedule_made_in_the_admin_cannot_run_as_the_user_its_kwargs_name(
    attackers, deploy, client
):
    admin, scheduler = attackers["admin"], attackers["scheduler"]
    client.force_login(scheduler)  # the admin form is the door; axes guards the login

    response = _admin_add_schedule(
        client, name="as admin", kwargs={"text": "/deploy target=prod", "user_id": admin.pk}
    )

    assert response.status_code == 200  # the form again, with the error
    assert response.context["adminform"].form.errors["kwargs"] == [
        "text: permission denied: /deploy needs commands.execute_command and scheduler does "
        "not have it"
    ]
    assert not PeriodicTask.objects.filter(name="as admin").exists()


def test_a_schedule_saved_in_the_admin_runs_as_who_saved_it_not_its_kwargs(
    attackers, deploy, client
):
    admin, executor = attackers["admin"], attackers["executor"]
    executor.is_staff = True  # may run /deploy and manage periodic tasks in the admin
    executor.save()
    for codename in ("add_periodictask", "view_periodictask", "add_intervalschedule"):
        executor.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(executor)

    response = _admin_add_schedule(
        client, name="mine", kwargs={"text": "/deploy target=x", "user_id": admin.pk}
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    fired = scheduled_execute(schedule="mine")  # what the coordinator's task calls

    assert (fired.user, fired.outcome, fired.source) == (executor, "started", "schedule")
    assert Run.objects.get(pk=fired.run_id).created_by == executor


def test_a_periodic_task_hive_never_recorded_runs_nothing_whatever_its_kwargs_say(
    attackers, deploy
):
    interval = IntervalSchedule.objects.get_or_create(every=60, period="seconds")[0]
    PeriodicTask.objects.create(
        name="forged", task="commands.command_schedule_task", interval=interval,
        kwargs=json.dumps({"text": "/deploy target=prod", "user_id": attackers["admin"].pk}),
    )  # fmt: skip

    fired = scheduled_execute(schedule="forged")

    assert (fired.user, fired.outcome, fired.run) == (None, "denied", None)
    assert fired.error.startswith("schedule 'forged' has no owner recorded by Hive")
    assert not Run.objects.exists()


def test_the_coordinator_fires_schedules_as_recorded_owners_rechecked_never_as_kwargs_say(
    attackers, deploy, coordinator
):
    """The real coordinator's beat fires every schedule each second: one whose owner
    lost /deploy's permission, one whose owner was deactivated, and one made outside
    Hive whose kwargs name the (active) admin. Each firing is denied; nothing runs."""
    executor = attackers["executor"]
    executor.user_permissions.add(Permission.objects.get(codename="add_periodictask"))
    leaver = _user("leaver", "commands.execute_command", "django_celery_beat.add_periodictask")
    schedule_create(text="/deploy target=a", user=executor, every=1, name="revoked")
    schedule_create(text="/deploy target=b", user=leaver, every=1, name="left")
    interval = IntervalSchedule.objects.get_or_create(every=1, period="seconds")[0]
    PeriodicTask.objects.create(
        name="forged", task="commands.command_schedule_task", interval=interval,
        kwargs=json.dumps({"text": "/deploy target=c", "user_id": attackers["admin"].pk}),
        queue=settings.HIVE_COORDINATOR_QUEUE,
    )  # fmt: skip
    executor.user_permissions.remove(Permission.objects.get(codename="execute_command"))
    leaver.is_active = False
    leaver.save()

    fired = Invocation.objects.filter(source="schedule")
    wait_for(
        lambda: {"revoked", "left", "forged"} <= set(fired.values_list("schedule", flat=True)),
        timeout=30, what="the three schedules to fire",
    )  # fmt: skip

    assert set(fired.values_list("outcome", flat=True)) == {"denied"}
    assert fired.filter(schedule="revoked").first().error == (
        "permission denied: /deploy needs commands.execute_command and executor does not have it"
    )
    assert fired.filter(schedule="left").first().user == leaver
    assert fired.filter(schedule="forged").first().user is None
    assert not Run.objects.exists()


# --- 3. /hive:schedule: each action needs its API permission, on your own schedules --


def test_hive_schedule_asks_each_action_the_apis_permission_and_owner(
    attackers, deploy, live_server_url
):
    admin = attackers["admin"]
    theirs = schedule_create(text="/deploy target=secret", user=admin, every=60, name="admins")
    # May add schedules only, as the review's attacker: the API refuses them the rest.
    adder = _user("adder", "commands.execute_command", "django_celery_beat.add_periodictask")
    # May do everything to schedules, but is not staff: their own schedules only.
    keeper = _user(
        "keeper", "commands.execute_command", *(f"django_celery_beat.{p}_periodictask"
                                                for p in ("view", "change", "delete")),
    )  # fmt: skip

    def hive(user, text):
        return api(live_server_url, user, "POST", "commands/execute", json={"text": text})

    for text, api_call in [
        ("/hive:schedule list", ("GET", "commands/schedules/")),
        (f"/hive:schedule disable {theirs.pk}", ("PATCH", f"commands/schedules/{theirs.pk}/")),
        (f"/hive:schedule remove {theirs.pk}", ("DELETE", f"commands/schedules/{theirs.pk}/")),
    ]:
        through_api = api(live_server_url, adder, *api_call, json={"enabled": False})
        built_in = hive(adder, text)
        assert (through_api.status_code, built_in.status_code) == (403, 403), built_in.text
        assert built_in.json()["error"]["code"] == "denied"
    assert hive(adder, "/hive:schedule list").json()["error"]["message"] == (
        "permission denied: list a schedule needs django_celery_beat.view_periodictask and "
        "adder does not have it"
    )

    listed = hive(keeper, "/hive:schedule list")
    disabled = hive(keeper, f"/hive:schedule disable {theirs.pk}")
    removed = hive(keeper, f"/hive:schedule remove {theirs.pk}")

    assert listed.json()["invocation"]["output"] == {"message": "no schedules", "schedules": []}
    assert disabled.json()["error"]["message"] == f"no schedule {theirs.pk}"
    assert removed.json()["error"]["message"] == f"no schedule {theirs.pk}"
    shown = api(live_server_url, keeper, "GET", f"commands/schedules/{theirs.pk}/")
    assert shown.status_code == 404
    theirs.refresh_from_db()
    assert theirs.enabled
    assert "secret" not in json.dumps(listed.json())


# --- 5. the overlap policy never names nor cancels a run its user cannot see ---------


@pytest.fixture
def held(tmp_path):
    """/hold (cancel-running) and /solo (skip), one overlap key each; their runs wait
    for approval, so they stay open."""
    root = tmp_path / "held"
    root.mkdir()
    for name, policy in (("hold", "cancel-running"), ("solo", "skip")):
        (root / f"{name}.md").write_text(
            f"---\noverlap: {policy}\napproval: 'true'\n"
            "workflow: {steps: [{id: work, skill: noop}]}\n---\n"
        )
    commands_load(paths=[root])


def test_the_overlap_policy_does_not_reveal_or_cancel_another_users_hidden_run(
    attackers, held, live_server_url
):
    executor = attackers["executor"]  # sees only the runs they started
    other = _user("other", "commands.execute_command")

    def execute(user, text, **body):
        return api(live_server_url, user, "POST", "commands/execute", json={"text": text, **body})

    hold = execute(other, "/hold").json()["run"]
    solo = execute(other, "/solo").json()["run"]

    cancelling = execute(executor, "/hold")
    skipped = execute(executor, "/solo")
    plan = execute(executor, "/hold", dry_run=True)

    assert cancelling.status_code == 409, cancelling.text
    assert cancelling.json()["error"]["message"] == (
        "a run you cannot see holds overlap key 'hold': it was not cancelled and nothing "
        "started; try again when it has ended"
    )
    assert Run.objects.get(pk=hold["id"]).state == "waiting"
    assert skipped.status_code == 201, skipped.text
    assert skipped.json()["invocation"]["error"] == (
        "a run you cannot see with overlap key 'solo' is still open"
    )
    assert plan.json()["plan"]["overlap"] == {
        "policy": "cancel-running", "key": "hold", "open_runs": [], "hidden_open_runs": 1,
        "would": "refuse: a run you cannot see holds the key",
    }  # fmt: skip
    for response in (cancelling, skipped, plan):
        assert f"run {hold['id']} " not in response.text
        assert f"run {solo['id']} " not in response.text
    # Who may see every run still gets the policy as written: the run is cancelled.
    assert execute(attackers["admin"], "/hold").status_code == 201
    assert Run.objects.get(pk=hold["id"]).state == "cancelled"


# --- nearby: retrying a command's run runs the command again --------------------------


def test_retrying_a_commands_failed_step_needs_the_commands_permission(
    attackers, deploy, live_server_url
):
    started = command_execute(text="/deploy target=prod", user=attackers["admin"], source="api")
    run = Run.objects.get(pk=started.run_id)
    run.steps.update(state="failed", error="boom")  # the deploy failed
    Run.objects.filter(pk=run.pk).update(state="failed")
    runner = attackers["runner"]  # sees every run and may retry steps; may not /deploy

    response = api(live_server_url, runner, "POST", f"runs/{run.pk}/steps/approval/retry/")
    built_in = api(live_server_url, runner, "POST", "commands/execute",
                   json={"text": f"/hive:retry {run.pk} approval"})  # fmt: skip

    assert response.status_code == 403, response.text
    assert response.json()["error"]["message"] == (
        f"permission denied: retrying run {run.pk} runs /deploy again, which needs "
        "commands.execute_command and runner does not have it"
    )
    assert built_in.status_code == 403, built_in.text
    assert set(run.steps.values_list("state", flat=True)) == {"failed"}
