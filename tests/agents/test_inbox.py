"""The inbox consumer's mechanics, driven turn by turn in this process against the real
Redis and database: redelivery, failures in a batch, retries and dead letters,
trimming, a wiped Redis, a sender that could not reach Redis. The same code runs in
every agent process; tests/agents/test_messaging.py proves it there."""

import time

import pytest
import redis

from agents import inbox as inbox_module
from agents import mailbox
from agents.inbox import Inbox
from agents.mailbox import GROUP, MessageError, Outgoing
from agents.models import Message
from events.models import Event
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
STREAM = "hive:inbox:agent:solo"


@pytest.fixture
def make_inbox(redis_url):
    made = []

    def make(pid: int = 1, *, agent: str = "solo", role: str = "soloists") -> Inbox:
        made.append(Inbox(agent=agent, role=role, pid=pid))
        return made[-1]

    yield make
    for inbox in made:
        inbox.client.close()


@pytest.fixture(autouse=True)
def empty_streams(redis_client):
    """Streams outlive a test's database rows: start each test with none."""
    for key in redis_client.scan_iter("hive:*"):
        redis_client.delete(key)


def records(message_id: int) -> int:
    return Event.objects.filter(kind="test.handled", subject=f"message:{message_id}").count()


def test_a_batch_is_handled_in_one_turn_and_acknowledged(make_inbox, redis_client):
    inbox = make_inbox()
    inbox.poll()  # creates the groups
    sent = mailbox.send_many([Outgoing(kind="test.record", to="solo") for _ in range(5)])

    assert inbox.poll() == 5

    rows = Message.objects.filter(pk__in=[m.pk for m in sent])
    assert set(rows.values_list("state", "deliveries", "consumer")) == {("handled", 1, "solo:1")}
    assert [records(m.pk) for m in sent] == [1] * 5
    assert redis_client.xpending(STREAM, GROUP)["pending"] == 0
    assert [r.stream_id for r in rows.order_by("id")] == [
        entry_id.decode() for entry_id, _ in redis_client.xrange(STREAM)
    ]
    inbox.maintain()  # acked_at and the event are written a little later, not per batch
    (event,) = Event.objects.filter(kind="message.handled")
    assert event.data == {"count": 5, "first": sent[0].pk, "last": sent[-1].pk}
    assert event.subject == "agent:solo"
    assert rows.filter(acked_at__isnull=True).count() == 0


def test_a_redelivered_message_already_handled_is_only_acknowledged(make_inbox, redis_client):
    first = make_inbox(pid=1)
    first.poll()
    sent = mailbox.send(to="solo", kind="test.record")
    # The process dies after its commit and before its XACK.
    first.delivery._acknowledge = lambda *args, **kwargs: None
    first.poll()
    assert redis_client.xpending(STREAM, GROUP)["pending"] == 1

    second = make_inbox(pid=2)
    second.poll()  # takes over what pid 1 left pending

    assert records(sent.pk) == 1
    row = Message.objects.get(pk=sent.pk)
    assert (row.state, row.consumer, row.deliveries) == ("handled", "solo:1", 1)
    assert redis_client.xpending(STREAM, GROUP)["pending"] == 0


def test_a_failing_message_in_a_batch_fails_alone(make_inbox, redis_client):
    inbox = make_inbox()
    inbox.poll()
    good1, bad, good2 = mailbox.send_many(
        [Outgoing(kind="test.record", to="solo"), Outgoing(kind="test.poison", to="solo"),
         Outgoing(kind="test.record", to="solo")]
    )  # fmt: skip

    inbox.poll()

    assert (records(good1.pk), records(good2.pk)) == (1, 1)
    row = Message.objects.get(pk=bad.pk)
    assert (row.state, row.deliveries, row.error) == ("pending", 1, f"poisoned message {bad.pk}")
    assert int(redis_client.get(f"test:poison:{bad.pk}")) == 1  # one try per delivery
    pending = redis_client.xpending_range(STREAM, GROUP, "-", "+", 10)
    assert [p["message_id"].decode() for p in pending] == [row.stream_id]


