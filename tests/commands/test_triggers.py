"""Webhook triggers on the real ASGI server with a real agent behind it: a body signed
with the trigger's secret runs its command as the trigger's user (audited, source
webhook); a bad signature, a replay, a body that is not JSON and a template that does
not render start nothing."""

import hashlib
import hmac
import json
import subprocess
import threading

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.urls import reverse
from prometheus_client import generate_latest

from commands.models import Invocation, Trigger, TriggerDelivery
from commands.services import commands_load
from commands.triggers import trigger_fire
from coordination.models import Run
from ops.metrics import registry
from tests.runs import steps_of, wait_run

pytestmark = pytest.mark.django_db(transaction=True)

RELEASE = """
---
description: Release a version
argument-hint: <version> [env]
params:
  version: {type: string}
  env: {type: string, enum: [staging, prod], default: staging}
workflow:
  steps:
    - {id: ship, skill: noop, with: {version: "{{ params.version }}", env: "{{ params.env }}"}}
---
"""
TEMPLATE = "/hooks:release {{ body.ref | replace('refs/tags/v', '') }} env=staging"
SECRET = "s3cret-s3cret-s3cret"


@pytest.fixture
def release(definitions):
    definitions("hooks/release.md", RELEASE)
    commands_load(paths=[definitions.root])


@pytest.fixture
def trigger(users, release):
    return Trigger.objects.create(name="tags", command=TEMPLATE, user=users["ada"], secret=SECRET)


def signed(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def post(live_server_url):
    def call(name: str, body: bytes, *, signature=None, delivery: str = "", **headers):
        headers = {"Content-Type": "application/json", **headers}
        if signature is not False:
            headers["X-Hive-Signature-256"] = signature or signed(body)
        if delivery:
            headers["X-Hive-Delivery"] = delivery
        return httpx.post(f"{live_server_url}/hooks/{name}", content=body, headers=headers,
                          timeout=30)  # fmt: skip

    return call


def counts() -> tuple[int, int]:
    return Invocation.objects.count(), Run.objects.count()


def test_a_signed_webhook_runs_its_command_as_the_triggers_user(
    post, trigger, start_agent, live_server_url
):
    start_agent("hooked", skills="noop")
    body = json.dumps({"ref": "refs/tags/v1.4.0", "pusher": {"name": "x"}}).encode()

    # GitHub's header names: it can call a trigger directly.
    response = httpx.post(
        f"{live_server_url}/hooks/tags",
        content=body,
        headers={"X-Hub-Signature-256": signed(body), "X-GitHub-Delivery": "gh-1"},
        timeout=30,
    )

    assert response.status_code == 201, response.text
    invocation = response.json()["invocation"]
    assert {k: invocation[k] for k in ("command", "user", "source", "text", "args", "outcome")} == {
        "command": "hooks:release",
        "user": "ada",
        "source": "webhook",
        "text": '/hooks:release "1.4.0" env=staging',  # each value from the body quoted
        "args": {"version": "1.4.0", "env": "staging"},
        "outcome": "started",
    }
    run = wait_run(Run.objects.get(pk=response.json()["run"]["id"]))
    assert run.state == "succeeded"
    assert steps_of(run)["ship"].output == {"version": "1.4.0", "env": "staging"}
    assert run.created_by.username == "ada"


@pytest.mark.parametrize(
    "signature",
    [False, "sha256=" + "0" * 64, "sha1=abc", signed(b'{"ref": "refs/tags/v9"}', "other-secret")],
    ids=["missing", "wrong", "other-algorithm", "other-secret"],
)
def test_a_bad_signature_is_a_401_that_creates_nothing_and_is_counted(post, trigger, signature):
    before = counts()

    response = post("tags", b'{"ref": "refs/tags/v9"}', signature=signature, delivery="d-1")

    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": "bad_signature",
            "message": "missing or bad X-Hive-Signature-256 (sha256=<hex HMAC-SHA256 of the body>)",
            "fields": {"X-Hive-Signature-256": ["does not match the body"]},
        }
    }
    assert counts() == before
    assert not TriggerDelivery.objects.exists()  # an unsigned delivery id claims nothing
    assert Trigger.objects.get(pk=trigger.pk).rejected_count == 1
    assert b'hive_webhook_rejected_total{trigger="tags"} 1.0' in generate_latest(registry)


