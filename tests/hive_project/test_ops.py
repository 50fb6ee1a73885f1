"""Operators' endpoints: /healthz, /readyz, /metrics, and Flower, on real processes."""

import uuid

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
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
    for reason in ("lost", "resent", "due", "expired", "lines"):
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


def test_metrics_count_steps_waiting_by_reason_and_the_slots_of_each_concurrency_key(
    client, metrics_token, start_agent, make_workflow, monkeypatch
):
    from coordination.models import Run, StepRun
    from coordination.services import run_pause, step_approve, workflow_save
    from coordination.spec import spec_validate

    start_agent("flow", skills="noop,sleep,test.flaky", concurrency=2)

    def step(run, key="a") -> StepRun:
        return StepRun.objects.get(run=run, key=key)

    def waits(run, key="a") -> str:
        return wait_for(lambda: step(run, key).waiting_reason, timeout=20, what=f"{key} to wait")

    # A rate of one start a minute: the second run's step waits for its slot.
    rated = make_workflow([{"id": "a", "skill": "noop",
                            "rate": {"key": "api:test", "limit": 1, "per": 60}}])  # fmt: skip
    first = run_start(workflow=rated, params={})
    wait_for(lambda: step(first).state == "succeeded", timeout=20, what="the first rated step")
    assert waits(run_start(workflow=rated, params={})) == "waiting for rate: api:test 1/60s"
    # A failed try waits a minute for its retry.
    flaky = make_workflow([{"id": "a", "skill": "test.flaky", "retries": 1, "backoff": 60,
                            "with": {"key": str(uuid.uuid4()), "failures": 1}}])  # fmt: skip
    retried = run_start(workflow=flaky, params={})
    wait_for(lambda: step(retried).next_attempt_at, timeout=20, what="the retry's backoff")
    # A paused run's step, approved meanwhile, waits for the resume.
    gated = make_workflow([{"id": "a", "skill": "noop", "approval": True}])
    paused = run_pause(run=run_start(workflow=gated, params={}))
    step_approve(step=step(paused))
    assert waits(paused) == "paused"
    # One waits for an approval, one for an agent with its skill (none has test.fail).
    run_start(workflow=gated, params={})
    homeless = run_start(workflow=make_workflow([{"id": "a", "skill": "test.fail"}]), params={})
    assert waits(homeless).startswith("waiting for an agent")
    # Steps of one slot per environment: prod's and dev's run (the agent's two slots),
    # qa's is queued (a slot held too), prod's other two wait in its line.
    deploy = make_workflow(
        [{"id": "a", "skill": "sleep", "with": {"seconds": 30},
          "concurrency": {"key": "deploy:{{ params.env }}", "limit": 1}}],
        params={"type": "object", "properties": {"env": {"type": "string"}}},
    )  # fmt: skip
    for env in ("prod", "dev", "qa", "prod", "prod"):
        last = run_start(workflow=deploy, params={"env": env})
    assert waits(last) == "waiting for capacity: deploy:prod 1/1"
    # Runs of a workflow one at a time: the second waits in its key's line.
    spec = {"concurrency": {"key": "nightly", "limit": 1},
            "steps": [{"id": "a", "skill": "noop", "approval": True}]}  # fmt: skip
    nightly, _ = workflow_save(name="nightly", spec=spec_validate(spec, source="test"))
    run_start(workflow=nightly, params={})
    assert Run.objects.get(pk=run_start(workflow=nightly, params={}).pk).state == "pending"
    wait_for(
        lambda: StepRun.objects.filter(skill="sleep", state="running").count() == 2,
        timeout=20,
        what="prod's and dev's steps to run",
    )
    monkeypatch.setattr("ops.metrics.KEYS_SHOWN", 2)

    after = scrape(client)

    expected = {"agent": 1, "capacity": 2, "rate": 1, "paused": 1, "approval": 2, "retry": 1}
    for reason, n in expected.items():
        assert after[("hive_steps_waiting", (("reason", reason),))] == n, reason

    def key_series(name: str, of: str) -> dict[str, float]:
        series = [(dict(labels), v) for (n, labels), v in after.items() if n == name]
        return {labels["key"]: v for labels, v in series if labels["of"] == of}

    # The busiest two step keys only (KEYS_SHOWN), ties by name; all three counted.
    assert key_series("hive_concurrency_in_use", "step") == {"deploy:prod": 1, "deploy:dev": 1}
    assert key_series("hive_concurrency_line", "step") == {"deploy:prod": 2, "deploy:dev": 0}
    assert after[("hive_concurrency_keys", (("of", "step"),))] == 3
    assert key_series("hive_concurrency_in_use", "run") == {"nightly": 1}
    assert key_series("hive_concurrency_line", "run") == {"nightly": 1}
    assert after[("hive_concurrency_keys", (("of", "run"),))] == 1


def test_queue_depth_counts_a_queues_messages_of_every_priority(
    client, metrics_token, redis_client
):
    from agents.models import Agent
    from coordination.dispatch import CeleryTransport, Outgoing, queue_keys

    # An agent's row (no process: nothing takes its queue's messages).
    Agent.objects.create(name="depth", role="depth", skills=["noop"], status="idle")
    queue = "agent.depth"
    message = {"step_run_id": 0, "attempt": 0, "queue": queue, "timeout": None}
    CeleryTransport().send(
        [Outgoing(**message, task_id=str(uuid.uuid4()), priority=p) for p in (0, 0, 5, 9)]
    )
    try:
        after = scrape(client)
    finally:
        redis_client.delete(*queue_keys(queue))

    # One Redis list per priority (coordination.dispatch): the base list holds one.
    assert after[("hive_queue_depth", (("queue", queue),))] == 4


def test_metrics_count_the_runs_the_reaper_expires_and_the_lines_it_moves(
    client, metrics_token, harness, make_workflow
):
    from coordination.models import StepRun
    from coordination.reaper import reap_pass

    harness.agent("reaped", skills="noop")
    gate = make_workflow([{"id": "a", "skill": "noop", "approval": True}])
    late = run_start(workflow=gate, params={}, deadline=0.05)
    one = make_workflow([{"id": "a", "skill": "noop",
                          "concurrency": {"key": "one", "limit": 1}}])  # fmt: skip
    holder, waiter = (run_start(workflow=one, params={}) for _ in range(2))
    # The holder's slot freed by a process that died before handing it on: only the
    # reaper's pass moves the line.
    StepRun.objects.filter(run=holder).update(state="succeeded")
    wait_for(lambda: late.deadline < timezone.now(), timeout=5, what="the deadline")
    before = scrape(client)

    reap_pass()
    after = scrape(client)

    def moved(reason):
        key = ("hive_reaper_redispatched_total", (("reason", reason),))
        return after[key] - before[key]

    assert (moved("expired"), moved("lines")) == (1, 1)
    assert StepRun.objects.get(run=waiter).state == "queued"


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
