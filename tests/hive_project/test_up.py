"""`hive up` (what `make run` runs) brings up the whole stack on real processes."""

import signal
import textwrap

import httpx
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from agents.models import Agent
from tests.processes import free_port, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pool_file(tmp_path):
    path = tmp_path / "agents.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            agents:
              - {name: lead, role: planner, skills: [noop]}
              - {name: hand, role: builder, skills: [noop, sleep], concurrency: 2}
            """
        )
    )
    return path


def test_up_runs_web_agents_coordinator_and_flower_then_stops_cleanly(processes, pool_file):
    web, flower = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    up = processes.start(
        "up",
        name="up",
        HIVE_PORT=web.rsplit(":", 1)[1],
        HIVE_FLOWER_PORT=flower.rsplit(":", 1)[1],
        HIVE_ADMIN_PASSWORD="up-test-password",
        HIVE_AGENTS_FILE=str(pool_file),
    )

    def agents_online():
        assert up.alive(), up.log()
        return set(Agent.objects.filter(status="idle").values_list("name", flat=True)) == {
            "lead",
            "hand",
        }

    wait_for(agents_online, timeout=90, what="both agents to come online")
    # The password came from the environment: the banner names it, never prints it.
    assert "login       admin / (from HIVE_ADMIN_PASSWORD)" in up.log()
    assert "up-test-password" not in up.log()

    # The web process: login page, and the API with the admin's token.
    wait_for(lambda: _get(f"{web}/accounts/login/") == 200, timeout=30, what="the web server")
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password("up-test-password")
    token = Token.objects.create(user=admin).key
    listed = httpx.get(f"{web}/api/v1/agents/", headers={"Authorization": f"Token {token}"})
    assert {a["name"]: a["status"] for a in listed.json()["results"]} == {
        "hand": "idle",
        "lead": "idle",
    }

    # Flower: basic auth with the admin's credentials, every agent a worker.
    wait_for(lambda: _get(f"{flower}/api/workers") == 401, timeout=30, what="Flower")
    wait_for(
        lambda: (
            {"lead", "hand"}
            <= {w.split("@")[0] for w in _flower_workers(flower, ("admin", "up-test-password"))}
        ),
        timeout=30,
        what="Flower to list both agents",
    )

    # Ctrl-C stops every process, and the agents say they are leaving.
    up.signal(signal.SIGINT)
    up.proc.wait(timeout=60)
    wait_for(lambda: not up.group_alive(), timeout=30, what="every process to exit")
    assert set(Agent.objects.values_list("status", flat=True)) == {"offline"}


def test_up_refuses_a_broken_pool_file_naming_file_and_line(processes, tmp_path):
    broken = tmp_path / "agents.yaml"
    broken.write_text("agents:\n  - name: ok\n  - name: Bad Name\n")

    up = processes.start("up", name="up", HIVE_AGENTS_FILE=str(broken))
    up.proc.wait(timeout=60)

    assert up.proc.returncode == 1
    assert f"{broken}:3: agents[1].name: 'Bad Name' is not a lowercase slug" in up.log()
    assert "Traceback" not in up.log()


def _get(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None


def _flower_workers(url: str, auth: tuple[str, str]) -> list[str]:
    try:
        return list(httpx.get(f"{url}/api/workers?refresh=1", auth=auth, timeout=10).json())
    except (httpx.TransportError, ValueError):
        return []
