"""/ws/events/ on a real daphne (the `hive web` process) and the real Redis channel
layer: who may connect, and that a user receives only the events they may see."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from commands.models import Invocation
from coordination.models import Run
from events.services import event_emit

pytestmark = pytest.mark.django_db(transaction=True)


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def ws_url(live_server_url: str) -> str:
    return live_server_url.replace("http://", "ws://") + "/ws/events/"


def open_socket(live_server_url, *, cookie: str = "", origin: str = ""):
    headers = {"Origin": origin or live_server_url}
    if cookie:
        headers["Cookie"] = cookie
    return connect(ws_url(live_server_url), additional_headers=headers, open_timeout=10)


def receive(socket, *, timeout: float = 10) -> dict:
    return json.loads(socket.recv(timeout=timeout))


def events_until(socket, **times: int) -> list[dict]:
    """Every event received until as many about each subject as `times` says (subjects
    spelt with `_` for `:`; a socket's groups are not ordered with each other)."""
    events = []
    while any(
        sum(e["subject"] == subject.replace("_", ":") for e in events) < n
        for subject, n in times.items()
    ):
        message = receive(socket)
        if message["type"] == "events":
            events += message["events"]
    return events


@pytest.fixture
def ada_and_bob(make_workflow):
    User = get_user_model()
    ada = User.objects.create_user("ada", password="pw-ada")
    bob = User.objects.create_user("bob", password="pw-bob")
    workflow = make_workflow([{"id": "a", "skill": "noop"}])
    runs = {
        name: Run.objects.create(workflow=workflow, created_by=user)
        for name, user in (("ada", ada), ("bob", bob))
    }
    for name, user in (("ada", ada), ("bob", bob)):
        # What a user typed is theirs: an invocation's events carry its text.
        Invocation.objects.create(
            user=user, source="api", text=f"/secret {name}", outcome="invalid"
        )
    return ada, bob, runs


def test_an_anonymous_socket_is_refused(live_server_url):
    with pytest.raises(InvalidStatus) as refused:
        open_socket(live_server_url)
    assert refused.value.response.status_code == 403


def test_a_socket_from_another_origin_is_refused(live_server_url, ada_and_bob):
    ada, _, _ = ada_and_bob
    with pytest.raises(InvalidStatus) as refused:
        open_socket(live_server_url, cookie=session_cookie(ada), origin="http://evil.example")
    assert refused.value.response.status_code == 403


def test_a_user_receives_only_the_events_they_may_see(live_server_url, ada_and_bob, empty_streams):
    ada, bob, runs = ada_and_bob
    with open_socket(live_server_url, cookie=session_cookie(ada)) as socket:
        socket.send(json.dumps({"subscribe": "overview"}))
        assert receive(socket) == {"type": "subscribed", "group": "overview"}
        socket.send(json.dumps({"subscribe": "run", "run": runs["bob"].pk}))
        assert receive(socket) == {"type": "error", "error": f"no run {runs['bob'].pk}"}
        socket.send(json.dumps({"subscribe": "run", "run": runs["ada"].pk}))
        assert receive(socket) == {"type": "subscribed", "group": f"run.{runs['ada'].pk}"}

        event_emit(kind="run.succeeded", subject=f"run:{runs['bob'].pk}")
        event_emit(kind="run.succeeded", subject=f"run:{runs['ada'].pk}")
        for invocation in Invocation.objects.order_by("-user__username"):  # bob's first
            event_emit(kind="command.invalid", subject=f"invocation:{invocation.pk}",
                       data={"text": invocation.text})  # fmt: skip
        event_emit(kind="agent.offline", subject="agent:builder", data={"reason": "test"})
        ada_invocation = f"invocation_{Invocation.objects.get(user=ada).pk}"
        # Once through the overview, once through the run's own group.
        received = events_until(
            socket, agent_builder=1, **{f"run_{runs['ada'].pk}": 2, ada_invocation: 1}
        )

    subjects = [e["subject"] for e in received]
    assert f"run:{runs['bob'].pk}" not in subjects
    assert f"invocation:{Invocation.objects.get(user=bob).pk}" not in subjects
    assert subjects.count(f"run:{runs['ada'].pk}") == 2
    assert [e["data"] for e in received if e["subject"] == "agent:builder"] == [{"reason": "test"}]


def test_a_staff_user_sees_every_run(live_server_url, ada_and_bob, empty_streams):
    _, _, runs = ada_and_bob
    admin = get_user_model().objects.create_superuser("root", password="pw")
    with open_socket(live_server_url, cookie=session_cookie(admin)) as socket:
        socket.send(json.dumps({"subscribe": "run", "run": runs["bob"].pk}))
        assert receive(socket)["type"] == "subscribed"
        event_emit(kind="run.cancelled", subject=f"run:{runs['bob'].pk}")
        received = events_until(socket, **{f"run_{runs['bob'].pk}": 1})
    assert received[-1]["kind"] == "run.cancelled"


def test_malformed_messages_are_answered_and_the_socket_stays_up(live_server_url, ada_and_bob):
    ada, _, _ = ada_and_bob
    with open_socket(live_server_url, cookie=session_cookie(ada)) as socket:
        too_big = '{"subscribe": "run", "run": 99999999999999999999999}'
        for bad in ("{not json", "[1, 2]", '{"subscribe": "run", "run": "1"}', too_big, "{}"):
            socket.send(bad)
            assert receive(socket)["type"] == "error"
        socket.send(json.dumps({"subscribe": "overview"}))
        assert receive(socket)["type"] == "subscribed"
