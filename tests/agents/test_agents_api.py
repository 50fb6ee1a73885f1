"""GET /api/v1/agents/ on the real ASGI server, with a real agent process behind it."""

import httpx
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token():
    user = get_user_model().objects.create_user("ada", password="pw-for-ada")
    return Token.objects.create(user=user).key


def test_anonymous_requests_are_refused_with_401(live_server_url):
    response = httpx.get(f"{live_server_url}/api/v1/agents/")

    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": "not_authenticated",
            "message": "Authentication credentials were not provided.",
            "fields": {},
        }
    }
    assert response.headers["www-authenticate"] == "Token"


def test_a_bad_token_is_refused_with_401(live_server_url):
    response = httpx.get(
        f"{live_server_url}/api/v1/agents/", headers={"Authorization": "Token nope"}
    )

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid token."


def test_token_holders_see_the_live_agents(live_server_url, start_agent, token):
    process = start_agent("scout", role="reviewer", skills="noop,http.request", concurrency=2)

    response = httpx.get(
        f"{live_server_url}/api/v1/agents/", headers={"Authorization": f"Token {token}"}
    )

    assert response.status_code == 200
    (agent,) = response.json()["results"]
    assert {k: agent[k] for k in ("name", "role", "skills", "status", "concurrency", "pid")} == {
        "name": "scout",
        "role": "reviewer",
        "skills": ["noop", "http.request"],
        "status": "idle",
        "concurrency": 2,
        "pid": process.pid,
    }
    assert agent["host"] and agent["last_heartbeat"] and agent["load"] == 0.0


def test_agent_detail_by_name_and_404(live_server_url, start_agent, token):
    start_agent("solo")
    auth = {"Authorization": f"Token {token}"}

    found = httpx.get(f"{live_server_url}/api/v1/agents/solo/", headers=auth)
    assert found.json()["name"] == "solo"
    missing = httpx.get(f"{live_server_url}/api/v1/agents/ghost/", headers=auth)
    assert missing.status_code == 404


def test_the_dashboard_needs_a_login_and_then_lists_agents(live_server_url, start_agent, token):
    start_agent("visible")
    with httpx.Client(base_url=live_server_url) as client:
        anonymous = client.get("/")
        assert anonymous.status_code == 302
        assert anonymous.headers["location"] == "/accounts/login/?next=/"

        client.get("/accounts/login/")
        login = client.post(
            "/accounts/login/",
            data={
                "username": "ada",
                "password": "pw-for-ada",
                "csrfmiddlewaretoken": client.cookies["csrftoken"],
            },
        )
        assert login.status_code == 302 and login.headers["location"] == "/"

        overview = client.get("/")
        page = client.get("/agents/")
    assert overview.status_code == 200 and 'data-count="online">1</b>' in overview.text
    assert page.status_code == 200
    assert 'data-agent="visible" data-status="idle"' in page.text
