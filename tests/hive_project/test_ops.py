"""Operators' endpoints: /healthz, /readyz, /metrics, and Flower, on real processes."""

import httpx
import pytest
from django.contrib.auth import get_user_model
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token

from coordination.services import run_start
from tests.processes import free_port, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-test-token"


def scrape(client) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }


@pytest.fixture
def metrics_token(settings):
    settings.HIVE_METRICS_TOKEN = TOKEN


def test_healthz_answers_anyone_with_ok(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_says_ok_when_database_and_redis_answer(client, redis_url):
    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["checks"]) == ("ok", {"database": "ok", "redis": "ok"})
    # Which coordinator leads, if any (tests/coordination/test_leadership.py has one).
    assert set(body["coordinators"]) == {"leader", "standby"}


def test_metrics_refuses_anonymous_and_wrong_token_with_401_and_non_staff_with_403(
    client, metrics_token
):
    anonymous = client.get("/metrics")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    user = get_user_model().objects.create_user("viewer", password="pw-viewer-1")
    client.force_login(user)
    non_staff = client.get("/metrics")

    assert (anonymous.status_code, wrong.status_code, non_staff.status_code) == (401, 401, 403)
    assert anonymous["WWW-Authenticate"] == 'Bearer realm="hive-metrics"'
    for response in (anonymous, wrong, non_staff):
        assert b"hive_" not in response.content


def test_metrics_answer_a_staff_user_without_token(client, redis_url):
    staff = get_user_model().objects.create_user("ops", password="pw-ops-1", is_staff=True)
    client.force_login(staff)

    response = client.get("/metrics")

    assert response.status_code == 200
    assert b"hive_agents{" in response.content


def test_metrics_take_a_staff_users_api_token_and_refuse_anyone_elses(client, redis_url):
    User = get_user_model()
    staff = Token.objects.create(user=User.objects.create_user("ops", is_staff=True))
    other = Token.objects.create(user=User.objects.create_user("dev"))

    answers = [
        client.get("/metrics", HTTP_AUTHORIZATION=f"Token {key}")
        for key in (staff.key, other.key, "nope")
    ]

    assert [a.status_code for a in answers] == [200, 403, 401]
    assert b"hive_agents{" in answers[0].content


def test_metrics_series_exist_and_move_when_a_run_happens(
    client, metrics_token, harness, make_workflow
):
    # The series are read from the database and Redis: a run on the engine's test
    # harness (tests/coordination/harness.py) moves them as one on agent processes.
    harness.agent("metered", skills="noop,sleep", concurrency=2)
    workflow = make_workflow(
        [
            {"id": "a", "skill": "sleep", "with": {"seconds": 0.3}},
            {"id": "b", "skill": "noop", "needs": "a"},
        ]
    )
    before = scrape(client)

    run = harness.settle(run_start(workflow=workflow, params={}))
    assert run.state == "succeeded"
    after = scrape(client)

    def moved(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert after[("hive_agents", (("status", "idle"),))] >= 1
    assert after[("hive_redis_up", ())] == 1
    assert ("hive_queue_depth", (("queue", "skill.noop"),)) in after
    assert ("hive_queue_depth", (("queue", "agent.metered"),)) in after
    assert ("hive_websocket_clients", ()) in after
    assert moved("hive_runs_started_total") == 1
    assert moved("hive_runs_finished_total", state="succeeded") == 1
    assert moved("hive_steps", state="succeeded") == 2
    assert moved("hive_step_duration_seconds_count", skill="sleep") == 1
    assert moved("hive_step_duration_seconds_count", skill="noop") == 1
    # The 0.3 s sleep lands between the 0.25 and 0.5 s bounds.
    assert moved("hive_step_duration_seconds_bucket", skill="sleep", le="0.25") == 0
    assert moved("hive_step_duration_seconds_bucket", skill="sleep", le="0.5") == 1
    assert moved("hive_step_duration_seconds_sum", skill="sleep") >= 0.3
    assert moved("hive_step_queue_wait_seconds_count", skill="noop") == 1
    assert moved("hive_step_queue_wait_seconds_bucket", skill="noop", le="+Inf") == 1
    for reason in ("lost", "resent", "due"):
        assert ("hive_reaper_redispatched_total", (("reason", reason),)) in after
    for name in ("sent", "handled", "dead"):
        assert (f"hive_messages_{name}_total", ()) in after


def test_metrics_count_messages_and_reaper_redispatches(client, metrics_token, redis_url):
    from agents import mailbox
    from agents.models import Message
    from hive_core.redis_client import redis_client
    from ops.metrics import REAPER_COUNTS_KEY

    before = scrape(client)
    sent = mailbox.send(to="nobody", kind="test.record", sender="ops")
    Message.objects.filter(pk=sent.pk).update(state="dead")
    redis_client().hincrby(REAPER_COUNTS_KEY, "lost", 2)
    after = scrape(client)

    assert after[("hive_messages_sent_total", ())] - before[("hive_messages_sent_total", ())] == 1
    assert after[("hive_messages_dead_total", ())] - before[("hive_messages_dead_total", ())] == 1
    lost = ("hive_reaper_redispatched_total", (("reason", "lost"),))
    assert after[lost] - before[lost] == 2


def test_readyz_fails_while_redis_is_down_and_recovers_when_it_is_back(private_redis, processes):
    port = free_port()
    web = processes.start("web", f"--port={port}", name="web", REDIS_URL=private_redis.url)
    url = f"http://127.0.0.1:{port}"

    def ready():
        assert web.alive(), web.log()
        try:
            return httpx.get(f"{url}/readyz", timeout=5)
        except httpx.TransportError:
            return None

    assert wait_for(ready, timeout=60, what="the web server").status_code == 200

    private_redis.stop()
    down = ready()
    assert down.status_code == 503
    assert down.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "redis": "unreachable"},
        "coordinators": None,  # they are recorded in Redis
    }
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200  # the process is fine

    private_redis.start()
    back = wait_for(lambda: ready().status_code == 200 and ready(), timeout=10, what="ready")
    assert back.json()["checks"] == {"database": "ok", "redis": "ok"}


