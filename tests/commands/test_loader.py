"""Definition files → the database: created, updated as new versions, unchanged,
disabled when removed; a broken file names the file, line and problem, and the
version already loaded stays active."""

import hashlib
import json

import pytest
from django.core.management import CommandError, call_command

from agents.pool import agent_pool_load
from commands.loader import SHIPPED_DIR
from commands.models import Command
from commands.services import commands_load
from coordination.models import Workflow
from coordination.services import workflow_save
from coordination.spec import spec_validate

pytestmark = pytest.mark.django_db

DEPLOY = """
---
description: Deploy the web tier
argument-hint: <env>
params:
  env: {enum: [staging, prod]}
workflow:
  steps:
    - id: build
      skill: noop
      with: {env: "{{ params.env }}", why: "{{ prompt }}"}
    - id: ship
      needs: build
      skill: sleep
      with: {seconds: 0}
---
Deploys to $ARGUMENTS.
"""


def actions(changes) -> list[str]:
    return [str(c) for c in changes if not c.name.startswith("hive:")]


def test_a_folder_loads_with_subfolders_as_namespaces_and_reloads_unchanged(definitions):
    path = definitions("ops/deploy.md", DEPLOY)

    first = actions(commands_load(paths=[definitions.root]))
    second = actions(commands_load(paths=[definitions.root]))

    assert first == [f"/ops:deploy created (v1, {path})"]
    assert second == [f"/ops:deploy unchanged (v1, {path})"]
    command = Command.objects.get(name="ops:deploy")
    assert (command.description, command.argument_hint, command.enabled) == (
        "Deploy the web tier",
        "<env>",
        True,
    )
    assert command.params == {
        "type": "object",
        "properties": {"env": {"enum": ["staging", "prod"]}},
        "additionalProperties": False,
    }
    assert command.body == "Deploys to $ARGUMENTS."
    assert str(command.workflow) == "cmd:ops:deploy@1"


def test_a_changed_file_is_a_new_version_and_a_removed_one_is_disabled(definitions):
    path = definitions("deploy.md", DEPLOY)
    commands_load(paths=[definitions.root])

    path.write_text(path.read_text().replace("seconds: 0", "seconds: 1"))
    changed = actions(commands_load(paths=[definitions.root]))
    command = Command.objects.get(name="deploy")
    assert changed == [f"/deploy updated to v2, {path}"]
    assert (command.version, str(command.workflow)) == (2, "cmd:deploy@2")
    assert Workflow.objects.filter(name="cmd:deploy").count() == 2  # runs keep theirs

    path.unlink()
    removed = actions(commands_load(paths=[definitions.root]))
    assert removed == [f"/deploy disabled: its file is gone, {path.resolve()}"]
    assert not Command.objects.get(name="deploy").enabled

    definitions("deploy.md", DEPLOY.replace("seconds: 0", "seconds: 1"))
    back = actions(commands_load(paths=[definitions.root]))
    assert back == [f"/deploy enabled (v2, {path})"]


def test_a_folder_dropped_from_the_command_dirs_takes_its_commands_with_it(definitions, settings):
    path = definitions("deploy.md", DEPLOY)
    commands_load()
    assert Command.objects.get(name="deploy").enabled

    settings.HIVE_COMMAND_DIRS = []
    dropped = actions(commands_load())

    assert f"/deploy disabled: its folder is not in HIVE_COMMAND_DIRS, {path.resolve()}" in dropped
    assert not Command.objects.get(name="deploy").enabled
    assert Command.objects.get(name="demo:release").enabled  # shipped: always loaded