def test_a_failing_message_is_retried_after_the_idle_time_then_dead_lettered(
    make_inbox, redis_client, settings
):
    settings.HIVE_INBOX_CLAIM_IDLE = 100
    settings.HIVE_MAX_DELIVERIES = 3
    inbox = make_inbox()
    inbox._interval = 0.05
    inbox.poll()
    bad = mailbox.send(to="solo", kind="test.poison")

    deadline = time.monotonic() + 20
    while Message.objects.get(pk=bad.pk).state == "pending" and time.monotonic() < deadline:
        inbox.poll()

    row = Message.objects.get(pk=bad.pk)
    assert (row.state, row.deliveries, row.error) == ("dead", 3, f"poisoned message {bad.pk}")
    assert int(redis_client.get(f"test:poison:{bad.pk}")) == 3
    ((_, dead),) = redis_client.xrange("hive:dead")
    assert {k.decode(): v.decode() for k, v in dead.items()} == {
        "stream": STREAM, "id": row.stream_id, "mid": str(bad.pk), "kind": "test.poison",
        "from": "hive", "to": "solo", "cid": "", "payload": "{}",
        "error": f"poisoned message {bad.pk}", "deliveries": "3", "consumer": "solo:1",
    }  # fmt: skip
    assert redis_client.xpending(STREAM, GROUP)["pending"] == 0


def test_a_message_of_an_unknown_kind_is_dead_lettered_at_once(make_inbox):
    inbox = make_inbox()
    inbox.poll()
    sent = mailbox.send(to="solo", kind="nobody.handles.this")

    inbox.poll()

    row = Message.objects.get(pk=sent.pk)
    assert (row.state, row.deliveries) == ("dead", 1)
    assert row.error == "agent 'solo' has no handler for messages of kind 'nobody.handles.this'"


def test_trimming_keeps_every_pending_and_undelivered_entry(make_inbox, redis_client):
    inbox = make_inbox()
    inbox.poll()
    sent = mailbox.send_many(
        [Outgoing(kind=kind, to="solo")
         for kind in ["test.record", "test.record", "test.poison", "test.record"]]
    )  # fmt: skip
    inbox.poll()  # the poison message stays pending, the others are acknowledged
    later = mailbox.send_many([Outgoing(kind="test.record", to="solo") for _ in range(2)])
    before = [entry_id for entry_id, _ in redis_client.xrange(STREAM)]

    inbox.trim(STREAM)

    kept = [entry_id for entry_id, _ in redis_client.xrange(STREAM)]
    assert len(before) == 6
    assert kept == before[2:]  # from the oldest pending entry on; the undelivered ones too
    assert kept[0].decode() == Message.objects.get(pk=sent[2].pk).stream_id
    inbox.poll()
    assert [records(m.pk) for m in later] == [1, 1]


def test_trimming_without_pending_entries_keeps_the_undelivered_ones(make_inbox, redis_client):
    inbox = make_inbox()
    inbox.poll()
    mailbox.send_many([Outgoing(kind="test.record", to="solo") for _ in range(3)])
    inbox.poll()
    mailbox.send(to="solo", kind="test.record")
    before = [entry_id for entry_id, _ in redis_client.xrange(STREAM)]

    inbox.trim(STREAM)

    kept = [entry_id for entry_id, _ in redis_client.xrange(STREAM)]
    last_delivered = redis_client.xinfo_groups(STREAM)[0]["last-delivered-id"]
    assert kept == before[2:] == [last_delivered, before[3]]


