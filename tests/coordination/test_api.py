"""The workflows, runs and steps API: every endpoint's happy path, 401, 403, 404 and
400 with the field named, and list endpoints whose query count does not grow with the
page. In-process requests (DRF's APIClient) on the test database; the run through a
real server and real agents is at the end."""

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from agents.models import Agent
from commands.models import Invocation
from coordination.models import Run, StepRun
from coordination.services import run_start, step_claim, step_fail
from tests.runs import wait_run

pytestmark = pytest.mark.django_db

User = get_user_model()


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def grant(user, *codenames: str):
    for codename in codenames:
        app, name = codename.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app, codename=name)
        )
    return User.objects.get(pk=user.pk)  # a fresh user: permissions are cached


@pytest.fixture
def ada():
    return User.objects.create_user("ada", password="pw")


@pytest.fixture
def boss():
    return User.objects.create_user("boss", password="pw", is_staff=True)


@pytest.fixture
def workflow(make_workflow):
    return make_workflow(
        [{"id": "build", "skill": "noop"}, {"id": "ship", "skill": "noop", "needs": "build"}],
        params={"type": "object", "properties": {"v": {"type": "string"}}},
        name="release",
    )


def error(response) -> dict:
    return response.json()["error"]


# --- authentication --------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/api/v1/workflows/"),
        ("get", "/api/v1/workflows/release/"),
        ("post", "/api/v1/workflows/release/start/"),
        ("get", "/api/v1/runs/"),
        ("get", "/api/v1/runs/1/"),
        ("post", "/api/v1/runs/1/cancel/"),
        ("post", "/api/v1/runs/1/pause/"),
        ("post", "/api/v1/runs/1/resume/"),
        ("post", "/api/v1/runs/1/steps/build/approve/"),
        ("get", "/api/v1/events/"),
    ],
)
def test_anonymous_requests_get_401(method, path):
    response = getattr(APIClient(), method)(path)

    assert response.status_code == 401
    assert error(response)["code"] == "not_authenticated"


# --- workflows -------------------------------------------------------------------


def test_workflows_list_the_newest_version_of_each(ada, workflow, make_workflow):
    make_workflow([{"id": "only", "skill": "noop"}], name="release")  # version 2

    response = client_for(ada).get("/api/v1/workflows/")

    assert response.status_code == 200
    assert [(w["name"], w["version"]) for w in response.json()["results"]] == [("release", 2)]


def test_a_workflow_detail_has_its_dag_and_any_version(ada, workflow, make_workflow):
    make_workflow([{"id": "only", "skill": "noop"}], name="release")
    client = client_for(ada)

    newest = client.get("/api/v1/workflows/release/").json()
    first = client.get("/api/v1/workflows/release/?version=1").json()
    versions = client.get("/api/v1/workflows/release/versions/").json()

    assert [s["id"] for s in newest["spec"]["steps"]] == ["only"]
    assert [(s["id"], s["needs"]) for s in first["spec"]["steps"]] == [
        ("build", []),
        ("ship", ["build"]),
    ]
    assert [v["version"] for v in versions] == [2, 1]
    assert client.get("/api/v1/workflows/nope/").status_code == 404
    assert client.get("/api/v1/workflows/release/?version=9").status_code == 404


def test_starting_a_workflow_needs_add_run(ada, workflow):
    response = client_for(ada).post("/api/v1/workflows/release/start/", {}, format="json")

    assert response.status_code == 403
    assert Run.objects.count() == 0


def test_starting_a_workflow_with_bad_params_names_the_field(ada, workflow):
    ada = grant(ada, "coordination.add_run")

    response = client_for(ada).post(
        "/api/v1/workflows/release/start/", {"params": {"v": 14}}, format="json"
    )

    assert response.status_code == 400
    assert error(response)["fields"] == {"params": ["params.v: 14 is not of type 'string'"]}
    assert Run.objects.count() == 0