def test_a_value_from_the_body_is_one_argument_whatever_it_holds(trigger):
    body = json.dumps({"ref": 'refs/tags/v1.4.0 env=prod "--dry-run'}).encode()

    invocation = trigger_fire(trigger=trigger, body=body, headers={})

    assert invocation.args == {"version": '1.4.0 env=prod "--dry-run', "env": "staging"}
    assert invocation.outcome == "started" and not invocation.dry_run


def test_unknown_and_disabled_triggers_are_404(post, trigger, live_server_url):
    Trigger.objects.create(name="off", command=TEMPLATE, user=trigger.user, enabled=False)

    for name in ("nope", "off", "no%20such"):
        response = post(name, b"{}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        named = name.replace("%20", " ")
        assert response.json()["error"]["fields"] == {"name": [f"no trigger {named!r}"]}
    wrong_method = httpx.get(f"{live_server_url}/hooks/tags")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert counts() == (0, 0)


def test_a_replay_is_answered_from_the_first_result_and_runs_once(post, trigger):
    body = b'{"ref": "refs/tags/v2.0.0"}'

    first = post("tags", body, delivery="abc")
    again = post("tags", body, delivery="abc")
    other = post("tags", body, delivery="def")

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert other.json()["invocation"]["id"] != first.json()["invocation"]["id"]
    assert counts() == (2, 2)


def test_concurrent_duplicates_run_once(post, trigger):
    body = b'{"ref": "refs/tags/v3.0.0"}'
    answers = []
    threads = [
        threading.Thread(target=lambda: answers.append(post("tags", body, delivery="same")))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(201) >= 1 and set(statuses) <= {201, 409}, statuses
    assert len({a.json()["invocation"]["id"] for a in answers if a.status_code == 201}) == 1
    assert counts() == (1, 1)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"ref=v1", "body: not JSON: Expecting value: line 1 column 1 (char 0)"),
        (b'["refs/tags/v1"]', "body: must be a JSON object"),
        (b"\xff\xfe", "body: not JSON: "),
    ],
)
def test_a_body_that_is_not_a_json_object_is_a_400_naming_body(post, trigger, body, message):
    response = post("tags", body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith(message) and list(error["fields"]) == ["body"]
    assert counts() == (0, 0)


def test_a_template_that_does_not_render_is_a_400_naming_command(post, trigger):
    response = post("tags", b'{"tag": "v1"}')

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["message"] == "command: 'dict object' has no attribute 'ref'"
    assert error["fields"]["command"] == ["'dict object' has no attribute 'ref'"]
    (invocation,) = Invocation.objects.all()
    assert (invocation.outcome, invocation.source, invocation.text) == (
        "invalid",
        "webhook",
        TEMPLATE,
    )
    assert not Run.objects.exists()


def test_a_trigger_whose_user_lacks_the_permission_is_denied_and_audited(post, users, release):
    Trigger.objects.create(name="bobs", command=TEMPLATE, user=users["bob"], secret=SECRET)

    response = post("bobs", b'{"ref": "refs/tags/v1.0.0"}')

    assert response.status_code == 403
    assert response.json()["error"]["message"] == (
        "permission denied: /hooks:release needs commands.execute_command and bob does not have it"
    )
    (invocation,) = Invocation.objects.all()
    assert (invocation.outcome, invocation.source, invocation.user) == (
        "denied",
        "webhook",
        users["bob"],
    )
    assert not Run.objects.exists()


# The API and the admin.


@pytest.fixture
def api(live_server_url):
    def call(user, method: str, path: str = "", **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Token {user.token}"}
        url = f"{live_server_url}/api/v1/commands/triggers/{path}"
        return httpx.request(method, url, headers=headers, timeout=30, **kwargs)

    return call


def grant(user, *actions: str) -> None:
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=[f"{a}_trigger" for a in actions])
    )


