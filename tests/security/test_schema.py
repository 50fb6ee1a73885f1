"""Issue 15 #20: the OpenAPI schema says what the code enforces, at every door that
writes what the API later shows. Each test reads the schema the real server serves and
checks real responses against it with schemathesis's own validator."""

import httpx
import pytest
import schemathesis
from django.test import Client

from agents.models import Agent
from agents.services import agent_register
from hive_core.api import MAX_ID
from tests.security.conftest import auth

pytestmark = pytest.mark.django_db(transaction=True)


def _schema(url: str, user):
    raw = httpx.get(f"{url}/api/schema/?format=json", headers=auth(user)).json()
    return raw, schemathesis.openapi.from_dict(raw)


def _agent(name: str = "builder-1") -> Agent:
    return agent_register(
        name=name, role="builder", skills=["noop"], concurrency=1, host="ci", pid=1, version="0"
    )


def _admin_rename(admin, agent: Agent, name: str):
    client = Client()
    client.force_login(admin)
    return client.post(
        f"/admin/agents/agent/{agent.pk}/change/",
        {"name": name, "role": agent.role, "skills": '["noop"]', "concurrency": 1},
    )


def test_the_admin_refuses_an_agent_name_outside_the_published_pattern(attackers):
    agent = _agent()

    response = _admin_rename(attackers["admin"], agent, "Builder-One")

    assert response.status_code == 200  # the form again, with its error
    assert response.context["adminform"].form.errors["name"] == [
        "A lowercase slug: letters a-z, digits, - and _, starting with a letter or digit."
    ]
    agent.refresh_from_db()
    assert agent.name == "builder-1"


def test_an_agent_renamed_in_the_admin_matches_the_schema(attackers, live_server_url):
    agent = _agent()
    assert _admin_rename(attackers["admin"], agent, "builder-2").status_code == 302
    raw, schema = _schema(live_server_url, attackers["nobody"])

    listed = httpx.get(f"{live_server_url}/api/v1/agents/", headers=auth(attackers["nobody"]))
    one = httpx.get(f"{live_server_url}/api/v1/agents/builder-2/", headers=auth(attackers["admin"]))

    assert [a["name"] for a in listed.json()["results"]] == ["builder-2"]
    schema["/api/v1/agents/"]["GET"].validate_response(listed)
    schema["/api/v1/agents/{name}/"]["GET"].validate_response(one)
    # The pattern it publishes is the one `hive agent` and the pool file hold names to.
    assert raw["components"]["schemas"]["Agent"]["properties"]["name"]["pattern"] == (
        "^[a-z0-9][a-z0-9_-]*$"
    )


def test_a_schedule_that_never_ran_matches_the_schema(attackers, live_server_url):
    admin = attackers["admin"]
    _, schema = _schema(live_server_url, admin)
    url = f"{live_server_url}/api/v1/commands/schedules/"

    made = httpx.post(url, json={"text": "/hive:help", "every": 60}, headers=auth(admin))
    listed = httpx.get(url, headers=auth(admin))
    one = httpx.get(f"{url}{made.json()['id']}/", headers=auth(admin))

    assert made.status_code == 201 and made.json()["last_run_at"] is None
    schema["/api/v1/commands/schedules/"]["POST"].validate_response(made)
    schema["/api/v1/commands/schedules/"]["GET"].validate_response(listed)
    schema["/api/v1/commands/schedules/{id}/"]["GET"].validate_response(one)


def test_a_schedule_patch_without_fields_changes_nothing_as_its_schema_allows(
    attackers, live_server_url
):
    admin = attackers["admin"]
    raw, schema = _schema(live_server_url, admin)
    url = f"{live_server_url}/api/v1/commands/schedules/"
    made = httpx.post(url, json={"text": "/hive:help", "every": 60}, headers=auth(admin)).json()
    body = raw["paths"]["/api/v1/commands/schedules/{id}/"]["patch"]["requestBody"]

    patched = httpx.patch(f"{url}{made['id']}/", json={}, headers=auth(admin))

    assert body.get("required", False) is False  # the schema lets a PATCH name nothing
    assert patched.status_code == 200, patched.text
    assert patched.json() == made
    schema["/api/v1/commands/schedules/{id}/"]["PATCH"].validate_response(patched)


def test_the_events_bounds_are_in_the_schema_and_enforced(attackers, live_server_url):
    raw, _ = _schema(live_server_url, attackers["nobody"])
    parameters = {
        p["name"]: p["schema"] for p in raw["paths"]["/api/v1/events/"]["get"]["parameters"]
    }

    too_far = httpx.get(
        f"{live_server_url}/api/v1/events/?after={MAX_ID + 1}", headers=auth(attackers["nobody"])
    )
    too_many = httpx.get(
        f"{live_server_url}/api/v1/events/?limit=5001", headers=auth(attackers["nobody"])
    )

    assert parameters["after"] == {"type": "integer", "minimum": 0, "maximum": MAX_ID}
    assert parameters["limit"] == {"type": "integer", "minimum": 1, "maximum": 5000}
    assert too_far.status_code == 400
    assert too_far.json()["error"]["fields"] == {
        "after": [f"Ensure this value is less than or equal to {MAX_ID}."]
    }
    assert too_many.status_code == 400
    assert too_many.json()["error"]["fields"] == {
        "limit": ["Ensure this value is less than or equal to 5000."]
    }


@pytest.mark.parametrize(
    ("path", "component"),
    [
        ("/api/v1/commands/execute/", "ExecuteRequest"),
        ("/api/v1/commands/schedules/", "ScheduleCreateRequest"),
    ],
)
def test_a_command_text_outside_the_published_pattern_is_refused(
    attackers, live_server_url, path, component
):
    admin = attackers["admin"]
    raw, _ = _schema(live_server_url, admin)
    operation = raw["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    pattern = raw["components"]["schemas"][component]["properties"]["text"]["pattern"]

    refused = httpx.post(
        f"{live_server_url}{path}", json={"text": "hive:help", "every": 60}, headers=auth(admin)
    )

    assert operation["schema"] == {"$ref": f"#/components/schemas/{component}"}
    assert pattern == r"^\s*/[a-z0-9][a-z0-9_-]*(:[a-z0-9][a-z0-9_-]*)*(\s|$)"
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].endswith(
        "a command starts with / and its name, e.g. /hive:help"
    )


@pytest.mark.parametrize(
    ("path", "component", "required"),
    [
        ("/api/v1/messages/", "SendRequest", ["kind"]),
        ("/api/v1/messages/broadcast/", "BroadcastRequest", ["kind", "role"]),
    ],
)
def test_a_message_needs_the_body_its_schema_requires(
    attackers, live_server_url, path, component, required
):
    admin = attackers["admin"]
    raw, _ = _schema(live_server_url, admin)
    body = raw["paths"][path]["post"]["requestBody"]

    empty = httpx.post(f"{live_server_url}{path}", headers=auth(admin))

    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {
        "$ref": f"#/components/schemas/{component}"
    }
    assert sorted(raw["components"]["schemas"][component]["required"]) == required
    assert empty.status_code == 400
    assert empty.json()["error"]["fields"] == {
        name: ["This field is required."] for name in required
    }
