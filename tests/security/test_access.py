"""Issue 15, items 6-9: who may knock how often (the console's throttle, the login
lockout), how big an agent may grow, and whose messages a user may read. Each test
goes through the door the review used, as one of its users."""

import subprocess
import sys

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from agents.models import Agent
from commands.models import Invocation
from tests.processes import child_env
from tests.security.conftest import auth

pytestmark = pytest.mark.django_db


def api_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=auth(user)["Authorization"])
    return client


# --- 6. The console is throttled with the API, in one bucket per user ---------------


def test_the_console_and_the_api_count_against_one_command_rate(attackers, settings, client):
    settings.HIVE_COMMAND_THROTTLE = "3/min"
    cache.clear()
    executor = attackers["executor"]
    client.force_login(executor)
    api = api_client(executor)

    answers = [
        api.post("/api/v1/commands/execute", {"text": "/hive:status"}, format="json"),
        client.post("/console/", {"text": "/hive:status"}),
        client.post("/console/hive:status/", {}),
        client.post("/console/", {"text": "/hive:status"}),
        client.post("/console/hive:status/", {}),
        api.post("/api/v1/commands/execute", {"text": "/hive:status"}, format="json"),
    ]

    assert [a.status_code for a in answers] == [201, 200, 200, 429, 429, 429]
    for refused in answers[3:5]:
        page = refused.content.decode()
        assert '<div class="result error" data-code="throttled">' in page
        assert "too many commands (at most 3/min per user); try again in " in page
    assert Invocation.objects.filter(user=executor).count() == 3


def test_one_users_console_rate_is_not_anothers(attackers, settings, client):
    settings.HIVE_COMMAND_THROTTLE = "1/min"
    cache.clear()
    client.force_login(attackers["executor"])
    assert client.post("/console/", {"text": "/hive:status"}).status_code == 200
    assert client.post("/console/", {"text": "/hive:status"}).status_code == 429

    client.force_login(attackers["admin"])
    assert client.post("/console/", {"text": "/hive:status"}).status_code == 200


# --- 8. An agent's concurrency is bounded everywhere it is set ----------------------


BOUND = "must be at most 3 (HIVE_AGENT_MAX_CONCURRENCY, steps one agent runs at once)"


@pytest.fixture
def bounded(settings):
    settings.HIVE_AGENT_MAX_CONCURRENCY = 3
    return Agent.objects.create(name="worker", role="worker", skills=["noop"], concurrency=1)


def test_the_api_refuses_to_scale_an_agent_past_the_bound(attackers, bounded):
    api = api_client(attackers["admin"])

    for asked in (4, 256):
        answer = api.post("/api/v1/agents/worker/scale/", {"concurrency": asked}, format="json")
        assert answer.status_code == 400
        assert answer.json()["error"]["fields"] == {"concurrency": [BOUND]}
    assert Agent.objects.get(name="worker").concurrency == 1


@pytest.mark.django_db(transaction=True)  # the web process reads committed rows
def test_the_default_bound_refuses_the_reviews_256(attackers, live_server_url):
    import httpx

    Agent.objects.create(name="hog", role="hog", skills=["noop"], concurrency=1)

    answer = httpx.post(
        f"{live_server_url}/api/v1/agents/hog/scale/",
        headers=auth(attackers["admin"]),
        json={"concurrency": 256},
    )

    assert answer.status_code == 400
    (problem,) = answer.json()["error"]["fields"]["concurrency"]
    assert problem.startswith("must be at most ") and "HIVE_AGENT_MAX_CONCURRENCY" in problem


def test_the_schema_states_the_bound(attackers, bounded):
    schema = api_client(attackers["admin"]).get("/api/schema/?format=json").json()

    scale = schema["components"]["schemas"]["ScaleRequest"]["properties"]["concurrency"]
    assert (scale["minimum"], scale["maximum"]) == (1, 3)


def test_hive_agent_refuses_a_concurrency_past_the_bound():
    started = subprocess.run(
        [sys.executable, "manage.py", "hive", "agent", "--name=hog", "--concurrency=5"],
        env=child_env(HIVE_AGENT_MAX_CONCURRENCY="4"),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert started.returncode == 1
    assert started.stderr.strip().endswith(
        "--concurrency: 5 must be at most 4 (HIVE_AGENT_MAX_CONCURRENCY, steps one agent "
        "runs at once)"
    )


def test_the_agents_file_refuses_a_concurrency_past_the_bound(bounded, tmp_path):
    from agents.pool import agent_pool_load
    from hive_project.yamlfile import DefinitionError

    path = tmp_path / "hive.agents.yaml"
    path.write_text("agents:\n  - name: a\n  - name: b\n    concurrency: 255\n")

    with pytest.raises(DefinitionError) as caught:
        agent_pool_load(path)

    assert str(caught.value) == f"{path}:3: agents[1].concurrency: 255 {BOUND}"


def test_the_admin_refuses_a_concurrency_past_the_bound(attackers, bounded, client):
    client.force_login(attackers["admin"])
    form = {"name": "worker", "role": "worker", "skills": '["noop"]', "concurrency": "255"}

    page = client.post(f"/admin/agents/agent/{bounded.pk}/change/", form)

    assert page.status_code == 200  # the form again, with the error
    assert f"255 {BOUND}" in page.content.decode()
    assert Agent.objects.get(name="worker").concurrency == 1


def test_the_scale_service_refuses_past_the_bound(bounded):
    from agents.services import AgentControlError, agent_scale

    with pytest.raises(AgentControlError, match=r"^concurrency: 9 must be at most 3 "):
        agent_scale(agent=bounded, concurrency=9)
