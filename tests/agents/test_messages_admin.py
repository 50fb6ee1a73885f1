"""The Message admin: pending, handled and dead messages are listed; dead ones can be
sent again as new messages."""

import pytest
from django.urls import reverse

from agents.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


def _message(state: str, **fields) -> Message:
    defaults = {"stream": "hive:inbox:agent:a1", "sender": "ops", "recipient": "a1",
                "kind": "note", "payload": {"text": "hi"}}  # fmt: skip
    return Message.objects.create(state=state, **{**defaults, **fields})


def test_the_admin_lists_messages_by_state(admin_client):
    _message("pending")
    _message("handled")
    _message("dead", error="agent 'a1' has no handler for messages of kind 'note'")
    url = reverse("admin:agents_message_changelist")

    everything = admin_client.get(url)
    dead = admin_client.get(url, {"state__exact": "dead"})

    assert everything.status_code == 200 and everything.context["cl"].result_count == 3
    assert dead.context["cl"].result_count == 1
    assert b"has no handler for messages of kind" in dead.content


def test_dead_messages_can_be_sent_again_as_new_messages(admin_client, redis_client):
    dead = _message("dead", error="boom", recipient="role:builders",
                    stream="hive:inbox:role:builders", correlation_id="c-1")  # fmt: skip
    handled = _message("handled")

    response = admin_client.post(
        reverse("admin:agents_message_changelist"),
        {"action": "send_again", "_selected_action": [dead.pk, handled.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == [
        "sent 1 again; 1 not dead, left alone"
    ]
    again = Message.objects.get(state="pending")
    assert (again.recipient, again.stream, again.kind, again.payload, again.correlation_id) == (
        "role:builders", "hive:inbox:role:builders", "note", {"text": "hi"}, "c-1"
    )  # fmt: skip
    assert again.sender == "user:admin"
    assert redis_client.xlen("hive:inbox:role:builders") >= 1