def test_starting_a_workflow_creates_a_run(ada, workflow):
    ada = grant(ada, "coordination.add_run")

    response = client_for(ada).post(
        "/api/v1/workflows/release/start/", {"params": {"v": "1.4"}}, format="json"
    )

    assert response.status_code == 201
    run = Run.objects.get()
    assert response.json()["id"] == run.pk
    assert (run.created_by, run.params, run.workflow) == (ada, {"v": "1.4"}, workflow)


def test_a_start_may_set_the_runs_priority_and_deadline(ada, workflow):
    ada = grant(ada, "coordination.add_run")

    response = client_for(ada).post(
        "/api/v1/workflows/release/start/",
        {"params": {"v": "1"}, "priority": 7, "deadline": 600},
        format="json",
    )

    assert response.status_code == 201, response.json()
    run = Run.objects.get()
    assert run.priority == 7
    assert 599 < (run.deadline - run.created_at).total_seconds() <= 600
    body = response.json()
    assert (body["priority"], body["concurrency_key"], body["waiting_reason"]) == (7, "", "")
    assert body["deadline"] == run.deadline.isoformat().replace("+00:00", "Z")
    # Its steps take the run's priority.
    assert set(run.steps.values_list("priority", flat=True)) == {7}


@pytest.mark.parametrize(
    "given, field, message",
    [
        ({"priority": 12}, "priority", "Ensure this value is less than or equal to 9."),
        ({"priority": -1}, "priority", "Ensure this value is greater than or equal to 0."),
        ({"priority": "high"}, "priority", "A valid integer is required."),
        ({"deadline": 0}, "deadline", "Must be more than 0 seconds."),
        ({"deadline": -5}, "deadline", "Must be more than 0 seconds."),
        ({"deadline": True}, "deadline", "A valid number is required."),
        ({"deadline": 10**9}, "deadline", "Ensure this value is less than or equal to 604800."),
    ],
)
def test_a_bad_priority_or_deadline_is_a_400_naming_it_and_starts_nothing(
    ada, workflow, given, field, message
):
    ada = grant(ada, "coordination.add_run")

    response = client_for(ada).post("/api/v1/workflows/release/start/", given, format="json")

    assert response.status_code == 400
    assert error(response)["fields"] == {field: [message]}
    assert Run.objects.count() == 0


# --- runs ------------------------------------------------------------------------


def test_users_see_their_own_runs_and_staff_see_all(ada, boss, workflow):
    mine = run_start(workflow=workflow, params={}, user=ada)
    run_start(workflow=workflow, params={}, user=boss)

    assert [r["id"] for r in client_for(ada).get("/api/v1/runs/").json()["results"]] == [mine.pk]
    assert len(client_for(boss).get("/api/v1/runs/").json()["results"]) == 2
    # Someone else's run is not there at all.
    other = Run.objects.exclude(pk=mine.pk).get()
    assert client_for(ada).get(f"/api/v1/runs/{other.pk}/").status_code == 404


def test_runs_filter_by_state_workflow_user_and_time(boss, ada, workflow, make_workflow):
    other = make_workflow([{"id": "x", "skill": "noop"}], name="other")
    first = run_start(workflow=workflow, params={}, user=ada)
    second = run_start(workflow=other, params={}, user=boss)
    Run.objects.filter(pk=first.pk).update(state="failed")
    client = client_for(boss)

    def ids(query: str) -> list[int]:
        response = client.get(f"/api/v1/runs/?{query}")
        assert response.status_code == 200, response.json()
        return [r["id"] for r in response.json()["results"]]

    assert ids("state=failed") == [first.pk]
    assert ids("workflow=other") == [second.pk]
    assert ids("user=ada") == [first.pk]
    assert ids(f"since={second.created_at.isoformat().replace('+00:00', 'Z')}") == [second.pk]
    assert ids("until=2000-01-01T00:00:00Z") == []
    Invocation.objects.create(
        user=ada, source="api", text="/ship", outcome="started", command_name="ship", run=first
    )
    assert ids("command=/ship") == ids("command=ship") == [first.pk]


