"""Hostile WebSocket messages (issue 15 #11) on the real daphne: answered with an error
frame, and the socket keeps working."""

import json

import pytest

from tests.dashboard.test_consumer import open_socket, receive, session_cookie

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
