"""`hive workflow load/start` on a real agent: the README's example release runs."""

import hashlib
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from coordination.models import Run, Workflow

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLE = str(settings.BASE_DIR / "examples" / "release.yaml")


def test_the_example_release_loads_once_and_runs_on_the_demo_roles(start_agents, capsys):
    start_agents(
        {"name": "planner", "role": "planner", "skills": "noop"},
        {"name": "builder", "role": "builder", "skills": "noop,release.build,release.test"},
        {"name": "reviewer", "role": "reviewer", "skills": "noop"},
    )

    call_command("hive", "workflow", "load", EXAMPLE)
    call_command("hive", "workflow", "load", EXAMPLE)
    call_command(
        "hive", "workflow", "start", "release", "--wait",
        "--params", '{"version": "1.4.0", "env": "staging", "components": ["api", "web", "cli"]}',
    )  # fmt: skip

    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"release@1 saved ({EXAMPLE})"
    assert out[1] == f"release@1 unchanged ({EXAMPLE})"
    assert out[-1].endswith(": succeeded")
    run = Run.objects.get()
    steps = {s.key: s for s in run.steps.all()}
    assert steps["approve"].state == "skipped"  # staging needs no approval
    assert steps["announce"].output == {"message": "released 1.4.0 to staging"}
    assert {steps[f"{s}[{i}]"].agent for s in ("build", "test") for i in range(3)} == {"builder"}
    assert [b["sha256"] for b in steps["build"].output] == [
        hashlib.sha256(Path(b["path"]).read_bytes()).hexdigest() for b in steps["build"].output
    ]
    assert steps["review"].agent == "reviewer"
    assert steps["review"].output == {"built": 3, "tests_passed": 12, "version": "1.4.0"}


def test_start_refuses_bad_params_and_unknown_workflows():
    call_command("hive", "workflow", "load", EXAMPLE)

    with pytest.raises(CommandError, match=r"--params: params.env: 'qa' is not one of"):
        call_command(
            "hive", "workflow", "start", "release", "--params", '{"version": "1.0.0", "env": "qa"}'
        )
    with pytest.raises(CommandError, match="--params: not valid JSON"):
        call_command("hive", "workflow", "start", "release", "--params", "{oops")
    with pytest.raises(CommandError, match=r"--params: params.version: holds a lone surrogate"):
        call_command("hive", "workflow", "start", "release", "--params", '{"version": "\\ud800"}')
    with pytest.raises(CommandError, match=r"--params: params: a key holds a lone surrogate"):
        call_command("hive", "workflow", "start", "release", "--params", '{"\\udfff": 1}')
    with pytest.raises(CommandError, match="no workflow named 'nope'; load it first"):
        call_command("hive", "workflow", "start", "nope")
    assert not Run.objects.exists() and Workflow.objects.count() == 1


def test_start_refuses_params_that_are_not_an_object_even_without_a_schema(tmp_path):
    free = tmp_path / "free.yaml"
    free.write_text("steps:\n  - id: a\n    skill: noop\n")
    call_command("hive", "workflow", "load", str(free))

    for params, kind in (("[]", "list"), ('"x"', "str"), ("null", "NoneType")):
        with pytest.raises(
            CommandError, match=rf"--params: params: must be a JSON object, not {kind}"
        ):
            call_command("hive", "workflow", "start", "free", "--params", params)
    assert not Run.objects.exists()


def test_load_names_the_broken_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps:\n  - id: a\n    skill: nope\n")

    with pytest.raises(CommandError, match=r"broken.yaml:3: step 'a': skill: unknown skill 'nope'"):
        call_command("hive", "workflow", "load", str(broken))


def test_start_takes_a_priority_and_a_deadline_and_names_a_bad_one(tmp_path, capsys):
    free = tmp_path / "free.yaml"
    free.write_text("priority: 2\nsteps:\n  - id: a\n    skill: noop\n")
    call_command("hive", "workflow", "load", str(free))

    with pytest.raises(CommandError, match=r"^--priority: must be an integer from 0 to 9, not 12$"):
        call_command("hive", "workflow", "start", "free", "--priority", "12")
    with pytest.raises(CommandError, match=r"^--deadline: must be a number of seconds, more "):
        call_command("hive", "workflow", "start", "free", "--deadline", "0")
    assert not Run.objects.exists()

    call_command("hive", "workflow", "start", "free")
    call_command("hive", "workflow", "start", "free", "--priority", "9", "--deadline", "60")

    default, urgent = Run.objects.order_by("id")
    assert (default.priority, default.deadline) == (2, None)
    assert urgent.priority == 9
    assert 59 < (urgent.deadline - urgent.created_at).total_seconds() <= 60
