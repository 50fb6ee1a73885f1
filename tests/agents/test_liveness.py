"""Agent lifecycle on real processes: heartbeats, load, offline detection, control."""

import signal

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from rest_framework.authtoken.models import Token

from agents.liveness import agents_live, live_key
from agents.models import Agent
from agents.routing import agent_queue
from agents.services import agent_drain, agent_resume, agent_scale
from agents.tasks import skill_run_task
from events.models import Event
from hive_project.celery import app
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def live(name: str) -> dict:
    return agents_live([name]).get(name, {})


def test_heartbeat_is_a_redis_key_with_a_ttl(start_agent, redis_client, settings):
    process = start_agent("beating")

    wait_for(lambda: live("beating").get("pid") == process.pid, timeout=10, what="a heartbeat")
    ttl = redis_client.ttl(live_key("beating"))
    assert 0 < ttl <= settings.HIVE_AGENT_TIMEOUT
    assert live("beating")["status"] == "idle"
    assert Event.objects.filter(kind="agent.online", subject="agent:beating").exists()


def test_an_agent_running_a_step_is_busy_with_its_load(start_agent):
    start_agent("worker", skills="sleep", concurrency=2)

    result = skill_run_task.apply_async(("sleep", {"seconds": 3}), queue=agent_queue("worker"))

    wait_for(lambda: live("worker").get("status") == "busy", timeout=10, what="busy")
    assert (live("worker")["running"], live("worker")["load"]) == (1, 0.5)
    wait_for(
        lambda: Agent.objects.get(name="worker").status == "busy", timeout=5, what="busy in the row"
    )
    result.get(timeout=30)
    wait_for(lambda: live("worker").get("status") == "idle", timeout=10, what="idle again")


def test_a_killed_agent_goes_offline_within_the_timeout_and_an_event_says_so(
    start_agent, processes, settings
):
    processes.start("coordinator", name="coordinator")
    process = start_agent("mortal")

    process.signal(signal.SIGKILL)

    wait_for(
        lambda: Agent.objects.get(name="mortal").status == "offline",
        timeout=settings.HIVE_AGENT_TIMEOUT + 5,
        what="the agent to be marked offline",
    )
    event = Event.objects.filter(kind="agent.offline", subject="agent:mortal").get()
    assert event.data == {"reason": f"no heartbeat for {settings.HIVE_AGENT_TIMEOUT} s"}


def test_a_draining_agent_finishes_its_step_and_takes_no_new_one(start_agent):
    start_agent("drainer", skills="sleep")
    running = skill_run_task.apply_async(("sleep", {"seconds": 2}), queue=agent_queue("drainer"))
    wait_for(lambda: live("drainer").get("running") == 1, timeout=10, what="the step to start")

    agent_drain(agent=Agent.objects.get(name="drainer"))
    waiting = skill_run_task.apply_async(("sleep", {"seconds": 0}), queue=agent_queue("drainer"))

    assert running.get(timeout=30)["output"] == {"slept": 2}
    with pytest.raises(Exception, match="timed out"):
        waiting.get(timeout=3)
    assert Agent.objects.get(name="drainer").status == "draining"
    assert live("drainer")["status"] == "draining"

    agent_resume(agent=Agent.objects.get(name="drainer"))
    assert waiting.get(timeout=30)["output"] == {"slept": 0}


def test_scaling_grows_the_agents_pool(start_agent):
    process = start_agent("elastic", skills="sleep", concurrency=1)
    agent = Agent.objects.get(name="elastic")
    # Registered is not yet listening for control commands: wait until it answers one
    # (on a loaded machine the first one after start-up can miss the 3 s reply window).
    wait_for(lambda: app.control.ping(destination=[agent.node], timeout=1), timeout=30,
             what="the agent to answer control commands")  # fmt: skip

    agent_scale(agent=agent, concurrency=3)

    wait_for(lambda: live("elastic").get("concurrency") == 3, timeout=10, what="the pool to grow")
    assert Agent.objects.get(name="elastic").concurrency == 3
    # The pool starts the new processes on its next maintenance pass.
    wait_for(
        lambda: len(process.group_members_now()) >= 4,  # the worker and three pool processes
        timeout=20,
        what="three pool processes",
    )


@pytest.fixture
def operator():
    user = get_user_model().objects.create_user("op")
    user.user_permissions.add(Permission.objects.get(codename="change_agent"))
    return {"Authorization": f"Token {Token.objects.create(user=user).key}"}


@pytest.fixture
def viewer():
    user = get_user_model().objects.create_user("viewer")
    return {"Authorization": f"Token {Token.objects.create(user=user).key}"}


def test_control_over_the_api_needs_the_permission(live_server_url, start_agent, viewer):
    start_agent("guarded")

    response = httpx.post(f"{live_server_url}/api/v1/agents/guarded/drain/", headers=viewer)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert Agent.objects.get(name="guarded").status == "idle"


def test_drain_resume_and_shutdown_over_the_api(live_server_url, start_agent, operator):
    process = start_agent("remote")
    url = f"{live_server_url}/api/v1/agents/remote"

    drained = httpx.post(f"{url}/drain/", headers=operator)
    assert (drained.status_code, drained.json()["status"]) == (200, "draining")
    resumed = httpx.post(f"{url}/resume/", headers=operator)
    assert (resumed.status_code, resumed.json()["status"]) == (200, "idle")

    assert httpx.post(f"{url}/shutdown/", headers=operator).status_code == 200
    process.proc.wait(timeout=30)
    assert Agent.objects.get(name="remote").status == "offline"


def test_control_errors_are_4xx_naming_the_problem(live_server_url, start_agent, operator):
    process = start_agent("fragile")
    url = f"{live_server_url}/api/v1/agents"

    bad = httpx.post(f"{url}/fragile/scale/", headers=operator, json={"concurrency": 0})
    assert bad.status_code == 400
    assert bad.json()["error"]["fields"] == {
        "concurrency": ["Ensure this value is greater than or equal to 1."]
    }
    assert httpx.post(f"{url}/ghost/drain/", headers=operator).status_code == 404

    process.stop()
    gone = httpx.post(f"{url}/fragile/drain/", headers=operator)
    assert gone.status_code == 409
    assert gone.json()["error"] == {
        "code": "agent_unavailable",
        "message": "agent 'fragile' is offline",
        "fields": {},
    }


def test_the_skills_endpoint_lists_skills_and_who_offers_them(live_server_url, start_agent, viewer):
    start_agent("lister", skills="noop,sleep")

    skills = {
        s["name"]: s for s in httpx.get(f"{live_server_url}/api/v1/skills/", headers=viewer).json()
    }

    assert {"noop", "sleep", "http.request", "shell.run", "llm.chat"} <= set(skills)
    assert skills["sleep"]["agents"] == ["lister"] and skills["llm.chat"]["agents"] == []
    assert skills["sleep"]["params"]["required"] == ["seconds"]
