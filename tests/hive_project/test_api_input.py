"""Hostile bodies through the real ASGI server: every one is a 4xx naming the problem
and changes nothing, never a 500."""

import httpx
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from agents.models import Agent, Message
from coordination.models import Run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def post(live_server_url, make_workflow):
    make_workflow(
        [{"id": "a", "skill": "noop"}],
        params={"type": "object", "properties": {"v": {}}},
        name="target",
    )
    user = get_user_model().objects.create_superuser("root", password="pw")
    headers = {"Authorization": f"Token {Token.objects.create(user=user).key}"}

    def post(content: bytes, content_type: str = "application/json"):
        return httpx.post(
            f"{live_server_url}/api/v1/workflows/target/start/",
            content=content,
            headers={**headers, "Content-Type": content_type},
            timeout=30,
        )

    return post


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b'{"params": {"v": 1', 400, "JSON parse error - Expecting ',' delimiter"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "JSON nested deeper than 32 levels"),
        (b'{"params": {"v": ' + b"[" * 40 + b"]" * 40 + b"}}", 400, "JSON nested deeper"),
        (b'{"params": {"v": "a\\u0000b"}}', 400,
         "JSON data not accepted - params.v: holds a NUL character (\\u0000)"),
        (b'{"params": {"a\\u0000": 1}}', 400,
         "JSON data not accepted - params: a key holds a NUL character (\\u0000)"),
        (b'{"params": {"v": ["\\ud800"]}}', 400,
         "JSON data not accepted - params.v.0: holds a lone surrogate (\\ud800), "
         "which is not Unicode text"),
        (b'{"params": {"\\udc00x": 1}}', 400,
         "JSON data not accepted - params: a key holds a lone surrogate (\\udc00)"),
        (b'{"params": {"v": NaN}}', 400, "JSON data not accepted - params.v: nan is not a finite"),
        (b'{"params": {"v": "\x00"}}', 400, "JSON parse error - Invalid control character"),
        (b"\xff\xfe{}", 400, "JSON parse error"),
        (b'{"params": "' + b"x" * 5_000_000 + b'"}', 413, "the request body is larger than"),
    ],
    ids=["malformed", "deep-array", "deep-params", "nul-escape", "nul-key", "surrogate",
         "surrogate-key", "nan", "nul-raw", "not-utf8", "5MB"],
)  # fmt: skip
def test_a_hostile_body_is_a_4xx_and_starts_nothing(post, body, status, message):
    response = post(body)

    assert response.status_code == status, response.text
    assert response.json()["error"]["message"].startswith(message)
    assert Run.objects.count() == 0


def test_a_lone_surrogate_in_a_message_is_a_400_and_sends_nothing(live_server_url, post):
    Agent.objects.create(name="builder", role="builder", status="idle")
    headers = {"Authorization": f"Token {Token.objects.get().key}"}
    body = b'{"to": "builder", "kind": "note", "payload": {"a": "\\ud800"}}'

    for path in ("/api/v1/messages/", "/api/v1/messages/broadcast/"):
        response = httpx.post(
            f"{live_server_url}{path}",
            content=body.replace(b'"to"', b'"role"') if "broadcast" in path else body,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["message"] == (
            "JSON data not accepted - payload.a: holds a lone surrogate (\\ud800), "
            "which is not Unicode text"
        )
    assert not Message.objects.exists()


def test_a_body_that_is_not_json_is_a_415(post):
    response = post(b"params=1", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/workflows/a%00b/",
        "/api/v1/agents/%00/",
        "/api/v1/runs/?workflow=%00",
        "/api/v1/runs/?%00=1",
        "/api/v1/runs/1/steps/%00/retry/",
    ],
)
def test_a_nul_in_the_url_is_a_400(live_server_url, path):
    response = httpx.get(f"{live_server_url}{path}")

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "NUL characters are not allowed in the URL"


def test_an_unknown_api_address_is_a_json_404(live_server_url):
    response = httpx.get(f"{live_server_url}/api/v1/nothing-here/")

    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "not_found",
        "message": "no API endpoint at /api/v1/nothing-here/",
        "fields": {},
    }


def test_the_openapi_schema_needs_a_login_and_lists_every_endpoint(live_server_url):
    user = get_user_model().objects.create_user("reader", password="pw")
    headers = {"Authorization": f"Token {Token.objects.create(user=user).key}"}

    anonymous = httpx.get(f"{live_server_url}/api/schema/?format=json")
    schema = httpx.get(f"{live_server_url}/api/schema/?format=json", headers=headers).json()

    assert anonymous.status_code == 401
    assert {"/api/v1/runs/{id}/cancel/", "/api/v1/events/", "/api/v1/agents/"} <= set(
        schema["paths"]
    )
    for action in ("cancel", "pause", "resume"):
        answers = schema["paths"][f"/api/v1/runs/{{id}}/{action}/"]["post"]["responses"]
        assert set(answers) == {"200", "400", "401", "403", "404", "409", "413", "415"}
        assert answers["409"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }


def test_the_api_docs_page_sends_visitors_to_log_in_and_works_offline(live_server_url):
    get_user_model().objects.create_user("reader", password="pw")
    with httpx.Client(base_url=live_server_url) as browser:
        anonymous = browser.get("/api/docs/")
        login = browser.get("/accounts/login/")
        browser.post(
            "/accounts/login/",
            data={"username": "reader", "password": "pw"},
            headers={"X-CSRFToken": login.cookies["csrftoken"]},
        )
        page = browser.get("/api/docs/")
        # Swagger UI comes from the sidecar wheel, served by the app itself.
        script = next(p for p in page.text.split('"') if p.endswith("swagger-ui-bundle.js"))
        bundle = browser.get(script)

    assert anonymous.status_code == 302
    assert anonymous.headers["location"].startswith("/accounts/login/")
    assert page.status_code == 200
    assert bundle.status_code == 200


@pytest.mark.parametrize(
    "path, status",
    [
        ("/api/v1/runs/99999999999999999999999999/", 404),
        ("/api/v1/messages/99999999999999999999999999/", 404),
        ("/api/v1/commands/invocations/99999999999999999999999999/", 404),
        ("/api/v1/commands/invocations/?run=99999999999999999999999999", 400),
        ("/api/v1/events/?after=99999999999999999999999999", 400),
        ("/api/v1/workflows/target/?version=99999999999999", 400),
    ],
)
def test_an_id_too_large_for_the_database_is_a_4xx(live_server_url, post, path, status):
    user = get_user_model().objects.get(username="root")
    headers = {"Authorization": f"Token {Token.objects.get(user=user).key}"}

    response = httpx.get(f"{live_server_url}{path}", headers=headers)

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] in {"not_found", "invalid"}