def test_flower_needs_credentials_and_lists_every_agent_with_its_queues(start_agents, processes):
    start_agents(
        {"name": "scout", "role": "explorer", "skills": "noop"},
        {"name": "smith", "role": "builder", "skills": "noop,sleep"},
    )
    port = free_port()
    flower = processes.start(
        "flower",
        f"--port={port}",
        name="flower",
        HIVE_FLOWER_USER="watcher",
        HIVE_FLOWER_PASSWORD="flower-test-pw",
    )
    url = f"http://127.0.0.1:{port}"

    def status(path: str, **kwargs) -> int | None:
        assert flower.alive(), flower.log()
        try:
            return httpx.get(f"{url}{path}", timeout=5, **kwargs).status_code
        except httpx.TransportError:
            return None

    wait_for(lambda: status("/api/workers") == 401, timeout=60, what="Flower to answer")
    assert status("/workers") == 401
    assert status("/api/workers", auth=("watcher", "wrong")) == 401

    def workers() -> dict:
        try:
            response = httpx.get(
                f"{url}/api/workers?refresh=1", auth=("watcher", "flower-test-pw"), timeout=10
            )
        except httpx.TransportError:
            return {}
        found = {name.split("@")[0]: w for name, w in response.json().items()}
        return found if {"scout", "smith"} <= set(found) else {}

    found = wait_for(workers, timeout=60, what="Flower to list both agents", interval=1)
    queues = {name: {q["name"] for q in w["active_queues"]} for name, w in found.items()}
    assert queues["scout"] == {"agent.scout", "role.explorer", "skill.noop"}
    assert queues["smith"] == {"agent.smith", "role.builder", "skill.noop", "skill.sleep"}
    assert status("/workers", auth=("watcher", "flower-test-pw")) == 200


def test_the_dashboard_links_to_flower(client, settings):
    settings.HIVE_FLOWER_URL = "https://flower.example.org/"
    user = get_user_model().objects.create_user("looker", password="pw-looker-1")
    client.force_login(user)

    page = client.get("/")

    assert b'<a href="https://flower.example.org/">Flower</a>' in page.content


def test_websocket_clients_come_from_the_dashboards_consumers(monkeypatch):
    from dashboard import consumers
    from ops.metrics import websocket_clients

    assert websocket_clients() == 0
    monkeypatch.setattr(consumers, "_connected", 3)
    assert websocket_clients() == 3