def test_the_inbox_survives_redis_being_wiped_and_sends_lost_messages_again(
    make_inbox, redis_client
):
    inbox = make_inbox()
    inbox.poll()
    sent = mailbox.send_many([Outgoing(kind="test.record", to="solo") for _ in range(3)])

    redis_client.flushdb()  # Hive's whole Redis database: streams, groups, pending
    with pytest.raises(redis.ResponseError, match="NOGROUP"):
        inbox.poll()
    inbox._needs_setup = True  # what the thread's loop does on NOGROUP
    inbox.poll()
    inbox.poll()

    assert [records(m.pk) for m in sent] == [1, 1, 1]
    assert set(Message.objects.values_list("state", flat=True)) == {"handled"}
    assert redis_client.xpending(STREAM, GROUP)["pending"] == 0


def test_messages_whose_sender_could_not_reach_redis_are_sent_by_the_inbox(
    make_inbox, monkeypatch, redis_client
):
    inbox = make_inbox()
    inbox.poll()
    unreachable = redis.Redis(unix_socket_path="/nonexistent/redis.sock", socket_timeout=1)
    monkeypatch.setattr(mailbox, "redis_client", lambda: unreachable)
    sent = mailbox.send(to="solo", kind="test.record")
    monkeypatch.undo()
    assert redis_client.xlen(STREAM) == 0

    assert inbox.resend_missing(age=0) == 1
    inbox.poll()

    row = Message.objects.get(pk=sent.pk)
    assert row.state == "handled" and row.stream_id
    assert records(sent.pk) == 1
    assert inbox.resend_missing(age=0) == 0


def test_large_payloads_are_refused_and_nothing_is_sent(redis_client, settings):
    settings.HIVE_MESSAGE_MAX_BYTES = 100

    with pytest.raises(MessageError) as raised:
        mailbox.send(to="solo", kind="note", payload={"text": "x" * 200})

    assert str(raised.value) == (
        "payload: 211 bytes is over the limit of 100 bytes (HIVE_MESSAGE_MAX_BYTES)"
    )
    assert raised.value.field == "payload"
    assert not Message.objects.exists() and not redis_client.exists(STREAM)


def test_bad_messages_are_refused_naming_the_field(redis_client):
    cases = [
        ({"kind": "note"}, "to: give an agent (to) or a role, not both or neither"),
        ({"kind": "Bad Kind", "to": "solo"},
         "kind: 'Bad Kind' is not a message kind (lowercase letters, digits, . _ - :)"),
        ({"kind": "note", "to": "solo", "payload": {"when": object()}},
         "payload: not JSON: Object of type object is not JSON serializable"),
        ({"kind": "note", "to": "solo", "payload": {"a": ["\ud800"]}},
         "payload.a.0: holds a lone surrogate (\\ud800), which is not Unicode text"),
        ({"kind": "note", "role": "builder", "payload": {"\ud800": 1}},
         "payload: a key holds a lone surrogate (\\ud800), which is not Unicode text"),
        ({"kind": "note", "to": "solo", "payload": {"n": float("nan")}},
         "payload.n: nan is not a finite number"),
    ]  # fmt: skip
    for arguments, error in cases:
        with pytest.raises(MessageError) as raised:
            mailbox.send(**arguments)
        assert str(raised.value) == error
    assert not Message.objects.exists()


def test_sending_again_with_the_same_idempotency_key_sends_nothing(make_inbox):
    first = mailbox.send(to="solo", kind="test.record", idempotency_key="run:1:notify:1")
    again = mailbox.send(to="solo", kind="test.record", idempotency_key="run:1:notify:1")

    assert again.pk == first.pk
    assert Message.objects.count() == 1


def test_stop_ends_the_thread_within_one_block(make_inbox, redis_client):
    inbox = make_inbox()
    inbox.start()
    # Its connection's last command (the test's only inbox on this database) once it blocks.
    db = str(redis_client.connection_pool.connection_kwargs.get("db", 0))
    wait_for(
        lambda: any((c["db"], c["cmd"]) == (db, "xreadgroup") for c in redis_client.client_list()),
        timeout=10,
        what="the inbox to block in XREADGROUP",
    )

    started = time.monotonic()
    inbox.stop()

    assert not inbox.alive()
    assert time.monotonic() - started < inbox_module.BLOCK_MS / 1000 + 1
