"""Commands through the REST API on the real ASGI server, with real agents behind it:
a command starts its workflow, a refused one is a 400 or 403 in the API's error
shape, and every attempt is in the audit."""

import httpx
import pytest
from rest_framework.test import APIClient

from commands.models import Invocation
from commands.services import commands_load
from coordination.models import Run
from tests.runs import steps_of, wait_run

pytestmark = pytest.mark.django_db(transaction=True)

SQUARES = """
---
description: Square some numbers
argument-hint: <numbers>
params:
  numbers: {type: array, items: {type: integer}, minItems: 1}
workflow:
  steps:
    - id: square
      skill: noop
      foreach: "{{ params.numbers }}"
      with: {n: "{{ item }}", square: "{{ item * item }}"}
    - id: total
      needs: square
      skill: noop
      with: {sum: "{{ steps.square.output | sum(attribute='square') }}", asked: "{{ prompt }}"}
---
Square $ARGUMENTS.
"""


@pytest.fixture
def api(live_server_url):
    def call(user, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Token {user.token}"}
        return httpx.request(method, f"{live_server_url}/api/v1/{path}", headers=headers,
                             timeout=30, **kwargs)  # fmt: skip

    return call


@pytest.fixture
def squares(definitions):
    definitions("math/squares.md", SQUARES)
    commands_load(paths=[definitions.root])


def test_a_command_starts_its_workflow_and_its_run_succeeds(api, users, squares, start_agent):
    start_agent("calc", skills="noop")

    response = api(users["ada"], "POST", "commands/execute", json={"text": "/math:squares 1,2,3"})

    assert response.status_code == 201, response.text
    body = response.json()
    invocation = body["invocation"]
    assert {k: invocation[k] for k in ("command", "user", "source", "text", "args", "outcome")} == {
        "command": "math:squares",
        "user": "ada",
        "source": "api",
        "text": "/math:squares 1,2,3",
        "args": {"numbers": [1, 2, 3]},
        "outcome": "started",
    }
    assert body["run"]["id"] == invocation["run"]["id"]
    run = wait_run(Run.objects.get(pk=body["run"]["id"]))
    assert run.state == "succeeded"
    assert steps_of(run)["total"].output == {"sum": 14, "asked": "Square 1,2,3."}
    assert run.created_by.username == "ada"

    audit = api(users["ada"], "GET", "commands/invocations/").json()["results"]
    assert [(i["id"], i["run"]["state"], i["run"]["outputs"]) for i in audit] == [
        (invocation["id"], "succeeded", {"total": {"sum": 14, "asked": "Square 1,2,3."}})
    ]


def test_invalid_text_is_a_400_pointing_at_the_token_and_is_audited(api, users, squares):
    response = api(users["ada"], "POST", "commands/execute", json={"text": "/math:squares 1,x"})

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "invalid",
            "message": "numbers.1: 'x' is not of type 'integer'",
            "fields": {
                "numbers": ["numbers.1: 'x' is not of type 'integer'"],
                "text": ["/math:squares 1,x\n              ^^^ numbers.1: 'x' is not of type "
                         "'integer'"],
            },
        }
    }  # fmt: skip
    unknown = api(users["ada"], "POST", "commands/execute", json={"text": "/math:sqares 2"})
    assert (
        unknown.json()["error"]["message"] == "unknown command /math:sqares (did you mean "
        "/math:squares?)"
    )
    audit = list(
        Invocation.objects.order_by("id").values_list("command_name", "outcome", "user__username")
    )
    assert audit == [("math:squares", "invalid", "ada"), ("math:sqares", "invalid", "ada")]
    assert not Run.objects.exists()


@pytest.mark.parametrize("number", ["9" * 5000, "-" + "9" * 4301])
def test_a_number_too_large_for_python_is_a_400_pointing_at_it(api, users, number):
    response = api(users["ada"], "POST", "commands/execute", json={"text": f"/hive:run {number}"})

    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"] == f"run: '{number[:299]}…"
    assert response.json()["error"]["fields"]["text"][0].split("\n")[1].startswith("          ^^^")


def test_a_user_without_the_permission_gets_403_and_an_audited_denial(api, users, squares):
    response = api(users["bob"], "POST", "commands/execute", json={"text": "/math:squares 4"})

    assert response.status_code == 403
    assert response.json()["error"] == {
        "code": "denied",
        "message": "permission denied: /math:squares needs commands.execute_command and bob "
        "does not have it",
        "fields": {"text": ["permission denied: /math:squares needs commands.execute_command "
                            "and bob does not have it"]},
    }  # fmt: skip
    denial = Invocation.objects.get()
    assert (denial.user.username, denial.outcome, denial.args, denial.run) == (
        "bob",
        "denied",
        {"numbers": [4]},
        None,
    )
    assert not Run.objects.exists()
    # Nobody anonymous gets as far as the audit.
    anonymous = httpx.post(response.url, json={"text": "/math:squares 4"})
    assert anonymous.status_code == 401 and Invocation.objects.count() == 1


def test_the_list_gives_forms_the_schema_and_hint(api, users, squares):
    listed = api(users["ada"], "GET", "commands/").json()["results"]
    detail = api(users["bob"], "GET", "commands/math:squares/").json()

    squares_row = next(c for c in listed if c["name"] == "math:squares")
    assert squares_row["usage"] == "/math:squares <numbers>"
    assert squares_row["params"]["properties"]["numbers"]["items"] == {"type": "integer"}
    assert squares_row["allowed"] is True
    assert {c["name"] for c in listed} >= {"hive:help", "hive:approve", "math:squares"}
    assert (detail["body"], detail["allowed"]) == ("Square $ARGUMENTS.", False)
    assert api(users["ada"], "GET", "commands/nope/").status_code == 404


