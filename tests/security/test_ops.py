"""Issue 15, operations: secrets on disk and in banners (#15), proxy headers (#16),
Flower's metrics (#18), on real processes."""

import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from hive_core.config import secret_key
from hive_core.services import admin_ensure
from ops.processes import hive_argv
from tests.processes import BASE_DIR, ProcessGroup, child_env, free_port, wait_for
from tests.security.conftest import auth

# --- #15: var/secret_key and var/admin_password ------------------------------------

_watched: list[Path] = []
_seen_modes: list[tuple[str, str, int]] = []


def _audit(event: str, args: tuple) -> None:
    # Python's audit hooks see every open, chmod, link and rename: at each one, the
    # watched files must already be private, whatever the umask.
    for path in _watched:
        try:
            mode = stat.S_IMODE(os.lstat(path).st_mode)
        except OSError:
            continue
        _seen_modes.append((event, path.name, mode))


sys.addaudithook(_audit)  # cannot be removed; inert while _watched is empty


@pytest.fixture
def watch_files(monkeypatch):
    """Record the mode of the given files at every audited file operation, and the
    flags and mode of every os.open call, under a umask of 022."""
    opened = []
    real_open = os.open

    def spy_open(path, flags, mode=0o777, *args, **kwargs):
        if Path(path).parent in {p.parent for p in _watched}:
            opened.append((Path(path).name, flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy_open)
    old_umask = os.umask(0o022)

    def watch(*paths: Path):
        _watched[:] = paths
        _seen_modes.clear()
        return _seen_modes, opened

    yield watch
    _watched.clear()
    os.umask(old_umask)


def test_a_generated_secret_key_is_never_readable_by_others(watch_files, tmp_path, monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    modes, opened = watch_files(tmp_path / "secret_key")

    key = secret_key(production=False, directory=tmp_path)

    assert len(key) == 50 and (tmp_path / "secret_key").read_text() == key
    assert modes, "the file was never seen"
    assert {mode for _, _, mode in modes} == {0o600}, modes
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600
    # Created private (O_EXCL, mode 600), not chmod-ed private afterwards.
    [(name, flags, mode)] = opened
    assert name.startswith(".secret_key.") and mode == 0o600
    assert flags & os.O_CREAT and flags & os.O_EXCL
    assert list(tmp_path.iterdir()) == [tmp_path / "secret_key"]  # no temporary left


def test_a_secret_key_already_on_disk_is_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    (tmp_path / "secret_key").write_text("k" * 50)

    assert secret_key(production=False, directory=tmp_path) == "k" * 50


@pytest.mark.django_db
def test_a_generated_admin_password_is_never_readable_by_others(watch_files, tmp_path):
    password_file = tmp_path / "admin_password"
    modes, opened = watch_files(password_file)

    password, created = admin_ensure(username="root", password="", password_file=password_file)

    assert created and password_file.read_text() == password
    assert modes and {mode for _, _, mode in modes} == {0o600}, modes
    [(name, flags, mode)] = opened
    assert name.startswith(".admin_password.") and mode == 0o600 and flags & os.O_EXCL


def _setup(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """A real `manage.py hive setup`, under the usual umask of 022."""
    return subprocess.run(
        hive_argv("setup"),
        cwd=BASE_DIR,
        env=child_env(HIVE_VAR_DIR=str(tmp_path), **env),
        capture_output=True,
        text=True,
        timeout=120,
        umask=0o022,
    )


@pytest.mark.django_db(transaction=True)
def test_setup_never_prints_a_password_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    result = _setup(tmp_path, HIVE_ADMIN_USER="boss", HIVE_ADMIN_PASSWORD="env-secret-pw-1")

    assert result.returncode == 0, result.stderr
    assert "env-secret-pw-1" not in result.stdout + result.stderr
    assert "login       boss / (from HIVE_ADMIN_PASSWORD)" in result.stdout
    assert not (tmp_path / "admin_password").exists()
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600


@pytest.mark.django_db(transaction=True)
def test_setup_prints_the_password_it_generated_once_kept_private(tmp_path, monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("HIVE_ADMIN_PASSWORD", raising=False)
    result = _setup(tmp_path, HIVE_ADMIN_USER="fresh")

    assert result.returncode == 0, result.stderr
    generated = (tmp_path / "admin_password").read_text()
    assert f"login       fresh / {generated}" in result.stdout
    assert stat.S_IMODE((tmp_path / "admin_password").stat().st_mode) == 0o600


# --- #18: Flower's /metrics -----------------------------------------------------------


def test_flower_metrics_need_the_same_basic_auth_as_flower(start_agent, processes):
    start_agent("metered", skills="noop")
    port = free_port()
    flower = processes.start(
        "flower",
        f"--port={port}",
        name="flower",
        HIVE_FLOWER_USER="watcher",
        HIVE_FLOWER_PASSWORD="flower-sec-pw",
    )
    url = f"http://127.0.0.1:{port}"

    def get(path: str, **kwargs) -> httpx.Response | None:
        assert flower.alive(), flower.log()
        try:
            return httpx.get(f"{url}{path}", timeout=5, **kwargs)
        except httpx.TransportError:
            return None

    wait_for(lambda: get("/healthcheck"), timeout=60, what="Flower to answer")
    anonymous = get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="flower"'
    assert "metered" not in anonymous.text and "flower_" not in anonymous.text
    assert get("/metrics", auth=("watcher", "wrong")).status_code == 401

    # With the credentials: the series, the agent's among them once Flower saw it.
    def metrics() -> str:
        response = get("/metrics", auth=("watcher", "flower-sec-pw"))
        assert response.status_code == 200
        return "metered@" in response.text and response.text

    assert "flower_worker_online" in wait_for(metrics, timeout=60, what="the agent's series")
    # The probe of docker-compose.yml stays open, and says nothing but OK.
    health = get("/healthcheck")
    assert (health.status_code, health.text) == (200, "OK")


# --- #16: X-Forwarded-For and X-Forwarded-Proto --------------------------------------


@pytest.fixture
def web_with(transactional_db, redis_url, tmp_path):
    """Start a real `hive web` with the given environment; return its URL and process."""
    group = ProcessGroup(tmp_path)

    def start(**env: str):
        web, url = group.start_web(**env)
        return url, web

    yield start
    group.stop_all()


def _failed_login(url: str, username: str, **headers: str) -> httpx.Response:
    """A browser's failed sign-in: the form (for its CSRF cookie), then a wrong password."""
    with httpx.Client(base_url=url, timeout=10) as browser:
        csrf = browser.get("/accounts/login/").cookies["csrftoken"]
        return browser.post(
            "/accounts/login/",
            data={"username": username, "password": "wrong", "csrfmiddlewaretoken": csrf},
            headers=headers,
        )


def test_a_client_cannot_choose_its_address_or_claim_https_without_a_trusted_proxy(web_with):
    url, web = web_with()

    answer = _failed_login(
        url, "mallory", **{"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https"}
    )

    # Plain HTTP stays plain: were it taken for HTTPS, CSRF would demand a Referer (403).
    assert answer.status_code == 200 and "didn't match" in answer.text
    assert "Referer checking failed" not in web.log()
    wait_for(lambda: "login failed for 'mallory'" in web.log(), timeout=10, what="the log line")
    assert "login failed for 'mallory' from 127.0.0.1" in web.log()
    assert "1.2.3.4" not in web.log()


def test_a_trusted_proxy_forwards_the_client_address_and_https(web_with):
    url, web = web_with(HIVE_TRUSTED_PROXIES="10.0.0.0/8,127.0.0.1")
    forwarded = {"X-Forwarded-For": "9.9.9.9, 1.2.3.4", "X-Forwarded-Proto": "https"}

    # The request is HTTPS to Django now: CSRF checks the Referer as it does on HTTPS.
    no_referer = _failed_login(url, "alice", **forwarded)
    assert no_referer.status_code == 403
    wait_for(lambda: "Referer checking failed - no Referer" in web.log(), timeout=10, what="CSRF")
    answer = _failed_login(url, "alice", **forwarded, Referer=f"https://{url[7:]}/accounts/login/")

    assert answer.status_code == 200 and "didn't match" in answer.text
    # The rightmost address the trusted proxy appended; 9.9.9.9 is the client's own claim.
    wait_for(lambda: "login failed for 'alice'" in web.log(), timeout=10, what="the log line")
    assert "login failed for 'alice' from 1.2.3.4" in web.log()


# --- #19c: approving one's own run ----------------------------------------------------


@pytest.fixture
def own_gate(attackers, make_workflow):
    """A run the runner started, waiting at an approval gate."""
    from coordination.services import run_start

    gate = make_workflow([{"id": "gate", "skill": "noop", "approval": True}])
    return run_start(workflow=gate, params={}, user=attackers["runner"])


_SELF = "you started this run, and HIVE_ALLOW_SELF_APPROVAL is off; another approver must"


def test_without_self_approval_the_api_and_hive_approve_refuse_the_runs_starter(
    web_with, attackers, own_gate
):
    from commands.models import Invocation

    url, _ = web_with(HIVE_ALLOW_SELF_APPROVAL="false")
    runner, admin = attackers["runner"], attackers["admin"]
    approve = f"{url}/api/v1/runs/{own_gate.pk}/steps/gate/approve/"

    refused = httpx.post(approve, headers=auth(runner), timeout=10)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "self_approval"
    assert refused.json()["error"]["message"] == (
        f"step 'gate' of run {own_gate.pk}: {_SELF} approve it"
    )
    command = httpx.post(
        f"{url}/api/v1/commands/execute",
        json={"text": f"/hive:approve {own_gate.pk}"},
        headers=auth(runner),
        timeout=10,
    )
    assert command.status_code == 403, command.text
    assert _SELF in command.json()["error"]["message"]
    assert Invocation.objects.get(text=f"/hive:approve {own_gate.pk}").outcome == "denied"
    assert own_gate.steps.get(key="gate").state == "waiting"

    # Someone else may.
    assert httpx.post(approve, headers=auth(admin), timeout=10).status_code == 200


def test_without_self_approval_the_dashboard_and_admin_refuse_the_runs_starter(
    client, settings, attackers, own_gate
):
    settings.HIVE_ALLOW_SELF_APPROVAL = False
    runner = attackers["runner"]
    runner.is_staff = True
    runner.save()
    client.force_login(runner)

    # The dashboard's Approve button posts to the API with the session.
    page = client.get(f"/runs/{own_gate.pk}/")
    assert b'data-action="approve"' in page.content
    button = client.post(f"/api/v1/runs/{own_gate.pk}/steps/gate/approve/")
    assert button.status_code == 403 and button.json()["error"]["code"] == "self_approval"
    # The admin's bulk action reports the refusal and approves nothing.
    step = own_gate.steps.get(key="gate")
    admin = client.post(
        "/admin/coordination/steprun/",
        {"action": "approve", "_selected_action": [step.pk]},
        follow=True,
    )
    assert _SELF in admin.content.decode().replace("&#x27;", "'")
    step.refresh_from_db()
    assert step.state == "waiting"


def test_with_self_approval_on_the_starter_may_approve(client, settings, attackers, own_gate):
    settings.HIVE_ALLOW_SELF_APPROVAL = True
    client.force_login(attackers["runner"])

    answer = client.post(f"/api/v1/runs/{own_gate.pk}/steps/gate/approve/")

    assert answer.status_code == 200
    assert answer.json()["steps"][0]["history"][0]["approved_by"] == "runner"


def test_self_approval_is_off_by_default_in_production(tmp_path):
    script = "from django.conf import settings; print(settings.HIVE_ALLOW_SELF_APPROVAL)"
    environments = {"development": "True", "production": "False"}
    for hive_env, expected in environments.items():
        result = subprocess.run(
            [sys.executable, str(BASE_DIR / "manage.py"), "shell", "-c", script],
            cwd=BASE_DIR,
            env=child_env(
                HIVE_ENV=hive_env,
                HIVE_VAR_DIR=str(tmp_path),
                SECRET_KEY="k7#Qm2$vX9pL!wR4tY8uI0oP3aS6dF1gH5jK-zN_cB+eM^xV&q8Wr5Ty1Ui",
                ALLOWED_HOSTS="hive.example.com",
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.stdout.split()[-1] == expected, result.stderr


# --- #19b: API tokens expire and can be rotated ---------------------------------------


def _age(user, days: int) -> None:
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    Token.objects.filter(user=user).update(created=timezone.now() - timedelta(days=days))


@pytest.mark.django_db(transaction=True)
def test_a_token_older_than_its_ttl_is_refused_naming_how_to_renew(live_server_url, attackers):
    runner = attackers["runner"]
    _age(runner, 89)
    assert httpx.get(f"{live_server_url}/api/v1/runs/", headers=auth(runner)).status_code == 200

    _age(runner, 91)
    refused = httpx.get(f"{live_server_url}/api/v1/runs/", headers=auth(runner))

    assert refused.status_code == 401
    message = refused.json()["error"]["message"]
    assert message.startswith("API token expired on ")
    assert message.endswith(
        "(HIVE_TOKEN_TTL is 90 days); get a new one on the dashboard's token page or "
        "with: manage.py hive token runner --rotate"
    )


@pytest.mark.django_db(transaction=True)
def test_a_user_rotates_their_own_token_through_the_api(live_server_url, attackers):
    runner, old = attackers["runner"], attackers["runner"].token
    _age(runner, 80)

    rotated = httpx.post(f"{live_server_url}/api/v1/auth/token/rotate/", headers=auth(runner))

    assert rotated.status_code == 201
    new = rotated.json()["token"]
    assert new != old and rotated.json()["expires_at"]
    get = lambda key: httpx.get(  # noqa: E731
        f"{live_server_url}/api/v1/runs/", headers={"Authorization": f"Token {key}"}
    )
    assert get(old).status_code == 401 and get(new).status_code == 200
    # The admin's token is untouched: one rotates one's own only.
    assert get(attackers["admin"].token).status_code == 200
    schema = httpx.get(
        f"{live_server_url}/api/schema/?format=json", headers=auth(attackers["admin"])
    )
    assert "post" in schema.json()["paths"]["/api/v1/auth/token/rotate/"]


def test_a_signed_in_user_rotates_their_token_on_the_dashboard_once_shown(attackers):
    from django.test import Client
    from rest_framework.authtoken.models import Token

    runner, old = attackers["runner"], attackers["runner"].token
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(runner)

    page = browser.get("/token/")
    assert page.status_code == 200 and old.encode() not in page.content
    assert browser.post("/token/").status_code == 403  # no CSRF token: refused
    csrf = page.cookies["csrftoken"].value
    answer = browser.post("/token/", {"csrfmiddlewaretoken": csrf})

    new = Token.objects.get(user=runner).key
    assert new != old and f'<code id="new-token">{new}</code>' in answer.content.decode()
    assert new.encode() not in browser.get("/token/").content  # shown once


@pytest.mark.django_db(transaction=True)
def test_hive_token_rotate_replaces_the_users_token(attackers):
    old = attackers["executor"].token
    result = subprocess.run(
        hive_argv("token", "executor", "--rotate"),
        cwd=BASE_DIR,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    from rest_framework.authtoken.models import Token

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == Token.objects.get(user=attackers["executor"]).key != old
