"""Schemathesis against the real server (daphne), with every check of schemathesis
(`--checks all`) over every operation the server's own schema lists: no request gives
a 5xx, no response breaks the published schema (status codes, content types, headers,
bodies), valid requests are accepted and invalid ones refused, authentication is always
enforced. Once as a superuser and once as a user without any permission.

The operations are read from the served schema, so an endpoint added later is covered
without touching this test. The few per-operation exceptions, each with its reason, are
in schemathesis.toml next to this file."""

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from agents.services import agent_register, message_send
from commands.services import schedule_create
from coordination.services import run_start

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture
def data(make_workflow):
    """A row behind every list, each in the state its schema finds hardest to describe:
    a run waiting for approval, a schedule that never ran (`last_run_at` null), an agent
    that never beat, a message nobody handled."""
    owner = get_user_model().objects.create_superuser("owner", password="pw-owner-long")
    gate = make_workflow([{"id": "gate", "skill": "noop", "approval": True}], name="release")
    run_start(workflow=gate, params={}, user=owner)
    schedule_create(text="/hive:help", user=owner, every=3600, name="hourly help")
    agent_register(
        name="builder-1", role="builder", skills=["noop"], concurrency=1,
        host="ci", pid=1, version="0",
    )  # fmt: skip
    message_send(sender="user:owner", to="builder-1", kind="ping")


def _user(kind: str):
    users = get_user_model().objects
    if kind == "admin":
        return users.create_superuser("fuzzer", password="pw-fuzzer-long")
    return users.create_user("fuzzer", password="pw-fuzzer-long")  # no permission at all


@pytest.mark.parametrize("kind", ["admin", "nobody"])
def test_schemathesis_with_every_check_finds_nothing(kind, live_server_url, data, tmp_path):
    token = Token.objects.create(user=_user(kind)).key
    header = f"Authorization: Token {token}"
    schema = tmp_path / "schema.json"
    schema.write_bytes(
        httpx.get(
            f"{live_server_url}/api/schema/?format=json",
            headers={"Authorization": f"Token {token}"},
        ).content
    )

    # Bounded: at most 25 cases per operation and phase (about a minute per user on
    # a 2-core machine).
    result = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(CONFIG),
         "run", str(schema), "--url", live_server_url, "-H", header,
         "--checks", "all", "--phases", "examples,coverage,fuzzing",
         "--max-examples", "25", "--seed", "1", "-w", "1", "--no-color"],
        capture_output=True, text=True, timeout=600,
        cwd=tmp_path,  # its cache of earlier failures stays out of the checkout
    )  # fmt: skip

    output = result.stdout + result.stderr
    assert "Test cases:" in output, output[-3000:]
    assert re.search(r"Operations:\s+(\d+) selected / \1 total", output), output[:2000]
    failures = re.findall(r"^- (ST\d+ .+)$", output, re.MULTILINE)
    # Each failure is a block that starts at its operation's `___ METHOD /path ___` line.
    assert failures == [] and result.returncode == 0, output[-12000:]
