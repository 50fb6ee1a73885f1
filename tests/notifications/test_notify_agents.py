"""Notifications on real processes: a run fails on a real agent, and the real
coordinator's leader pass mails a real SMTP server (aiosmtpd, started here) and posts
a signed webhook to a local HTTP server that answers 500 first, then 200."""

import json
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller
from django.contrib.auth.models import User

from coordination.services import run_start
from notifications.models import Delivery, Subscription
from notifications.services import webhook_signature
from tests.httpserver import StubServer
from tests.processes import free_port, wait_for
from tests.runs import wait_run

pytestmark = pytest.mark.django_db(transaction=True)


class Inbox:
    """aiosmtpd's handler: keeps every message it is given."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


@pytest.fixture
def flaky_hook():
    """Answers 500 to the first request, 200 to every later one."""
    server = StubServer(lambda r: (500 if len(server.requests) == 1 else 200, {}, b"")).start()
    yield server
    server.stop()


def test_a_failed_run_mails_and_posts_a_signed_webhook_retried_after_a_500(
    processes, start_agent, make_workflow, smtp, flaky_hook
):
    controller, inbox = smtp
    owner = User.objects.create_user("owner", email="owner@example.com")
    Subscription.objects.create(user=owner, workflow="doomed", outcomes=["failed"], email=True,
                                webhook_url=flaky_hook.url, webhook_secret="s3cret")  # fmt: skip
    processes.start("coordinator", name="coordinator", EMAIL_HOST="127.0.0.1",
                    EMAIL_PORT=str(controller.port), HIVE_NOTIFY_BACKOFF="1",
                    HIVE_NOTIFY_WEBHOOK_ALLOWED_HOSTS="127.0.0.1")  # fmt: skip
    start_agent("notify", skills="test.fail")
    workflow = make_workflow([{"id": "bad", "skill": "test.fail"}], name="doomed")

    run = wait_run(run_start(workflow=workflow, params={}, user=owner))
    assert run.state == "failed"

    sent = lambda: Delivery.objects.filter(status="sent").count() == 2  # noqa: E731
    wait_for(sent, timeout=30, what="the email and the webhook to be sent")
    (recipients, message), = inbox.messages  # fmt: skip
    assert recipients == ["owner@example.com"]
    assert message["Subject"] == f"[Hive] run {run.pk} (doomed) failed"
    assert "this step always fails" in message.get_payload()

    first, second = flaky_hook.requests
    assert first.body == second.body
    signature = second.headers["X-Hive-Signature-256"]
    assert signature == webhook_signature(secret="s3cret", body=second.body)
    notice = json.loads(second.body)
    assert (notice["event"], notice["run"], notice["state"]) == ("run.failed", run.pk, "failed")

    email = Delivery.objects.get(channel="email")
    hook = Delivery.objects.get(channel="webhook")
    assert (email.attempts, email.recipient) == (1, "owner@example.com")
    assert hook.attempts == 2
    assert [(a["status"], a["error"]) for a in hook.attempt_log] == [(500, "HTTP 500"), (200, "")]
    assert hook.response_status == 200 and hook.sent_at is not None
