"""Issue 15, items 6-9: who may knock how often (the console's throttle, the login
lockout), how big an agent may grow, and whose messages a user may read. Each test
goes through the door the review used, as one of its users."""

import subprocess
import sys

import pytest
from rest_framework.test import APIClient

from agents.models import Agent
from commands.models import Invocation
from events.models import Event
from tests.processes import child_env
from tests.security.conftest import auth

pytestmark = pytest.mark.django_db


def api_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=auth(user)["Authorization"])
    return client


# --- 6. The console is throttled with the API, in one bucket per user ---------------


def test_the_console_and_the_api_count_against_one_command_rate(
    attackers, settings, client, fresh_throttles
):
    settings.HIVE_COMMAND_THROTTLE = "3/min"
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


def test_one_users_console_rate_is_not_anothers(attackers, settings, client, fresh_throttles):
    settings.HIVE_COMMAND_THROTTLE = "1/min"
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
    from hive_core.yamlfile import DefinitionError

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


# --- 9. A user reads the messages they sent; a view permission reads all -------------


@pytest.fixture
def sent(attackers, redis_url, empty_streams, client):
    """Alice (may send messages and execute commands) sends a secret to an agent's
    inbox through the API and another with /hive:send from the console; one of them
    is then dead-lettered with an error quoting it."""
    from tests.security.conftest import _user

    alice = _user("alice", "agents.add_message", "commands.execute_command")
    Agent.objects.create(name="inbox", role="inbox", skills=["noop"])
    api = api_client(alice).post(
        "/api/v1/messages/",
        {"to": "inbox", "kind": "note", "payload": {"text": "api secret"}},
        format="json",
    )
    assert api.status_code == 201, api.content
    client.force_login(alice)
    page = client.post("/console/", {"text": '/hive:send inbox "console secret"'})
    assert 'data-outcome="done"' in page.content.decode()
    # A refused /hive:send is audited with its text, and so is its event.
    client.post("/console/", {"text": '/hive:send ghost "typed secret"'})
    client.logout()
    from agents.models import Message
    from agents.services import message_bury

    typed = Message.objects.get(payload__text="console secret")  # exact JSON: not on SQLite
    message_bury(message_id=typed.pk, stream_id="1-0", agent="inbox", consumer="inbox:1",
                 error="choked on console secret", deliveries=5)  # fmt: skip
    return alice, [api.json()["id"], typed.pk]


def message_ids(user, query: str = "") -> list[int]:
    answer = api_client(user).get(f"/api/v1/messages/{query}")
    assert answer.status_code == 200
    return [m["id"] for m in answer.json()["results"]]


def test_a_user_lists_only_the_messages_they_sent(attackers, sent):
    alice, ids = sent
    newest_first = ids[::-1]

    for reader in ("nobody", "runner", "executor"):
        user = attackers[reader]
        assert message_ids(user) == [], reader
        for query in ("?agent=inbox", "?state=dead", "?kind=note", "?state=pending"):
            assert message_ids(user, query) == [], (reader, query)
        for pk in ids:
            detail = api_client(user).get(f"/api/v1/messages/{pk}/")
            assert detail.status_code == 404, (reader, pk)
    assert message_ids(alice) == newest_first
    assert message_ids(alice, "?state=dead") == ids[1:]
    assert api_client(alice).get(f"/api/v1/messages/{ids[0]}/").json()["payload"] == {
        "text": "api secret"
    }
    assert message_ids(attackers["admin"]) == newest_first


def test_the_view_permission_reads_every_message(attackers, sent):
    from tests.security.conftest import _user

    _, ids = sent

    assert message_ids(_user("auditor", "agents.view_message")) == ids[::-1]


def test_the_messages_page_and_its_dead_letters_show_a_user_only_theirs(attackers, sent, client):
    alice, ids = sent

    client.force_login(attackers["runner"])
    theirs = client.get("/messages/").content.decode()
    client.force_login(alice)
    hers = client.get("/messages/?partial=1").content.decode()

    for pk in ids:
        assert f'data-message="{pk}"' not in theirs
        assert f'data-message="{pk}"' in hers
    assert "choked on console secret" not in theirs and "user:alice" not in theirs
    assert "choked on console secret" in hers