BROKEN = [
    (
        "bad_yaml.md",
        "---\ndescription: [unclosed\nworkflow: x\n---\n",
        "bad_yaml.md:3: not valid YAML: expected ',' or ']', but got ':'",
    ),
    (
        "no_front.md",
        "just text\n",
        "no_front.md:1: no frontmatter: the file must start with a line '---', then YAML "
        "(at least `workflow:`), then '---'",
    ),
    (
        "unclosed.md",
        "---\nworkflow: x\n",
        "unclosed.md:1: the frontmatter opened here has no closing '---'",
    ),
    (
        "bad_schema.md",
        "---\nparams:\n  type: object\n  properties: {n: {type: integr}}\n"
        "workflow: {steps: [{id: a, skill: noop}]}\n---\n",
        "bad_schema.md:3: params: invalid JSON Schema at properties.n.type: 'integr' is not valid "
        "under any of the given schemas",
    ),
    (
        "unknown_skill.md",
        "---\nworkflow:\n  steps:\n    - id: a\n      skill: noop\n"
        "    - id: b\n      skill: nope\n---\n",
        "unknown_skill.md:7: step 'b': skill: unknown skill 'nope'",
    ),
    (
        "cycle.md",
        "---\nworkflow:\n  steps:\n    - {id: a, skill: noop, needs: b}\n"
        "    - {id: b, skill: noop, needs: a}\n---\n",
        "cycle.md:4: step 'a': needs: a -> b -> a is a cycle",
    ),
    (
        "unknown_field.md",
        "---\nworkflow: {steps: [{id: a, skill: noop}]}\nmodel: opus\n---\n",
        "unknown_field.md:3: unknown field 'model' (fields: name, description, argument-hint, "
        "params, workflow, permission, approval, overlap, enabled, priority, timeout)",
    ),
    (
        "bad_overlap.md",
        "---\nworkflow: {steps: [{id: a, skill: noop}]}\noverlap: sometimes\n---\n",
        "bad_overlap.md:3: overlap: one of allow, skip, queue, cancel-running, or "
        "{policy: ..., key: '...'}",
    ),
    (
        "bad_permission.md",
        "---\nworkflow: {steps: [{id: a, skill: noop}]}\n"
        "permission: commands.launch_rockets\n---\n",
        "bad_permission.md:3: permission: no permission 'commands.launch_rockets' exists "
        "(the default is commands.execute_command)",
    ),
    (
        "bad_hint.md",
        "---\nargument-hint: <env>\nworkflow: {steps: [{id: a, skill: noop}]}\n---\n",
        "bad_hint.md:2: argument-hint: 'env' is not a parameter (params: none)",
    ),
    (
        "bad_approval.md",
        "---\napproval: params.env ==\nworkflow: {steps: [{id: a, skill: noop}]}\n---\n",
        "bad_approval.md:2: approval: template error: unexpected 'end of template'",
    ),
    (
        "a_date.md",
        "---\nworkflow:\n  steps:\n    - id: a\n      skill: noop\n"
        "      with: {since: 2020-01-01}\n---\n",
        "a_date.md:6: not JSON data: 2020-01-01 is a date; quote it",
    ),
    (
        "int_key.md",
        "---\nworkflow: {steps: [{id: a, skill: noop, with: {1: x, null: y}}]}\n---\n",
        "int_key.md:2: not JSON data: the key 1 is not a string; quote it",
    ),
    (
        "stored.md",
        "---\nworkflow: release@7\n---\n",
        "stored.md:2: workflow: no workflow 'release@7'; load it first with hive workflow load",
    ),
    # Flow control: the command's own, and its inline workflow's.
    (
        "bad_priority.md",
        "---\nworkflow: {steps: [{id: a, skill: noop}]}\npriority: 12\n---\n",
        "bad_priority.md:3: priority: 12 is greater than the maximum of 9",
    ),
    (
        "bad_timeout.md",
        "---\nworkflow: {steps: [{id: a, skill: noop}]}\ntimeout: -5\n---\n",
        "bad_timeout.md:3: timeout: -5 is less than or equal to the minimum of 0",
    ),
    (
        "bad_concurrency.md",
        "---\nworkflow:\n  steps: [{id: a, skill: noop}]\n  concurrency: {key: x, limit: 0}\n---\n",
        "bad_concurrency.md:4: concurrency.limit: 0 is less than the minimum of 1",
    ),
    (
        "bad_run_key.md",
        "---\nworkflow:\n  steps: [{id: a, skill: noop}]\n"
        '  concurrency: {key: "deploy:{{ params.env", limit: 1}\n---\n',
        "bad_run_key.md:4: concurrency.key: template error: unexpected end of template, "
        "expected 'end of print statement'.",
    ),
    (
        "bad_workflow_priority.md",
        "---\nworkflow:\n  steps: [{id: a, skill: noop}]\n  priority: 10\n---\n",
        "bad_workflow_priority.md:4: priority: 10 is greater than the maximum of 9",
    ),
    (
        "bad_step_rate.md",
        "---\nworkflow:\n  steps:\n    - id: a\n      skill: noop\n"
        "      rate: {limit: 5, per: -1}\n---\n",
        "bad_step_rate.md:6: step 'a': rate.per: -1 is less than or equal to the minimum of 0",
    ),
    (
        "bad_inline_field.md",
        "---\nworkflow:\n  steps: [{id: a, skill: noop}]\n  retries: 3\n---\n",
        "bad_inline_field.md:4: workflow: unknown field 'retries' (an inline workflow has "
        "steps, a description, priority, timeout and concurrency; its params are the "
        "command's)",
    ),
]