def test_a_bad_runs_filter_is_a_400_naming_it(boss):
    response = client_for(boss).get("/api/v1/runs/?state=exploded")

    assert response.status_code == 400
    assert error(response)["message"] == 'state: "exploded" is not a valid choice.'


def test_the_runs_list_pages_by_cursor(boss, workflow):
    runs = [run_start(workflow=workflow, params={}, user=boss) for _ in range(3)]
    client = client_for(boss)

    first = client.get("/api/v1/runs/?limit=2").json()
    second = client.get(first["next"]).json()

    assert [r["id"] for r in first["results"]] == [runs[2].pk, runs[1].pk]
    assert [r["id"] for r in second["results"]] == [runs[0].pk]


def test_run_detail_has_every_step_with_its_tries(boss, workflow):
    run = run_start(workflow=workflow, params={"v": "1"}, user=boss)
    build = StepRun.objects.get(run=run, key="build")
    # A try that failed and is waiting for its retry, as an agent would leave it.
    StepRun.objects.filter(pk=build.pk).update(state="queued", attempt=1)
    step = step_claim(step_run_id=build.pk, attempt=1, agent="a1")
    step_fail(step=step, error="boom", traceback="Traceback ...")

    response = client_for(boss).get(f"/api/v1/runs/{run.pk}/")

    assert response.status_code == 200
    body = response.json()
    assert [s["id"] for s in body["dag"]] == ["build", "ship"]
    steps = {s["key"]: s for s in body["steps"]}
    assert steps["build"]["state"] == "failed"
    assert steps["build"]["error"] == "boom"
    assert steps["build"]["traceback"] == "Traceback ..."
    assert (steps["build"]["agent"], steps["build"]["tries"]) == ("a1", 1)
    assert steps["ship"]["state"] == "cancelled"
    assert body["state"] == "failed"


def test_run_detail_404s_for_unknown_and_malformed_ids(boss):
    client = client_for(boss)

    assert error(client.get("/api/v1/runs/999/"))["code"] == "not_found"
    assert client.get("/api/v1/runs/abc/").status_code == 404


def test_cancel_needs_change_run_then_cancels_and_409s_the_second_time(ada, workflow):
    run = run_start(workflow=workflow, params={}, user=ada)
    client = client_for(ada)

    assert client.post(f"/api/v1/runs/{run.pk}/cancel/").status_code == 403

    client = client_for(grant(ada, "coordination.change_run"))
    response = client.post(f"/api/v1/runs/{run.pk}/cancel/")
    again = client.post(f"/api/v1/runs/{run.pk}/cancel/")

    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert again.status_code == 409
    assert error(again) == {
        "code": "conflict",
        "message": f"run {run.pk} is already cancelled",
        "fields": {},
    }


def test_pause_and_resume_need_change_run(ada, workflow):
    run = run_start(workflow=workflow, params={}, user=ada)
    client = client_for(ada)

    for action in ("pause", "resume"):
        response = client.post(f"/api/v1/runs/{run.pk}/{action}/")
        assert response.status_code == 403
        assert error(response)["code"] == "permission_denied"
    assert Run.objects.get(pk=run.pk).state == run.state != "paused"


