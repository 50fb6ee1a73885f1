"""Schemathesis against the real server, authenticated as a superuser, with every
check: no request gives a 5xx, no response breaks the published schema (status
codes, content types, headers, bodies), authentication is always enforced."""

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from coordination.services import run_start

pytestmark = pytest.mark.django_db(transaction=True)

# What the API refuses or tolerates on purpose: JSON with a NUL (PostgreSQL cannot
# store it), an opaque cursor that is not one, unknown body fields DRF ignores.
TOLERATED = {"Schema-valid request rejected", "Schema-violating request accepted"}


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    live_server_url, make_workflow, tmp_path
):
    user = get_user_model().objects.create_superuser("fuzzer", password="pw")
    token = Token.objects.create(user=user).key
    gate = make_workflow([{"id": "gate", "skill": "noop", "approval": True}], name="release")
    run_start(workflow=gate, params={}, user=user)
    schema = tmp_path / "schema.json"
    schema.write_bytes(
        httpx.get(
            f"{live_server_url}/api/schema/?format=json",
            headers={"Authorization": f"Token {token}"},
        ).content
    )

    result = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run", str(schema),
         "--url", live_server_url, "-H", f"Authorization: Token {token}",
         "--checks", "all", "--phases", "examples,coverage,fuzzing",
         "--max-examples", "30", "--seed", "1", "-w", "1", "--no-color"],
        capture_output=True, text=True, timeout=600,
        cwd=tmp_path,  # its cache of earlier failures stays out of the checkout
    )  # fmt: skip

    output = result.stdout + result.stderr
    assert "Test cases:" in output, output[-3000:]
    found = set(re.findall(r"^- ST\d+ (.+)$", output, re.MULTILINE))
    # Each failure is a block that starts at its operation's `___ METHOD /path ___` line.
    blocks = re.split(r"\n(?=_{3,} )", output)
    bad = [b for b in blocks if any("ST" in b and t in b for t in found - TOLERATED)]
    assert found - TOLERATED == set(), "\n".join(bad)[-8000:]
