"""Notifications on the test database (the engine's steps run in this process,
tests/coordination/harness.py; Django's locmem email backend): a failed run mails
each subscriber who may see it, once however often the pass runs; a webhook is
signed and retried with backoff. The real processes' version is test_notify_agents.py."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core import mail
from django.utils import timezone

from coordination.services import run_start
from notifications import services
from notifications.models import Delivery, Subscription
from tests.httpserver import StubServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def agent(harness):
    return harness.agent("notify", skills="noop,test.fail", concurrency=1)


@pytest.fixture
def failing(make_workflow):
    return make_workflow([{"id": "bad", "skill": "test.fail"}], name="doomed")


def notice(**lag) -> None:
    """The leader's pass, reading events at once (no lag)."""
    services.events_notice(lag=timedelta(0))
    services.deliveries_send()


def user(name: str, **fields) -> User:
    return User.objects.create_user(name, email=f"{name}@example.com", **fields)


def test_a_failed_run_mails_each_subscriber_who_may_see_it_once(harness, agent, failing):
    owner, watcher, outsider = user("owner"), user("watcher"), user("outsider")
    watcher.user_permissions.add(Permission.objects.get(codename="view_run"))
    team = Group.objects.create(name="team")
    team.user_set.add(watcher, outsider)
    Subscription.objects.create(user=owner, workflow="doomed", outcomes=["failed"], email=True)
    Subscription.objects.create(group=team, outcomes=["failed", "succeeded"], email=True)
    Subscription.objects.create(user=outsider, outcomes=["failed"], email=True)
    Subscription.objects.create(user=owner, workflow="other", outcomes=["failed"], email=True)

    run = harness.settle(run_start(workflow=failing, params={}, user=owner))
    assert run.state == "failed"
    notice()
    notice()  # a second pass, as after a restart: nothing twice

    assert sorted(m.to[0] for m in mail.outbox) == ["owner@example.com", "watcher@example.com"]
    message = mail.outbox[0]
    assert message.subject == f"[Hive] run {run.pk} (doomed) failed"
    assert "this step always fails" in message.body
    assert f"/runs/{run.pk}/" in message.body
    assert Delivery.objects.filter(status="sent", attempts=1).count() == 2
    # The outsider may not see the owner's run: neither alone nor through the group.
    assert not Delivery.objects.filter(user=outsider).exists()


def test_the_cursor_reread_creates_no_second_delivery(harness, agent, failing):
    owner = user("owner")
    Subscription.objects.create(user=owner, outcomes=["failed"], email=True)
    harness.settle(run_start(workflow=failing, params={}, user=owner))
    services.events_notice(lag=timedelta(0))
    from notifications.models import Cursor

    Cursor.objects.update(last_event_id=0)  # as if the cursor's move were lost
    assert services.events_notice(lag=timedelta(0)) == 1  # made again, kept once
    assert Delivery.objects.count() == 1


def test_waiting_for_approval_is_noticed_but_waiting_for_an_agent_is_not(
    harness, agent, make_workflow
):
    owner = user("owner")
    Subscription.objects.create(user=owner, outcomes=["waiting"], email=True)
    workflow = make_workflow([{"id": "gate", "skill": "noop", "approval": True}])
    nobody = make_workflow([{"id": "lonely", "skill": "test.upper", "with": {"text": "x"}}])

    gated = harness.settle(run_start(workflow=workflow, params={}, user=owner))
    run_start(workflow=nobody, params={}, user=owner)
    notice()

    assert [(d.run_id, d.outcome) for d in Delivery.objects.all()] == [(gated.pk, "waiting")]
    assert "waits for approval" in mail.outbox[0].subject
    assert "Step: gate" in mail.outbox[0].body


