"""/ws/events/ against hostile pages and messages (issue 15 #11) on the real daphne: only
Hive's own origin (or a trusted one) opens a socket, and a hostile message is answered
with an error frame while the socket keeps working."""

import json
from socket import create_connection

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.dashboard.test_consumer import open_socket, receive, session_cookie
from tests.hive_project.test_config import _manage
from tests.processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("[" * 100_000 + "]" * 100_000, "longer than 4096 characters"),
        ("[" * 2000 + "]" * 2000, "JSON nested too deep"),
    ],
)
def test_a_deeply_nested_message_is_an_error_frame_not_a_traceback(
    live_server_url, attackers, message, error
):
    cookie = session_cookie(attackers["nobody"])
    with open_socket(live_server_url, cookie=cookie) as socket:
        socket.send(message)
        assert receive(socket) == {"type": "error", "error": error}
        socket.send(json.dumps({"subscribe": "overview"}))
        assert receive(socket) == {"type": "subscribed", "group": "overview"}


# The origin check (issue 15 #11): a browser sends the session cookie with a WebSocket
# handshake from any page, so only the Origin tells Hive's dashboard from another site.


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _refused(live_server_url, *, cookie: str, origin: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        open_socket(live_server_url, cookie=cookie, origin=origin)
    return refused.value.response.status_code


def test_a_page_of_hive_itself_opens_a_socket(live_server_url, attackers):
    cookie = session_cookie(attackers["nobody"])
    with open_socket(live_server_url, cookie=cookie, origin=live_server_url) as socket:
        socket.send(json.dumps({"subscribe": "overview"}))
        assert receive(socket) == {"type": "subscribed", "group": "overview"}


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:9999",  # another local app, on another port
        "https://127.0.0.1:{port}",  # Hive is served on http here: another scheme
        "http://localhost:{port}",  # in ALLOWED_HOSTS, but not the host the page used
        "null",  # a sandboxed iframe or a file:// page
    ],
)
def test_a_page_of_another_origin_cannot_open_a_socket_with_the_users_cookie(
    live_server_url, attackers, origin
):
    cookie = session_cookie(attackers["admin"])
    origin = origin.format(port=_port(live_server_url))
    assert _refused(live_server_url, cookie=cookie, origin=origin) == 403


def test_a_rebound_host_name_is_not_its_own_origin(live_server_url, attackers):
    """DNS rebinding: the attacker's name points at Hive, so Origin and Host agree;
    the Host is not one of ALLOWED_HOSTS."""
    port = _port(live_server_url)
    headers = {
        "Origin": f"http://evil.example:{port}",
        "Cookie": session_cookie(attackers["admin"]),
    }
    with (
        create_connection(("127.0.0.1", port)) as sock,
        pytest.raises(InvalidStatus) as refused,
    ):
        connect(f"ws://evil.example:{port}/ws/events/", sock=sock, additional_headers=headers)
    assert refused.value.response.status_code == 403


def test_an_origin_in_csrf_trusted_origins_opens_a_socket(processes, attackers):
    """A front end on another origin that the operator trusts, as Django's CSRF check
    trusts it for forms; any other port of that host is still refused."""
    trusted = f"http://127.0.0.1:{free_port()}"
    _, url = processes.start_web(CSRF_TRUSTED_ORIGINS=trusted)
    cookie = session_cookie(attackers["nobody"])

    with open_socket(url, cookie=cookie, origin=trusted) as socket:
        socket.send(json.dumps({"subscribe": "overview"}))
        assert receive(socket) == {"type": "subscribed", "group": "overview"}
    assert _refused(url, cookie=cookie, origin="http://127.0.0.1:9999") == 403


def test_allowed_hosts_star_is_refused_in_production(tmp_path):
    """`*` would turn off the Host check the origin check relies on, silently."""
    result = _manage(
        "check",
        HIVE_VAR_DIR=str(tmp_path),
        HIVE_ENV="production",
        SECRET_KEY="k7#Qm2$vX9pL!wR4tY8uI0oP3aS6dF1gH5jK-zN_cB+eM^xV&q8Wr5Ty1Ui",
        ALLOWED_HOSTS="hive.example.com,*",
    )
    assert result.returncode == 1
    assert result.stderr == (
        "hive: configuration error: ALLOWED_HOSTS: '*' accepts any Host header; in production "
        "list the host names Hive is served on (e.g. hive.example.com)\n"
    )
