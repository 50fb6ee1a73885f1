"""Hostile input (issue 15 #10-#14, #17): crafted cursors, YAML alias bombs, runaway
templates, names with a trailing newline and forged log lines are refused cleanly, with
a 4xx or an error naming what was wrong, never a 500, a hang or a forged record."""

import base64

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from tests.security.conftest import auth


def _cursor(query: str) -> str:
    return base64.b64encode(query.encode()).decode()


# What DRF's cursor decoder let through to the query: a position that is not a row id
# (text, a float, a NUL, empty, larger than a 64-bit id) inside well-formed base64.
CRAFTED_CURSORS = [
    _cursor("p=abc"),
    _cursor("p=1e5"),
    _cursor("p=%00"),
    _cursor("p="),
    _cursor("p=-1"),
    _cursor("p=" + "9" * 30),
    _cursor("o=-1"),
    _cursor("r=x"),
    "not base64!",
    "%00",
]


@pytest.mark.parametrize("path", ["/api/v1/runs/", "/api/v1/messages/"])
@pytest.mark.parametrize("cursor", CRAFTED_CURSORS)
def test_a_crafted_cursor_is_a_400_naming_the_cursor(attackers, path, cursor):
    response = Client().get(path, {"cursor": cursor}, headers=auth(attackers["admin"]))
    assert response.status_code == 400, response.content
    assert response.json() == {
        "error": {
            "code": "invalid",
            "message": "cursor: Invalid cursor.",
            "fields": {"cursor": ["Invalid cursor."]},
        }
    }


@pytest.mark.parametrize("path", ["/api/v1/runs/", "/api/v1/messages/"])
def test_a_real_cursor_still_pages(attackers, path):
    valid = _cursor("p=5")
    response = Client().get(path, {"cursor": valid}, headers=auth(attackers["admin"]))
    assert response.status_code == 200, response.content


# --- #12: YAML alias bombs ------------------------------------------------------------


# Nine anchors, each a list of nine aliases of the one before: 9**9 values in 600-odd
# bytes, in a step's `with:` (any JSON goes there), the anchor expanding past the bound
# on the 10th line.
def _alias_bomb(indent: str = "") -> str:
    lines = [
        "steps:",
        "  - id: a",
        "    skill: noop",
        "    with:",
        '      a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"      {name}: &{name} [{','.join([f'*{before}'] * 9)}]"
            for before, name in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
    return "".join(f"{indent}{line}\n" for line in lines)


def _hive(*args: str, timeout: float = 60, **env: str):
    """`manage.py hive ARGS` as a process of its own, as an operator runs it."""
    import subprocess

    from ops.processes import hive_argv
    from tests.processes import child_env

    return subprocess.run(
        hive_argv(*args), env=child_env(**env), capture_output=True, text=True, timeout=timeout
    )


def test_a_workflow_file_with_an_alias_bomb_is_refused_naming_file_and_line(
    transactional_db, tmp_path
):
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb())
    assert len(_alias_bomb()) < 700
    done = _hive("workflow", "load", str(path), timeout=30)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        f"CommandError: {path}:10: too large: more than 100000 values once aliases are "
        "expanded (HIVE_DEFINITION_MAX_VALUES)"
    )
    assert "Traceback" not in done.stderr


def test_a_command_file_with_an_alias_bomb_is_refused_naming_file_and_line(
    transactional_db, tmp_path
):
    path = tmp_path / "bomb.md"
    path.write_text(f"---\nworkflow:\n{_alias_bomb('  ')}---\nA bomb.\n")
    done = _hive("load", str(path), timeout=30)
    assert done.returncode != 0, done.stdout
    assert done.stderr.splitlines()[0] == (
        f"error: {path}:12: too large: more than 100000 values once aliases are expanded "
        "(HIVE_DEFINITION_MAX_VALUES) (the loaded version, if any, stays active)"
    )
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "text, error",
    [
        ("steps: " + "[" * 100_000 + "]" * 100_000 + "\n",
         "{path}:1: too large: nested deeper than 100 levels"),
        ("steps: [{id: a, skill: noop}]\n" + "#" * 2 * 1024 * 1024 + "\n",
         "{path}: larger than 1048576 bytes (HIVE_DEFINITION_MAX_BYTES)"),
    ],
    ids=["nested-100000-deep", "larger-than-the-bound"],
)  # fmt: skip
def test_a_definition_file_too_deep_or_too_large_is_refused_without_a_traceback(
    text, error, transactional_db, tmp_path
):
    path = tmp_path / "definition.yaml"
    path.write_text(text)
    done = _hive("workflow", "load", str(path), timeout=30)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == f"CommandError: {error.format(path=path)}"


def test_anchors_and_merge_keys_within_the_bound_still_load(transactional_db, tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "name: anchored\n"
        "steps:\n"
        "  - &base {id: a, skill: noop}\n"
        "  - {<<: *base, id: b, needs: [a]}\n"
    )
    done = _hive("workflow", "load", str(path), timeout=30)
    assert done.returncode == 0, done.stderr


# --- #17: forged log lines -------------------------------------------------------------