def test_pause_holds_the_run_and_resume_lets_it_go_on(harness, workflow):
    harness.agent("a1")
    ada = grant(User.objects.create_user("ada", password="pw"), "coordination.change_run")
    run = run_start(workflow=workflow, params={}, user=ada)
    client = client_for(ada)

    paused = client.post(f"/api/v1/runs/{run.pk}/pause/")
    again = client.post(f"/api/v1/runs/{run.pk}/pause/")
    harness.drain()  # the message sent before the pause reaches the agent: no claim

    assert paused.status_code == 200
    assert (paused.json()["state"], paused.json()["waiting_reason"]) == ("paused", "paused by ada")
    build = paused.json()["steps"][0]
    assert (build["state"], build["waiting_reason"]) == ("pending", "paused")
    assert again.status_code == 409
    assert error(again) == {
        "code": "conflict",
        "message": f"run {run.pk} is already paused",
        "fields": {},
    }
    assert StepRun.objects.get(run=run, key="build").state == "pending"

    resumed = client.post(f"/api/v1/runs/{run.pk}/resume/")
    not_paused = client.post(f"/api/v1/runs/{run.pk}/resume/")

    assert resumed.status_code == 200
    assert (resumed.json()["state"], resumed.json()["waiting_reason"]) == ("running", "")
    assert resumed.json()["steps"][0]["state"] == "queued"
    assert not_paused.status_code == 409
    assert error(not_paused)["message"] == f"run {run.pk} is running, not paused"
    harness.drain()
    assert Run.objects.get(pk=run.pk).state == "succeeded"


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_pausing_or_resuming_a_finished_run_is_a_409_naming_its_state(ada, workflow, action):
    run = run_start(workflow=workflow, params={}, user=ada)
    client = client_for(grant(ada, "coordination.change_run"))
    client.post(f"/api/v1/runs/{run.pk}/cancel/")

    response = client.post(f"/api/v1/runs/{run.pk}/{action}/")

    assert response.status_code == 409
    assert error(response)["message"] == f"run {run.pk} is already cancelled: cannot {action} it"
    assert Run.objects.get(pk=run.pk).state == "cancelled"


def test_pause_and_resume_404_on_a_run_the_user_may_not_see(ada, boss, workflow):
    theirs = run_start(workflow=workflow, params={}, user=boss)
    client = client_for(grant(ada, "coordination.change_run"))

    assert client.post(f"/api/v1/runs/{theirs.pk}/pause/").status_code == 404
    assert Run.objects.get(pk=theirs.pk).state == theirs.state != "paused"


def test_steps_show_their_priority_and_flow_keys(boss, make_workflow):
    flowing = make_workflow(
        [
            {"id": "deploy", "skill": "noop", "priority": 8,
             "concurrency": {"key": "deploy:{{ params.env }}", "limit": 1},
             "rate": {"limit": 5, "per": 60}},
        ],
        params={"type": "object", "properties": {"env": {"type": "string"}}},
    )  # fmt: skip
    run = run_start(workflow=flowing, params={"env": "prod"}, user=boss)

    (step,) = client_for(boss).get(f"/api/v1/runs/{run.pk}/").json()["steps"]

    assert (step["priority"], step["concurrency_key"], step["rate_key"]) == (
        8,
        "deploy:prod",
        "skill:noop",
    )


def test_rerun_starts_a_new_run_with_the_same_params(ada, workflow):
    run = run_start(workflow=workflow, params={"v": "2"}, user=ada)
    client = client_for(grant(ada, "coordination.add_run"))

    response = client.post(f"/api/v1/runs/{run.pk}/rerun/")

    assert response.status_code == 201
    new = Run.objects.get(pk=response.json()["id"])
    assert (new.rerun_of, new.params, new.created_by) == (run, {"v": "2"}, ada)


def test_retry_needs_change_steprun_and_a_failed_step(ada, workflow):
    run = run_start(workflow=workflow, params={}, user=ada)
    url = f"/api/v1/runs/{run.pk}/steps/build/retry/"

    assert client_for(ada).post(url).status_code == 403

    client = client_for(grant(ada, "coordination.change_steprun"))
    response = client.post(url)
    assert response.status_code == 409
    assert error(response)["message"] == (
        "step 'build' is pending; only a failed step can be retried"
    )
    assert client.post(f"/api/v1/runs/{run.pk}/steps/nope/retry/").status_code == 404


