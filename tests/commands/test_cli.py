"""`hive run` on real agents: the shipped demo commands do their work, `--wait`
prints the outputs and exits 0 only when the run succeeds, and `approval` holds a
production release until `/hive:approve`."""

import json

import pytest
from django.core.management import CommandError, call_command

from commands.models import Invocation
from commands.services import command_execute, commands_load
from coordination.models import Run, StepRun
from tests.runs import steps_of, wait_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shipped(settings):
    settings.HIVE_COMMAND_DIRS = []
    commands_load()


def run_cli(*args) -> int:
    try:
        call_command("hive", "run", *args)
    except SystemExit as exc:
        return exc.code
    return 0


def test_the_demo_pipeline_fans_out_and_in_and_wait_prints_its_outputs(
    demo_agents, users, shipped, capsys
):
    code = run_cli("/demo:pipeline items=20", "--wait")

    out = capsys.readouterr().out.splitlines()
    assert code == 0
    run = Run.objects.get()
    assert (
        out[0] == f"invocation {Invocation.objects.get().pk}: started: run {run.pk} of "
        f"cmd:demo:pipeline@1: running"
    )
    assert out[1:] == [f"run {run.pk}: succeeded", 'total: {"items": 20, "sum_of_squares": 2470}']
    steps = steps_of(run)
    assert {steps[f"work[{i}]"].agent for i in range(20)} == {"builder"}
    assert (steps["plan"].agent, steps["total"].agent) == ("planner", "reviewer")
    invocation = Invocation.objects.get()
    assert (invocation.source, invocation.user.username) == ("cli", "admin")

    assert run_cli("/demo:pipeline 3", "--wait", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["run"]["outputs"] == {"total": {"items": 3, "sum_of_squares": 5}}
    assert (printed["outcome"], printed["source"], printed["args"]) == ("started", "cli",
                                                                      {"items": 3})  # fmt: skip


def test_a_prod_release_waits_for_approval_and_staging_goes_straight_through(
    demo_agents, users, shipped
):
    staging = command_execute(text="/demo:release 1.4.0", user=users["ada"], source="api")
    prod = command_execute(
        text="/demo:release 1.4.0 env=prod components=api,cli", user=users["ada"], source="api"
    )

    run = wait_run(staging.run)
    assert run.state == "succeeded"
    assert steps_of(run)["approval"].state == "skipped"
    assert steps_of(run)["notify"].output == {"message": "released 1.4.0 to staging (api, web)"}
    assert steps_of(run)["webhook"].state == "skipped"  # no notify_url

    held = wait_run(prod.run, states={"waiting"})
    steps = steps_of(held)
    assert steps["approval"].state == "waiting"
    assert {k: s.state for k, s in steps.items() if k != "approval"} == {
        "plan": "pending", "build": "pending", "test": "pending", "review": "pending",
        "notify": "pending", "webhook": "pending",
    }  # fmt: skip
    # ada may run commands but not approve: /hive:approve needs coordination.change_run.
    with pytest.raises(CommandError, match="needs coordination.change_run and ada does not"):
        call_command("hive", "run", f"/hive:approve {held.pk}", "--user", "ada")
    assert StepRun.objects.get(run=held, key="approval").state == "waiting"

    assert run_cli(f"/hive:approve {held.pk}") == 0
    run = wait_run(held)
    assert run.state == "succeeded"
    assert steps_of(run)["approval"].history[0]["approved_by"] == "admin"
    assert steps_of(run)["review"].output == {"built": 2, "tested": 2}


def test_wait_exits_non_zero_when_the_run_fails_and_errors_have_exit_codes(
    start_agent, users, definitions, capsys
):
    start_agent("failing", skills="noop,test.fail")
    definitions("boom.md", "---\nworkflow: {steps: [{id: boom, skill: test.fail}]}\n---\n")
    commands_load(paths=[definitions.root])

    assert run_cli("/boom", "--wait") == 1
    assert (
        capsys.readouterr()
        .out.splitlines()[-1]
        .endswith(": failed: step 'boom' failed: this step always fails")
    )
    with pytest.raises(CommandError) as invalid:
        call_command("hive", "run", "/boom extra")
    assert invalid.value.returncode == 2
    assert str(invalid.value) == (
        "/boom extra\n      ^^^^^ unexpected argument 'extra': this command takes no "
        "positional arguments; use key=value (usage: /boom)"
    )
    with pytest.raises(CommandError) as denied:
        call_command("hive", "run", "/boom", "--user", "bob")
    assert denied.value.returncode == 3
    assert list(Invocation.objects.values_list("source", "outcome").order_by("id")) == [
        ("cli", "started"), ("cli", "invalid"), ("cli", "denied"),
    ]  # fmt: skip