def test_dry_run_returns_the_plan_and_starts_nothing(api, users, definitions, start_agent):
    start_agent("gatekeeper", skills="noop")
    definitions(
        "deploy.md",
        """
        ---
        argument-hint: <env>
        params: {env: {enum: [staging, prod]}}
        approval: params.env == 'prod'
        workflow:
          steps:
            - {id: build, skill: noop}
            - {id: nap, skill: sleep, needs: build, with: {seconds: 1}}
            - {id: each, skill: noop, needs: build, foreach: "{{ [1, 2, 3] }}"}
        ---
    """,
    )
    commands_load(paths=[definitions.root])

    prod = api(users["ada"], "POST", "commands/execute", json={"text": "/deploy prod --dry-run"})
    staging = api(users["ada"], "POST", "commands/execute",
                  json={"text": "/deploy staging", "dry_run": True})  # fmt: skip

    assert prod.status_code == 200, prod.text
    plan = prod.json()["plan"]
    assert (plan["approvals"], plan["overlap"]["would"]) == (["approval"], "start")
    assert [(s["id"], s["queue"], s.get("runs"), s.get("items")) for s in plan["steps"]] == [
        ("approval", "skill.noop", True, None),
        ("build", "skill.noop", None, None),
        ("nap", None, None, None),
        ("each", "skill.noop", None, 3),
    ]
    assert (
        plan["steps"][2]["waits"] == "waiting for an agent: any agent does not offer skill 'sleep'"
    )
    assert staging.json()["plan"]["approvals"] == []
    assert not Run.objects.exists()
    assert list(Invocation.objects.values_list("outcome", "dry_run")) == [("planned", True)] * 2


def test_execute_is_throttled_per_user(users, settings, fresh_throttles):
    from rest_framework.test import APIClient

    settings.HIVE_COMMAND_THROTTLE = "2/min"
    client = APIClient()
    client.force_authenticate(users["ada"])

    codes = [client.post("/api/v1/commands/execute", {"text": "/hive:status"}, format="json")
             .status_code for _ in range(3)]  # fmt: skip

    assert codes == [201, 201, 429]


@pytest.mark.parametrize(
    "query, field", [("run=abc", "run"), ("outcome=exploded", "outcome"), ("source=", "source")]
)
def test_a_bad_audit_filter_is_a_400_naming_it(users, query, field):
    client = APIClient()
    client.force_authenticate(users["admin"])

    response = client.get(f"/api/v1/commands/invocations/?{query}")

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]


@pytest.fixture
def urgent(definitions):
    """`/urgent`: its runs at priority 3 with a minute's deadline, unless the invocation
    says otherwise."""
    definitions("urgent.md", """
        ---
        priority: 3
        timeout: 60
        workflow: {priority: 1, steps: [{id: a, skill: noop}]}
        ---
    """)  # fmt: skip
    commands_load(paths=[definitions.root])


def test_an_invocation_sets_its_runs_priority_and_deadline_over_the_commands(users, urgent):
    client = APIClient()
    client.force_authenticate(users["ada"])

    def execute(**body):
        return client.post("/api/v1/commands/execute", {"text": "/urgent", **body}, format="json")

    mine = execute(priority=9, deadline=600)
    default = execute()
    plan = execute(dry_run=True, priority=0)

    assert mine.status_code == 201, mine.json()
    invocation = mine.json()["invocation"]
    assert (invocation["priority"], invocation["deadline"]) == (9, 600)
    run = Run.objects.get(pk=invocation["run"]["id"])
    assert run.priority == 9
    assert 599 < (run.deadline - run.created_at).total_seconds() <= 600
    run = Run.objects.get(pk=default.json()["run"]["id"])
    assert run.priority == 3  # the command's, over its workflow's
    assert 59 < (run.deadline - run.created_at).total_seconds() <= 60
    assert default.json()["invocation"]["priority"] is None
    assert (plan.json()["plan"]["priority"], plan.json()["plan"]["deadline"]) == (0, 60)
    listed = client.get("/api/v1/commands/urgent/").json()
    assert (listed["priority"], listed["timeout"]) == (3, 60)


@pytest.mark.parametrize(
    "given, field, message",
    [
        ({"priority": 12}, "priority", "Ensure this value is less than or equal to 9."),
        ({"priority": 1.5}, "priority", "A valid integer is required."),
        ({"deadline": 0}, "deadline", "Must be more than 0 seconds."),
        ({"deadline": "soon"}, "deadline", "A valid number is required."),
    ],
)
def test_a_bad_priority_or_deadline_is_a_400_naming_it_and_starts_nothing(
    users, urgent, given, field, message
):
    client = APIClient()
    client.force_authenticate(users["ada"])

    response = client.post("/api/v1/commands/execute", {"text": "/urgent", **given}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {field: [message]}
    assert not Run.objects.exists() and not Invocation.objects.exists()


def test_a_builtin_takes_no_priority(users):
    client = APIClient()
    client.force_authenticate(users["ada"])

    response = client.post(
        "/api/v1/commands/execute", {"text": "/hive:status", "priority": 5}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["priority"] == [
        "/hive:status starts no run to give it to"
    ]
    assert list(Invocation.objects.values_list("outcome", "priority")) == [("invalid", 5)]