def test_the_api_needs_the_trigger_permissions(api, users, trigger):
    bob = users["bob"]
    assert api(bob, "GET").status_code == 403
    create = api(bob, "POST", json={"name": "x", "command": "/hive:help"})
    assert create.status_code == 403
    assert create.json()["error"]["code"] == "permission_denied"
    assert api(bob, "PATCH", f"{trigger.pk}/", json={"enabled": False}).status_code == 403
    assert api(bob, "DELETE", f"{trigger.pk}/").status_code == 403
    assert Trigger.objects.get(pk=trigger.pk).enabled
    assert list(Trigger.objects.values_list("name", flat=True)) == ["tags"]


def test_the_api_creates_shows_changes_and_deletes_a_trigger(api, users, release):
    ada = users["ada"]
    grant(ada, "view", "add", "change", "delete")

    created = api(ada, "POST", json={"name": "ci", "command": TEMPLATE})

    assert created.status_code == 201, created.text
    body = created.json()
    secret = body.pop("secret")
    assert len(secret) == 64 and Trigger.objects.get(name="ci").secret == secret
    assert {k: body[k] for k in ("name", "url", "command", "user", "enabled")} == {
        "name": "ci", "url": "/hooks/ci", "command": TEMPLATE, "user": "ada", "enabled": True,
    }  # fmt: skip
    shown = api(ada, "GET", f"{body['id']}/").json()
    assert "secret" not in shown and shown["rejected_count"] == 0
    assert [t["name"] for t in api(ada, "GET").json()] == ["ci"]

    changed = api(ada, "PATCH", f"{body['id']}/", json={"enabled": False, "secret": "x" * 20})
    assert changed.status_code == 200 and changed.json()["enabled"] is False
    assert Trigger.objects.get(name="ci").secret == "x" * 20
    assert api(ada, "DELETE", f"{body['id']}/").status_code == 204
    assert not Trigger.objects.exists()


def test_the_api_refuses_a_bad_template_a_bad_name_and_another_user(api, users, release):
    ada = users["ada"]
    grant(ada, "view", "add")

    broken = api(ada, "POST", json={"name": "ci", "command": "/hooks:release {{ body.ref "})
    assert broken.status_code == 400
    assert list(broken.json()["error"]["fields"]) == ["command"]
    assert broken.json()["error"]["message"].startswith("command: ")
    bad_name = api(ada, "POST", json={"name": "a b", "command": "/hive:help"})
    assert bad_name.status_code == 400 and list(bad_name.json()["error"]["fields"]) == ["name"]
    as_admin = api(ada, "POST", json={"name": "ci", "command": "/hive:help", "user": "admin"})
    assert as_admin.status_code == 403
    assert as_admin.json()["error"]["fields"] == {"user": ["must be you"]}
    assert not Trigger.objects.exists()
    # Another's trigger is not ada's to see or change.
    theirs = Trigger.objects.create(name="theirs", command="/hive:help", user=users["admin"])
    assert api(ada, "GET").json() == []
    assert api(ada, "GET", f"{theirs.pk}/").status_code == 404
    # A superuser names whom a trigger runs as.
    made = api(users["admin"], "POST", json={"name": "ci", "command": "/hive:help", "user": "ada"})
    assert made.status_code == 201 and made.json()["user"] == "ada"