def test_the_events_of_a_message_and_of_the_command_that_sent_it_are_the_senders(attackers, sent):
    """GET /api/v1/events/ (what live pages catch up from): message.sent and
    message.dead events, and the command events carrying /hive:send's text."""
    from dashboard.selectors import event_subjects_visible

    alice, ids = sent
    private = {f"message:{pk}" for pk in ids}
    typed = {f"invocation:{i.pk}" for i in Invocation.objects.filter(user=alice, outcome="failed")}
    kinds = {e.kind for e in Event.objects.filter(subject__in=private | typed)}
    assert kinds == {"message.sent", "message.dead", "command.failed"}

    def subjects(user) -> set[str]:
        answer = api_client(user).get("/api/v1/events/")
        return {e["subject"] for e in answer.json()["results"]}

    assert private <= subjects(alice) and typed <= subjects(alice)
    assert private <= subjects(attackers["admin"])
    for reader in ("nobody", "runner", "executor"):
        user = attackers[reader]
        assert not (private | typed) & subjects(user), reader
        assert event_subjects_visible(user=user, subjects=private | typed) == set(), reader
    assert event_subjects_visible(user=alice, subjects=private | typed) == private | typed


@pytest.mark.django_db(transaction=True)  # the web process reads committed rows
def test_the_live_feed_sends_a_message_event_only_to_who_may_see_it(
    attackers, live_server_url, empty_streams
):
    import httpx

    from events.services import event_emit
    from tests.dashboard.test_consumer import events_until, open_socket, receive, session_cookie
    from tests.security.conftest import _user

    alice = _user("alice", "agents.add_message")
    Agent.objects.create(name="inbox", role="inbox", skills=["noop"])
    with (
        open_socket(live_server_url, cookie=session_cookie(alice)) as hers,
        open_socket(live_server_url, cookie=session_cookie(attackers["runner"])) as theirs,
    ):
        for socket in (hers, theirs):
            socket.send('{"subscribe": "overview"}')
            assert receive(socket) == {"type": "subscribed", "group": "overview"}
        sent = httpx.post(
            f"{live_server_url}/api/v1/messages/",
            headers=auth(alice),
            json={"to": "inbox", "kind": "note", "payload": {"text": "live secret"}},
        )
        assert sent.status_code == 201
        subject = f"message:{sent.json()['id']}"
        event_emit(kind="agent.offline", subject="agent:marker")  # after it, to everyone
        received = {
            "alice": events_until(hers, agent_marker=1, **{subject.replace(":", "_"): 1}),
            "runner": events_until(theirs, agent_marker=1),
        }

    assert [e["kind"] for e in received["alice"] if e["subject"] == subject] == ["message.sent"]
    assert subject not in {e["subject"] for e in received["runner"]}


# --- 7. Logins are locked out after repeated failures, per username and address --------


DOORS = ["/accounts/login/", "/admin/login/"]


def login(door: str, username: str, password: str, *, address: str = "127.0.0.1"):
    from django.test import Client

    client = Client(REMOTE_ADDR=address)
    answer = client.post(door, {"username": username, "password": password})
    return answer, "_auth_user_id" in client.session


@pytest.mark.parametrize("door", DOORS)
def test_a_login_is_refused_after_too_many_failures_even_with_the_right_password(
    attackers, settings, door
):
    admin = attackers["admin"]
    limit = settings.HIVE_LOGIN_FAILURE_LIMIT
    assert (limit, settings.HIVE_LOGIN_COOLOFF_MINUTES) == (5, 15)

    for _ in range(limit - 1):
        answer, logged_in = login(door, "admin", "wrong")
        assert (answer.status_code, logged_in) == (200, False)
    answer, logged_in = login(door, "admin", admin.password_plain)
    assert (answer.status_code, logged_in) == (302, True)  # before the limit: in

    for _ in range(limit):
        login(door, "admin", "guess")
    refused, logged_in = login(door, "admin", admin.password_plain)

    assert (refused.status_code, logged_in) == (429, False)
    assert "Account locked: too many login attempts" in refused.content.decode()
    # Keyed by username and address: the user logs in from elsewhere, and another
    # user from the same address is not locked out by the guesses at admin.
    assert login(door, "admin", admin.password_plain, address="10.0.0.9")[1] is True
    assert login("/accounts/login/", "nobody", attackers["nobody"].password_plain)[1] is True


def test_a_locked_out_login_keeps_api_tokens_working(attackers, settings):
    for _ in range(settings.HIVE_LOGIN_FAILURE_LIMIT + 1):
        login("/accounts/login/", "admin", "guess")

    assert api_client(attackers["admin"]).get("/api/v1/agents/").status_code == 200