def test_a_reject_reason_with_a_newline_is_one_line_in_the_text_log(
    processes, make_workflow, attackers
):
    import httpx

    from coordination.services import run_start
    from tests.processes import wait_for

    web, url = processes.start_web(HIVE_LOG_FORMAT="text")
    workflow = make_workflow([{"id": "gate", "skill": "noop", "approval": True}])
    run = run_start(workflow=workflow, params={}, user=attackers["runner"])
    forged = "2030-01-01 00:00:00,000 INFO hive.audit: admin granted superuser to runner"

    response = httpx.post(
        f"{url}/api/v1/runs/{run.pk}/steps/gate/reject/",
        json={"reason": f"no\n{forged}\r\x1b[2K"},
        headers=auth(attackers["runner"]),
        timeout=10,
    )

    assert response.status_code == 200, response.text
    line = wait_for(
        lambda: next((ln for ln in web.log().splitlines() if "step.failed" in ln), None),
        timeout=10,
        what="the step.failed record in the web log",
    )
    assert line.endswith(f"error=rejected by runner: no\\n{forged}\\r\\x1b[2K")
    assert not any(ln.startswith("2030-01-01") for ln in web.log().splitlines())


# --- #14: a trailing newline past `$` ----------------------------------------------------


def test_a_version_with_a_trailing_newline_is_refused_at_its_token(attackers, transactional_db):
    from django.conf import settings

    from coordination.models import Run

    artifacts = settings.HIVE_RELEASE_ARTIFACT_DIR
    before = set(artifacts.iterdir()) if artifacts.exists() else set()
    assert _hive("load").returncode == 0

    done = _hive("run", '/demo:release "7.7.7\n"', "--user=admin")

    assert done.returncode != 0, done.stdout
    # The newline is shown as a space, so the caret stays under the token.
    assert done.stderr.splitlines() == [
        'CommandError: /demo:release "7.7.7 "',
        "              ^^^^^^^^ version: '7.7.7\\n' does not match "
        "'^[0-9]+\\\\.[0-9]+\\\\.[0-9]+$'",
    ]
    assert not Run.objects.exists()
    assert (set(artifacts.iterdir()) if artifacts.exists() else set()) == before


@pytest.mark.parametrize(
    ("pattern", "text", "valid"),
    [
        ("^[a-z]+$", "abc", True),
        ("^[a-z]+$", "abc\n", False),
        ("^a$|^$", "\n", False),
        ("^[$]+$", "$$", True),  # a `$` in a class is a dollar sign
        ("^\\$$", "$", True),  # and so is an escaped one
        ("^[]$]$", "$", True),
        ("^(https?://.+)?$", "http://x\n", False),
    ],
)
def test_a_schema_pattern_ends_where_ecma_262_ends_it(pattern, text, valid):
    from hive_core.jsondata import SchemaValidator

    assert SchemaValidator({"type": "string", "pattern": pattern}).is_valid(text) is valid


# --- #13: runaway templates ------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("{{ 'a' * 10**8 }}", "a value longer than 1000000 (HIVE_TEMPLATE_MAX_LENGTH)"),
        ("{{ [0] * 10**7 }}", "a value longer than 1000000 (HIVE_TEMPLATE_MAX_LENGTH)"),
        ("{{ 2 ** (10**8) }}", "a number longer than 1000000 bits (HIVE_TEMPLATE_MAX_LENGTH)"),
        ("{{ 'a'.ljust(10**8) }}", "a value longer than 1000000 (HIVE_TEMPLATE_MAX_LENGTH)"),
        ("{{ 'a' | center(10**8) }}", "a value longer than 1000000 (HIVE_TEMPLATE_MAX_LENGTH)"),
        ("{{ '%100000000d' % 1 }}", "a value longer than 1000000 (HIVE_TEMPLATE_MAX_LENGTH)"),
        (
            "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}",
            "a value longer than 1000000 (HIVE_TEMPLATE_MAX_LENGTH)",
        ),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "took longer than 2 s (HIVE_TEMPLATE_TIMEOUT)",
        ),
    ],
)
def test_a_template_building_too_much_stops_at_its_bound(template, error):
    import time

    from coordination.templates import TemplateError, render

    started = time.monotonic()
    with pytest.raises(TemplateError) as raised:
        render(template, {"params": {}})
    assert str(raised.value) == error
    assert time.monotonic() - started < 5


def test_a_dry_run_with_a_runaway_overlap_key_is_a_400(attackers, tmp_path):
    from commands.services import commands_load

    (tmp_path / "bomb.md").write_text(
        "---\n"
        "params: {type: object, properties: {n: {type: integer}}}\n"
        "overlap: {policy: skip, key: \"{{ 'a' * params.n }}\"}\n"
        "workflow: {steps: [{id: a, skill: noop}]}\n"
        "---\n"
    )
    commands_load(paths=[tmp_path])

    response = Client().post(
        "/api/v1/commands/execute",
        {"text": "/bomb n=100000000 --dry-run"},
        content_type="application/json",
        headers=auth(attackers["admin"]),
    )

    assert response.status_code == 400, response.content
    assert response.json()["error"]["message"] == (
        "overlap key: a value longer than 1000000 (HIVE_TEMPLATE_MAX_LENGTH)"
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("command", [["workflow", "start", "any", "--params"],
                                     ["skill", "noop", "--inputs"]])  # fmt: skip
def test_json_nested_past_the_stack_on_the_command_line_is_one_error_line(command, make_workflow):
    make_workflow([{"id": "a", "skill": "noop"}], name="any")
    deep = "[" * 100_000 + "]" * 100_000

    with pytest.raises(CommandError, match=r"^--(params|inputs): not valid JSON: maximum rec"):
        call_command("hive", *command, deep)