def test_approve_and_reject_need_the_approve_permission(ada, make_workflow):
    gate = make_workflow([{"id": "gate", "skill": "noop", "approval": True}])
    run = run_start(workflow=gate, params={}, user=ada)
    url = f"/api/v1/runs/{run.pk}/steps/gate"

    assert client_for(ada).post(f"{url}/approve/").status_code == 403
    assert client_for(ada).post(f"{url}/reject/").status_code == 403

    client = client_for(grant(ada, "coordination.approve_steprun"))
    too_long = client.post(f"{url}/reject/", {"reason": "x" * 501}, format="json")
    response = client.post(f"{url}/reject/", {"reason": "not today"}, format="json")

    assert too_long.status_code == 400
    assert list(error(too_long)["fields"]) == ["reason"]
    assert response.status_code == 200
    (step,) = response.json()["steps"]
    assert step["error"] == "rejected by ada: not today"
    assert response.json()["state"] == "failed"
    assert client.post(f"{url}/approve/").status_code == 409


def test_approving_a_waiting_step_queues_it(boss, make_workflow):
    gate = make_workflow([{"id": "gate", "skill": "noop", "approval": True}])
    run = run_start(workflow=gate, params={}, user=boss)
    boss.is_superuser = True
    boss.save()

    response = client_for(boss).post(f"/api/v1/runs/{run.pk}/steps/gate/approve/")

    assert response.status_code == 200
    (step,) = response.json()["steps"]
    assert step["state"] == "pending"  # no agent offers noop here: it waits for one
    assert step["waiting_reason"].startswith("waiting for an agent")
    assert step["history"][0]["approved_by"] == "boss"


# --- query counts ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/runs/",
        "/api/v1/workflows/",
        "/api/v1/events/",
        "/api/v1/runs/{run}/",
        "/api/v1/agents/",
    ],
)
def test_list_endpoints_run_the_same_queries_for_1_and_50_items(
    path,
    boss,
    make_workflow,
    redis_url,  # the agents list reads live heartbeats from Redis
):
    def queries() -> int:
        run = Run.objects.order_by("-id").first()
        with CaptureQueriesContext(connection) as captured:
            response = client_for(boss).get(path.format(run=run.pk))
        assert response.status_code == 200
        return len(captured)

    make_workflow([{"id": "s0", "skill": "noop"}])
    run_start(workflow=make_workflow([{"id": "s0", "skill": "noop"}]), params={}, user=boss)
    Agent.objects.create(name="a0", role="r", skills=["noop"], status="offline")
    one = queries()
    steps = [{"id": f"s{i}", "skill": "noop"} for i in range(50)]
    for i in range(50):
        run_start(workflow=make_workflow(steps), params={}, user=boss)
        Agent.objects.create(name=f"a{i + 1}", role="r", skills=["noop"], status="offline")

    assert queries() == one


# --- through the real server, with a real agent -----------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_run_started_over_http_succeeds_on_a_real_agent(live_server_url, start_agent, workflow):
    start_agent("api-runner", skills="noop")
    user = grant(User.objects.create_user("op", password="pw"), "coordination.add_run")
    headers = {"Authorization": f"Token {Token.objects.create(user=user).key}"}

    started = httpx.post(
        f"{live_server_url}/api/v1/workflows/release/start/",
        json={"params": {"v": "9"}},
        headers=headers,
    )
    assert started.status_code == 201, started.text
    wait_run(Run.objects.get(pk=started.json()["id"]))
    detail = httpx.get(f"{live_server_url}/api/v1/runs/{started.json()['id']}/", headers=headers)

    assert detail.json()["state"] == "succeeded"
    assert [(s["key"], s["state"], s["agent"]) for s in detail.json()["steps"]] == [
        ("build", "succeeded", "api-runner"),
        ("ship", "succeeded", "api-runner"),
    ]
