"""The agent pool file: what `hive up` starts, and clear errors when it is wrong."""

import pytest
from django.conf import settings

from agents.pool import AgentSpec, agent_pool_load
from hive_core.yamlfile import DefinitionError


def test_the_shipped_pool_has_a_planner_a_builder_and_a_reviewer():
    pool = agent_pool_load(settings.BASE_DIR / "hive.agents.yaml")

    assert [(a.name, a.role) for a in pool] == [
        ("planner", "planner"),
        ("builder", "builder"),
        ("reviewer", "reviewer"),
    ]
    assert all("noop" in a.skills for a in pool)


def test_role_defaults_to_the_name_and_concurrency_to_one(tmp_path):
    path = tmp_path / "pool.yaml"
    path.write_text("agents:\n  - name: solo\n    skills: [noop]\n")

    assert agent_pool_load(path) == [AgentSpec(name="solo", role="solo", skills=("noop",))]


@pytest.mark.parametrize(
    "text, error",
    [
        ("agents: []\n", ": expected a non-empty list under 'agents:'"),
        ("agents:\n  - name: a\n  - name: a\n", ":3: agents[1].name: duplicate agent name 'a'"),
        ("agents:\n  - name: a\n    colour: red\n", ":2: agents[0]: unknown field 'colour'"),
        ("agents:\n  - name: a\n    skills: noop\n", ":2: agents[0].skills: expected a list"),
        ("agents:\n  - name: a\n    concurrency: 0\n", ":2: agents[0].concurrency: 0 is not"),
        (
            "agents:\n  - name: a\n    skills: [noop, fly]\n",
            ":2: agents[0].skills: unknown skill 'fly'",
        ),
        ("agents:\n  - just-a-name\n", ": agents[0]: expected a mapping"),
        ("agents:\n  - name: [a\n", ":3: not valid YAML"),
    ],
)
def test_errors_name_the_file_line_and_field(tmp_path, text, error):
    path = tmp_path / "pool.yaml"
    path.write_text(text)

    with pytest.raises(DefinitionError) as caught:
        agent_pool_load(path)

    assert str(caught.value).startswith(f"{path}{error}")


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DefinitionError, match=r"missing\.yaml: No such file or directory"):
        agent_pool_load(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "args, error",
    [
        (["--name=ok", "--skills=noop,fly"], "--skills: unknown skill 'fly'"),
        (["--name=Bad Name"], "--name: 'Bad Name' is not a lowercase slug"),
        (["--name=ok", "--role=Ops!"], "--role: 'Ops!' is not a lowercase slug"),
        (["--name=ok", "--concurrency=0"], "--concurrency: 0 is not a positive integer"),
    ],
)
def test_hive_agent_checks_its_identity_as_the_pool_file_does(args, error):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError) as caught:
        call_command("hive", "agent", *args)

    assert str(caught.value) == error
