"""/api/v1/messages/ on the real ASGI server, with real agent processes behind it."""

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from agents.mailbox import send
from agents.models import Agent, Message
from tests.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_streams")]


def _token(username: str, *perms: str) -> dict:
    user = get_user_model().objects.create_user(username)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return {"Authorization": f"Token {Token.objects.create(user=user).key}"}


@pytest.fixture
def sender():
    return _token("sender", "add_message")


@pytest.fixture
def viewer():
    return _token("viewer", "view_message")  # sees every user's messages


def test_sending_needs_the_add_message_permission(live_server_url, viewer):
    Agent.objects.create(name="quiet", role="quiet", status="offline")

    response = httpx.post(
        f"{live_server_url}/api/v1/messages/", headers=viewer, json={"to": "quiet", "kind": "note"}
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert not Message.objects.exists()


def test_a_message_to_an_agent_that_is_down_is_accepted_and_listed_pending(
    live_server_url, sender, viewer
):
    Agent.objects.create(name="later", role="builder", status="offline")

    response = httpx.post(
        f"{live_server_url}/api/v1/messages/",
        headers=sender,
        json={"to": "later", "kind": "note", "payload": {"text": "rebuild"}},
    )

    assert response.status_code == 201
    body = response.json()
    assert {k: body[k] for k in ("sender", "recipient", "kind", "payload", "state", "stream")} == {
        "sender": "user:sender",
        "recipient": "later",
        "kind": "note",
        "payload": {"text": "rebuild"},
        "state": "pending",
        "stream": "hive:inbox:agent:later",
    }
    assert body["stream_id"] == ""  # recorded when it is handled
    listed = httpx.get(
        f"{live_server_url}/api/v1/messages/?agent=later&state=pending", headers=viewer
    ).json()
    assert [m["id"] for m in listed["results"]] == [body["id"]]


def test_handled_and_dead_messages_are_listed_by_state(live_server_url, start_agent, sender):
    start_agent("worker")
    url = f"{live_server_url}/api/v1/messages/"
    handled = httpx.post(url, headers=sender, json={"to": "worker", "kind": "note"}).json()
    dead = httpx.post(url, headers=sender, json={"to": "worker", "kind": "no.handler"}).json()
    wait_for(
        lambda: not Message.objects.filter(state="pending").exists(),
        timeout=30,
        what="both messages to be handled or dead",
    )

    by_state = {
        state: httpx.get(f"{url}?state={state}&agent=worker", headers=sender).json()["results"]
        for state in ("pending", "handled", "dead")
    }

    assert by_state["pending"] == []
    assert [m["id"] for m in by_state["handled"]] == [handled["id"]]
    (row,) = by_state["dead"]
    assert (row["id"], row["deliveries"]) == (dead["id"], 1)
    assert row["error"] == "agent 'worker' has no handler for messages of kind 'no.handler'"
    assert row["dead_at"] and row["consumer"].startswith("worker:")
    detail = httpx.get(f"{url}{handled['id']}/", headers=sender).json()
    assert detail["state"] == "handled" and detail["handled_at"]


def test_broadcast_sends_a_copy_to_each_online_agent_of_the_role(live_server_url, sender):
    for name in ("b1", "b2"):
        Agent.objects.create(name=name, role="builder", status="idle")
    Agent.objects.create(name="b3", role="builder", status="offline")

    response = httpx.post(
        f"{live_server_url}/api/v1/messages/broadcast/",
        headers=sender,
        json={"role": "builder", "kind": "note", "payload": {"text": "freeze"}},
    )

    assert response.status_code == 201
    assert [m["recipient"] for m in response.json()] == ["b1", "b2"]


def test_bad_messages_are_refused_with_400_naming_the_field(live_server_url, sender):
    Agent.objects.create(name="known", role="builder", status="idle")
    url = f"{live_server_url}/api/v1/messages/"
    cases = [
        ({"to": "ghost", "kind": "note"}, "to", "no agent named 'ghost' is registered"),
        ({"role": "nobody", "kind": "note"}, "role", "no agent has role 'nobody'"),
        ({"kind": "note"}, "to", "give an agent (to) or a role, not both or neither"),
        ({"to": "known", "kind": "Not A Kind"}, "kind",
         "'Not A Kind' is not a message kind (lowercase letters, digits, . _ - :)"),
        ({"to": "known", "kind": "note", "payload": {"text": "x" * 70_000}}, "payload",
         "70,011 bytes is over the limit of 65,536 bytes (HIVE_MESSAGE_MAX_BYTES)"),
    ]  # fmt: skip
    for body, field, reason in cases:
        response = httpx.post(url, headers=sender, json=body)
        assert response.status_code == 400, response.text
        assert response.json() == {
            "error": {
                "code": "invalid",
                "message": f"{field}: {reason}",
                "fields": {field: [reason]},
            }
        }
    bad_filter = httpx.get(f"{url}?state=lost", headers=sender)
    assert bad_filter.status_code == 400
    assert bad_filter.json()["error"]["message"] == 'state: "lost" is not a valid choice.'
    assert not Message.objects.exists()


def test_the_messages_list_runs_the_same_queries_for_1_and_50_messages(db):
    Agent.objects.create(name="quiet", role="r", skills=["noop"], status="offline")
    client = APIClient()
    reader = get_user_model().objects.create_user("reader")
    reader.user_permissions.add(Permission.objects.get(codename="view_message"))
    client.force_authenticate(reader)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/api/v1/messages/?agent=quiet").status_code == 200
        return len(captured)

    queries()  # the reader's permissions are read once, then cached on the user
    send(to="quiet", kind="note", payload={"n": 0}, sender="cli")
    one = queries()
    for n in range(49):
        send(to="quiet", kind="note", payload={"n": n}, sender="cli")

    assert queries() == one