def test_a_trigger_is_made_in_the_admin_with_its_template_checked(client, users, release):
    client.force_login(users["admin"])
    url = reverse("admin:commands_trigger_add")

    broken = client.post(url, {"name": "ci", "command": "/x {{ body.", "user": users["ada"].pk,
                               "secret": SECRET, "enabled": "on"})  # fmt: skip
    assert broken.status_code == 200 and "errornote" in broken.content.decode()
    made = client.post(url, {"name": "ci", "command": TEMPLATE, "user": users["ada"].pk,
                             "secret": SECRET, "enabled": "on"})  # fmt: skip
    assert made.status_code == 302, made.content.decode()[:2000]
    trigger = Trigger.objects.get(name="ci")
    assert (trigger.user, trigger.command, trigger.secret) == (users["ada"], TEMPLATE, SECRET)
    listed = client.get(reverse("admin:commands_trigger_changelist")).content.decode()
    assert "rejected" in listed.lower()


def test_a_body_over_the_limit_is_a_413(client, trigger, settings):
    settings.HIVE_WEBHOOK_MAX_BYTES = 10
    body = b'{"ref": "refs/tags/v1.0.0"}'

    response = client.post("/hooks/tags", body, content_type="application/json",
                           headers={"X-Hive-Signature-256": signed(body)})  # fmt: skip

    assert response.status_code == 413
    assert response.json()["error"]["fields"] == {"body": ["larger than 10 bytes"]}
    assert not Invocation.objects.exists()


def test_the_readmes_example_makes_a_trigger_and_starts_a_release(live_server_url, users):
    commands_load()  # the shipped commands, /demo:release among them
    readme = (settings.BASE_DIR / "README.md").read_text()
    section = readme[readme.index("### Webhook triggers") :]
    script = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
    script = script.replace("$(.venv/bin/python manage.py hive token admin)", users["admin"].token)
    script = script.replace("http://127.0.0.1:8000", live_server_url)

    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip

    assert done.stdout, done.stderr
    answer = json.loads(done.stdout)
    assert answer["invocation"]["text"] == '/demo:release "1.4.0"'
    assert (answer["invocation"]["source"], answer["invocation"]["user"]) == ("webhook", "admin")
    assert Run.objects.get(pk=answer["run"]["id"]).workflow.name == "cmd:demo:release"


def test_in_the_admin_a_staff_user_makes_triggers_that_run_as_them_only(client, users, release):
    ada = users["ada"]
    ada.is_staff = True
    ada.save()
    grant(ada, "view", "add", "change")
    theirs = Trigger.objects.create(name="theirs", command="/hive:help", user=users["admin"])
    client.force_login(ada)
    url = reverse("admin:commands_trigger_add")
    data = {"name": "ci", "command": TEMPLATE, "secret": SECRET, "enabled": "on"}

    as_admin = client.post(url, {**data, "user": users["admin"].pk})
    assert as_admin.status_code == 200
    assert "only a superuser may make a trigger run as someone else" in as_admin.content.decode()
    assert client.post(url, {**data, "user": ada.pk}).status_code == 302
    assert Trigger.objects.get(name="ci").user == ada
    # The admin's trigger is not hers to see or change.
    changelist = client.get(reverse("admin:commands_trigger_changelist")).content.decode()
    assert "/hooks:release" in changelist and "theirs" not in changelist
    change = reverse("admin:commands_trigger_change", args=[theirs.pk])
    assert client.post(change, {**data, "name": "theirs", "user": ada.pk}).status_code == 302
    assert Trigger.objects.get(pk=theirs.pk).command == "/hive:help"


def test_the_triggers_user_is_throttled_as_at_the_api(client, trigger, settings, fresh_throttles):
    settings.HIVE_COMMAND_THROTTLE = "1/min"
    body = b'{"ref": "refs/tags/v1.0.0"}'

    def deliver(delivery: str):
        return client.post("/hooks/tags", body, content_type="application/json",
                           headers={"X-Hive-Signature-256": signed(body),
                                    "X-Hive-Delivery": delivery})  # fmt: skip

    assert deliver("one").status_code == 201
    throttled = deliver("two")

    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "throttled"
    assert counts() == (1, 1)
    # Not kept as its answer: the sender's retry, once allowed, runs it.
    assert list(TriggerDelivery.objects.values_list("delivery_id", flat=True)) == ["one"]
