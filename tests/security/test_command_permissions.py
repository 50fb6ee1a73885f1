"""Issue 15, items 1, 2, 3 and 5: a command runs only as that command, as a user
who may run it; every door (API, CLI, admin, rerun, schedules, /hive:schedule, the
overlap policy) applies the same rule, acted out by the review's users."""

import textwrap

import httpx
import pytest
from django.core.management import CommandError, call_command

from commands.models import Command
from commands.services import command_execute, commands_load
from coordination.models import Run
from tests.security.conftest import auth

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