def test_a_webhook_is_signed_and_retried_with_backoff(harness, agent, failing, settings):
    settings.HIVE_NOTIFY_MAX_ATTEMPTS = 2
    settings.HIVE_NOTIFY_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    answers = iter([500, 200])
    server = StubServer(lambda r: (next(answers), {}, b"")).start()
    try:
        owner = user("owner")
        Subscription.objects.create(user=owner, outcomes=["failed"], webhook_url=server.url,
                                    webhook_secret="s3cret")  # fmt: skip
        run = harness.settle(run_start(workflow=failing, params={}, user=owner))
        notice()
        delivery = Delivery.objects.get()
        assert (delivery.status, delivery.attempts, delivery.last_error) == (
            "pending",
            1,
            "HTTP 500",
        )
        assert delivery.next_attempt_at > timezone.now()
        notice()  # not yet due
        assert len(server.requests) == 1
        Delivery.objects.update(next_attempt_at=timezone.now())
        notice()
    finally:
        server.stop()

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("sent", 2, 200)
    assert [a["status"] for a in delivery.attempt_log] == [500, 200]
    request = server.requests[-1]
    expected = services.webhook_signature(secret="s3cret", body=request.body)
    assert request.headers["X-Hive-Signature-256"] == expected
    body = json.loads(request.body)
    assert (body["event"], body["run"], body["workflow"], body["state"]) == (
        "run.failed",
        run.pk,
        "doomed",
        "failed",
    )


def test_a_delivery_out_of_tries_fails(harness, agent, failing, settings):
    settings.HIVE_NOTIFY_MAX_ATTEMPTS = 1
    settings.HIVE_NOTIFY_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1:9"]
    owner = user("owner")
    Subscription.objects.create(user=owner, outcomes=["failed"], webhook_url="http://127.0.0.1:9/")
    harness.settle(run_start(workflow=failing, params={}, user=owner))
    notice()
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert delivery.last_error.startswith("ConnectError")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/", "http://169.254.169.254/latest/",
                                 "http://[::1]/", "http://10.0.0.1/"])  # fmt: skip
def test_a_webhook_to_a_private_address_is_refused_once_and_not_retried(
    harness, agent, failing, url
):
    owner = user("owner")
    Subscription.objects.create(user=owner, outcomes=["failed"], webhook_url=url,
                                webhook_secret="s")  # fmt: skip
    harness.settle(run_start(workflow=failing, params={}, user=owner))
    notice()

    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 1, None)
    assert "not a public address" in delivery.last_error


def test_a_command_subscription_follows_only_its_commands_runs(harness, agent, failing):
    from commands.executing import command_execute
    from commands.models import Command

    owner = user("owner")
    owner.is_superuser = True  # may run the command, whatever its permission
    owner.save()
    doom = Command.objects.create(name="doom", workflow=failing)
    Subscription.objects.create(user=owner, command=doom, outcomes=["failed"], email=True)

    by_command = command_execute(text="/doom", user=owner, source="api").run
    harness.settle(by_command)
    harness.settle(run_start(workflow=failing, params={}, user=owner))  # not by the command
    notice()

    assert [d.run_id for d in Delivery.objects.all()] == [by_command.pk]


def test_a_pass_reads_a_bounded_number_of_outcomes_and_the_next_goes_on(harness, agent, failing):
    owner = user("owner")
    Subscription.objects.create(user=owner, outcomes=["failed"], email=True)
    first = harness.settle(run_start(workflow=failing, params={}, user=owner))
    second = harness.settle(run_start(workflow=failing, params={}, user=owner))

    assert services.events_notice(limit=1, lag=timedelta(0)) == 1
    assert services.events_notice(limit=1, lag=timedelta(0)) == 1
    assert services.events_notice(limit=1, lag=timedelta(0)) == 0
    assert sorted(Delivery.objects.values_list("run_id", flat=True)) == [first.pk, second.pk]


def test_a_pass_that_fails_moves_no_cursor(harness, agent, failing, monkeypatch):
    from notifications.models import Cursor

    owner = user("owner")
    Subscription.objects.create(user=owner, outcomes=["failed"], email=True)
    harness.settle(run_start(workflow=failing, params={}, user=owner))

    def broken(*args, **kwargs):
        raise RuntimeError("database gone")

    monkeypatch.setattr(Delivery.objects, "bulk_create", broken)
    with pytest.raises(RuntimeError):
        services.events_notice(lag=timedelta(0))
    assert not Cursor.objects.filter(last_event_id__gt=0).exists()
    monkeypatch.undo()
    assert services.events_notice(lag=timedelta(0)) == 1
