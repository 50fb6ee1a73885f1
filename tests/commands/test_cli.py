"""`hive run` on real agents: the shipped demo commands do their work, `--wait`
prints the outputs and exits 0 only when the run succeeds, and `approval` holds a
production release until `/hive:approve`."""

import hashlib
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from commands.models import Invocation
from commands.services import CommandFailure, command_execute, commands_load
from coordination.models import Run, StepRun
from tests.release_app import BROKEN_ERROR, source_tree
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


def pipeline_total(items: int, rounds: int) -> str:
    """What /demo:pipeline computes, worked out here independently of Hive."""
    digests = []
    for i in range(items):
        digest = hashlib.sha256(f"item {i}".encode()).digest()
        for _ in range(rounds - 1):
            digest = hashlib.sha256(digest).digest()
        digests.append(digest.hex())
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def test_the_demo_pipeline_hashes_on_the_builders_and_combines_on_the_reviewer(
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
    total = pipeline_total(20, 1000)
    assert total == "45c10ebfd9312194a15cf600a7c21986eeb564e59bf2ae46a526b4b75e1c65c6"  # README
    assert out[1:] == [f"run {run.pk}: succeeded", f'total: {{"digest": "{total}", "rounds": 1}}']
    steps = steps_of(run)
    assert {steps[f"work[{i}]"].agent for i in range(20)} == {"builder"}
    assert {steps[f"work[{i}]"].skill for i in range(20)} == {"hash.sha256"}
    assert steps["work[19]"].inputs == {"text": "item 19", "rounds": 1000}
    assert (steps["plan"].agent, steps["total"].agent) == ("planner", "reviewer")
    assert steps["total"].skill == "hash.sha256"
    invocation = Invocation.objects.get()
    assert (invocation.source, invocation.user.username) == ("cli", "admin")

    assert run_cli("/demo:pipeline 3 rounds=50000", "--wait", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["run"]["outputs"] == {"total": {"digest": pipeline_total(3, 50000), "rounds": 1}}
    assert (printed["outcome"], printed["source"]) == ("started", "cli")
    assert printed["args"] == {"items": 3, "rounds": 50000}


def test_a_prod_release_waits_for_approval_and_staging_goes_straight_through(
    demo_agents, users, shipped
):
    staging = command_execute(text="/demo:release 1.4.0", user=users["ada"], source="api")
    prod = command_execute(
        text="/demo:release 1.4.0 env=prod components=api,cli", user=users["ada"], source="api"
    )

    run = wait_run(staging.run)
    assert run.state == "succeeded"
    steps = steps_of(run)
    assert steps["approval"].state == "skipped"
    assert steps["notify"].output == {"message": "released 1.4.0 to staging (api, web)"}
    assert steps["webhook"].state == "skipped"  # no notify_url
    # Real artifacts, written by the builder: the sha256 it reported is the file's.
    built = steps["build"].output
    assert [(b["component"], b["version"], b["files"]) for b in built] == [
        ("api", "1.4.0", 2), ("web", "1.4.0", 2),
    ]  # fmt: skip
    for artifact in built:
        path = Path(artifact["path"])
        assert (
            path == settings.HIVE_RELEASE_ARTIFACT_DIR / "1.4.0" / f"{artifact['component']}.tar.gz"
        )
        assert artifact["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert artifact["size"] == path.stat().st_size
    tested = steps["test"].output
    assert [(t["component"], t["ran"], t["passed"]) for t in tested] == [
        ("api", 6, 6),
        ("web", 3, 3),
    ]
    assert {steps[f"{s}[{i}]"].agent for s in ("build", "test") for i in (0, 1)} == {"builder"}
    assert steps["review"].output == {
        "built": 2,
        "tested": 2,
        "tests_passed": 9,
        "checksums": "".join(f"{b['sha256']}  {b['path']}\n" for b in built),
    }

    held = wait_run(prod.run, states={"waiting"})
    steps = steps_of(held)
    assert steps["approval"].state == "waiting"
    assert {k: s.state for k, s in steps.items() if k != "approval"} == {
        "plan": "pending", "build": "pending", "test": "pending", "review": "pending",
        "notify": "pending", "webhook": "pending",
    }  # fmt: skip
    # ada may run commands but not approve: /hive:approve needs coordination.approve_steprun.
    with pytest.raises(CommandError, match="needs coordination.approve_steprun and ada does not"):
        call_command("hive", "run", f"/hive:approve {held.pk}", "--user", "ada")
    assert StepRun.objects.get(run=held, key="approval").state == "waiting"

    assert run_cli(f"/hive:approve {held.pk}") == 0
    run = wait_run(held)
    assert run.state == "succeeded"
    assert steps_of(run)["approval"].history[0]["approved_by"] == "admin"
    review = steps_of(run)["review"].output
    assert (review["built"], review["tested"], review["tests_passed"]) == (2, 2, 9)


@pytest.fixture
def release_tree(tmp_path, start_agents):
    """The demo pool with a builder releasing a tree of the test's own: the example
    app plus `broken` (failing tests) and `outside` (a symlink out of the tree)."""
    root = source_tree(tmp_path / "app")
    start_agents(
        {"name": "planner", "role": "planner", "skills": "noop"},
        {"name": "builder", "role": "builder", "skills": "noop,release.build,release.test",
         "concurrency": 2, "HIVE_RELEASE_SOURCE_DIR": str(root)},
        {"name": "reviewer", "role": "reviewer", "skills": "noop"},
    )  # fmt: skip
    return root


def test_a_release_whose_tests_fail_fails_naming_the_tests(release_tree, users, shipped):
    invocation = command_execute(
        text="/demo:release 1.5.0 components=api,broken", user=users["ada"], source="api"
    )

    run = wait_run(invocation.run)
    assert run.state == "failed"
    assert run.error == f"step 'test[1]' failed: {BROKEN_ERROR}"
    steps = steps_of(run)
    assert (steps["test[1]"].state, steps["test[1]"].tries) == ("failed", 1)  # not retried
    assert steps["build"].state == "succeeded"  # building is not testing
    assert steps["review"].state == "cancelled"


def test_a_release_without_a_version_is_refused_naming_it(users, shipped):
    for dry_run in (True, False):
        with pytest.raises(CommandFailure) as invalid:
            command_execute(text="/demo:release env=prod", user=users["ada"], source="api",
                            dry_run=dry_run)  # fmt: skip
        assert (invalid.value.code, str(invalid.value)) == (
            "invalid",
            "missing argument 'version' (usage: /demo:release <version> [env] [components...])",
        )
    assert not Run.objects.exists()


def test_a_release_refuses_components_outside_the_source_tree(release_tree, users, shipped):
    with pytest.raises(CommandFailure) as invalid:
        command_execute(text="/demo:release 1.5.0 components=../secret", user=users["ada"],
                        source="api")  # fmt: skip
    assert (invalid.value.code, str(invalid.value)) == (
        "invalid", "components.0: '../secret' does not match '^[a-z0-9][a-z0-9-]*$'",
    )  # fmt: skip
    assert not Run.objects.exists()

    # A name the schema allows but that is a symlink out of the tree: the builder
    # resolves it and refuses before reading anything.
    invocation = command_execute(
        text="/demo:release 1.5.0 components=outside", user=users["ada"], source="api"
    )
    run = wait_run(invocation.run)
    assert run.state == "failed"
    assert run.error == (
        "step 'build[0]' failed: release.build: inputs.component: 'outside' resolves outside "
        "HIVE_RELEASE_SOURCE_DIR; refusing it"
    )
    assert not (settings.HIVE_RELEASE_ARTIFACT_DIR / "1.5.0" / "outside.tar.gz").exists()


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


@pytest.mark.parametrize(
    "char, error",
    [("\x00", "control character U+0000 is not allowed"),
     ("\udcff", "lone surrogate U+DCFF is not allowed")],
)  # fmt: skip
def test_text_the_database_cannot_store_is_refused_pointing_at_it_and_audited(users, char, error):
    with pytest.raises(CommandError) as invalid:
        call_command("hive", "run", f"/hive:help {char}")

    assert invalid.value.returncode == 2
    assert str(invalid.value) == f"/hive:help  \n           ^ {error}"
    assert list(Invocation.objects.values_list("text", "outcome")) == [
        ("/hive:help \ufffd", "invalid")
    ]


def test_hive_run_gives_the_run_a_priority_and_a_deadline_or_names_the_bad_one(users, definitions):
    definitions("urgent.md", "---\nworkflow: {steps: [{id: a, skill: noop}]}\n---\n")
    commands_load(paths=[definitions.root])

    with pytest.raises(CommandError) as invalid:
        call_command("hive", "run", "/urgent", "--priority", "12")
    assert (invalid.value.returncode, str(invalid.value)) == (
        2, "priority: must be an integer from 0 to 9, not 12",
    )  # fmt: skip
    with pytest.raises(CommandError, match="^deadline: must be a number of seconds, more than 0"):
        call_command("hive", "run", "/urgent", "--deadline", "-1")
    assert not Run.objects.exists()
    assert list(Invocation.objects.values_list("outcome", flat=True)) == ["invalid", "invalid"]

    assert run_cli("/urgent", "--priority", "9", "--deadline", "600") == 0

    run = Run.objects.get()
    assert run.priority == 9
    assert 599 < (run.deadline - run.created_at).total_seconds() <= 600