@pytest.mark.parametrize(("name", "text", "error"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_file_names_the_file_and_problem_and_leaves_the_active_version(
    definitions, name, text, error
):
    path = definitions(name, "---\nworkflow: {steps: [{id: ok, skill: noop}]}\n---\nworks\n")
    commands_load(paths=[definitions.root])
    before = Command.objects.get(name=path.stem)

    path.write_text(text)
    changes = commands_load(paths=[definitions.root])

    (change,) = [c for c in changes if c.action == "error"]
    assert change.error == f"{path}{error.removeprefix(name)}"
    assert str(change).endswith("(the loaded version, if any, stays active)")
    after = Command.objects.get(name=path.stem)
    assert (after.version, after.enabled, after.workflow_id) == (1, True, before.workflow_id)


def test_a_cycle_is_named_step_by_step(definitions):
    path = definitions(
        "loop.md",
        """
        ---
        workflow:
          steps:
            - {id: a, skill: noop}
            - {id: b, skill: noop, needs: [a, c]}
            - {id: c, skill: noop, needs: b}
        ---
    """,
    )

    (change,) = [c for c in commands_load(paths=[definitions.root]) if c.action == "error"]

    assert change.error == f"{path}:5: step 'b': needs: b -> c -> b is a cycle"


def test_an_approval_rule_becomes_a_gate_every_first_step_needs(definitions):
    definitions(
        "gated.md",
        """
        ---
        params: {env: {enum: [staging, prod]}}
        approval: params.env == 'prod'
        workflow:
          steps:
            - {id: a, skill: noop}
            - {id: b, skill: noop}
            - {id: c, skill: noop, needs: [a, b]}
        ---
    """,
    )
    commands_load(paths=[definitions.root])

    steps = {s["id"]: s for s in Command.objects.get(name="gated").workflow.spec["steps"]}

    assert steps["approval"]["approval"] is True
    assert steps["approval"]["when"] == "params.env == 'prod'"
    assert (steps["a"]["needs"], steps["b"]["needs"], steps["c"]["needs"]) == (
        ["approval"],
        ["approval"],
        ["a", "b"],
    )


def test_prompt_in_a_template_reads_the_invocation_and_nothing_else_changes(definitions):
    definitions(
        "ask.md",
        """
        ---
        workflow:
          steps:
            - id: a
              skill: noop
              with:
                p: "{{ prompt }}"
                upper: "{{ prompt | upper }}"
                text: "prompt {{ x.prompt }}"
                quoted: "{{ 'prompt' }}"
              when: "prompt"
        ---
    """,
    )
    commands_load(paths=[definitions.root])

    (step,) = Command.objects.get(name="ask").workflow.spec["steps"]

    assert step["with"] == {
        "p": "{{ params._command.prompt }}",
        "upper": "{{ params._command.prompt | upper }}",
        "text": "prompt {{ x.prompt }}",
        "quoted": "{{ 'prompt' }}",
    }
    assert step["when"] == "{{ params._command.prompt }}"


def test_every_step_of_the_demo_commands_has_an_agent_in_the_shipped_pool(settings):
    # `make run` starts hive.agents.yaml: a demo step no agent there offers would
    # wait for an agent forever.
    settings.HIVE_COMMAND_DIRS = []
    commands_load()
    pool = agent_pool_load(settings.BASE_DIR / "hive.agents.yaml")

    unserved = [
        (command.name, step["id"], step["skill"], step["role"])
        for command in Command.objects.filter(name__startswith="demo:")
        for step in command.workflow.spec["steps"]
        # A sleep or a wait runs on no agent (its skill is "").
        if step["skill"]
        and not any(
            step["skill"] in agent.skills and step["role"] in ("", agent.role) for agent in pool
        )
    ]
    assert unserved == []


def test_the_shipped_commands_and_builtins_load(settings):
    settings.HIVE_COMMAND_DIRS = []

    changes = commands_load()

    assert [c.action for c in changes if c.action == "error"] == []
    names = set(Command.objects.values_list("name", flat=True))
    assert {"demo:pipeline", "demo:release", "demo:review", "demo:canary"} <= names
    assert {
        f"hive:{b}"
        for b in (
            "help",
            "status",
            "agents",
            "runs",
            "run",
            "cancel",
            "pause",
            "retry",
            "approve",
            "reject",
            "drain",
            "resume",
            "schedule",
        )
    } <= names
    for path in SHIPPED_DIR.rglob("*.md"):
        assert path.name == "README.md" or Command.objects.filter(source=str(path)).exists()


def test_hive_load_reports_each_change_and_fails_on_a_broken_file(definitions, capsys):
    good = definitions("good.md", "---\nworkflow: {steps: [{id: a, skill: noop}]}\n---\n")
    bad = definitions("bad.md", "---\nworkflow: {steps: [{id: a, skill: nope}]}\n---\n")

    with pytest.raises(CommandError, match=r"some definitions were not loaded \(see above\)"):
        call_command("hive", "load", str(definitions.root))

    captured = capsys.readouterr()
    assert f"/good created (v1, {good})" in captured.out.splitlines()
    assert captured.err.strip() == (
        f"error: {bad}:2: step 'a': skill: unknown skill 'nope' "
        "(the loaded version, if any, stays active)"
    )


def test_a_stored_workflow_can_be_named_by_version(definitions, make_workflow):
    stored = make_workflow([{"id": "x", "skill": "noop"}], name="nightly")
    definitions("nightly.md", "---\nworkflow: nightly@1\napproval: true\n---\n")

    commands_load(paths=[definitions.root])

    spec = Command.objects.get(name="nightly").workflow.spec
    assert [(s["id"], s["needs"], s["approval"], s["when"]) for s in spec["steps"]] == [
        ("approval", [], True, ""),
        ("x", ["approval"], False, ""),
    ]
    assert spec["description"] == f"runs {stored}"


def test_a_command_sets_its_runs_priority_and_timeout_and_its_workflows_flow(definitions):
    definitions(
        "deploy.md",
        """
        ---
        params: {env: {enum: [staging, prod]}}
        priority: 7
        timeout: 600
        workflow:
          concurrency: {key: "deploy:{{ params.env }}", limit: 1}
          priority: 2
          steps:
            - {id: a, skill: noop, rate: {limit: 5, per: 60}}
        ---
    """,
    )
    commands_load(paths=[definitions.root])

    command = Command.objects.get(name="deploy")
    spec = command.workflow.spec
    assert (command.priority, command.timeout) == (7, 600)
    assert (spec["concurrency"], spec["priority"]) == ({"key": "deploy:{{ params.env }}",
                                                        "limit": 1}, 2)  # fmt: skip
    assert "timeout" not in spec
    assert spec["steps"][0]["rate"] == {"limit": 5, "per": 60}


def test_a_command_without_flow_control_keeps_the_digest_it_had(definitions):
    # Digested as before flow control: an upgrade makes no new version of every command.
    definitions("plain.md", "---\nworkflow: {steps: [{id: a, skill: noop}]}\n---\n")
    commands_load(paths=[definitions.root])

    command = Command.objects.get(name="plain")
    fields = {
        "name": "plain", "description": "", "argument_hint": "", "params": command.params,
        "definition": command.definition, "workflow_spec": command.workflow.spec,
        "permission": "commands.execute_command", "approval": "", "overlap": "allow",
        "overlap_key": "", "body": "",
    }  # fmt: skip
    old = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    assert (command.priority, command.timeout, command.digest) == (None, None, old)


def test_a_command_running_a_stored_workflow_keeps_its_flow_control(definitions):
    spec = spec_validate(
        {"steps": [{"id": "x", "skill": "noop"}], "priority": 4, "timeout": 30,
         "concurrency": {"key": "nightly", "limit": 1}},
        source="test",
    )  # fmt: skip
    workflow_save(name="nightly", spec=spec)
    definitions("nightly.md", "---\nworkflow: nightly@1\n---\n")

    commands_load(paths=[definitions.root])

    command = Command.objects.get(name="nightly")
    assert {f: command.workflow.spec.get(f) for f in ("priority", "timeout", "concurrency")} == {
        "priority": 4,
        "timeout": 30,
        "concurrency": {"key": "nightly", "limit": 1},
    }


def test_two_files_defining_one_name_are_refused(definitions):
    first = definitions("a.md", "---\nname: same\nworkflow: {steps: [{id: a, skill: noop}]}\n---\n")
    second = definitions(
        "b.md", "---\nname: same\nworkflow: {steps: [{id: b, skill: noop}]}\n---\n"
    )

    changes = commands_load(paths=[definitions.root])

    assert [str(c) for c in changes if c.action == "error"] == [
        f"error: {second}: /same is defined by {first} too (the loaded version, if any, stays "
        "active)"
    ]
    assert Command.objects.get(name="same").source == str(first.resolve())
