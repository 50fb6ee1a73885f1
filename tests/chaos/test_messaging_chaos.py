"""Faults against the message bus, on real agent processes: a consumer SIGKILLed over
and over while thousands of messages flow, and poison messages. Every message is
handled exactly once (its handler's row is written once), nothing stays pending, and
a poison message is dead-lettered after exactly HIVE_MAX_DELIVERIES tries."""

import random
import signal
import time

import pytest
import redis

from agents import mailbox
from agents.mailbox import GROUP, Outgoing
from agents.models import Message
from events.models import Event
from tests.processes import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("empty_streams"),
    pytest.mark.chaos,
]


TOTAL = 10_000
CHUNK = 100
KILLS = 5
STREAMS = ["hive:inbox:role:crew", "hive:inbox:agent:steady", "hive:inbox:agent:victim"]


def in_hand(redis_client, agent: str, pid: int) -> int:
    """Entries the agent process has read and not yet acknowledged, in every stream."""
    total = 0
    for stream in STREAMS:
        try:
            consumers = redis_client.xpending(stream, GROUP)["consumers"]
        except redis.ResponseError:
            continue  # no group yet
        total += sum(c["pending"] for c in consumers if c["name"] == f"{agent}:{pid}".encode())
    return total


def pending(redis_client) -> int:
    return sum(redis_client.xpending(stream, GROUP)["pending"] for stream in STREAMS)


def test_10000_messages_are_handled_exactly_once_while_a_consumer_is_killed_every_2_s(
    start_agents, processes, redis_client, chaos_report
):
    _, victim = start_agents({"name": "steady", "role": "crew"}, {"name": "victim", "role": "crew"})
    # Most go to the role (either agent), some to each agent's own inbox: the victim's
    # wait while it is down and are taken over by its next process.
    rng = random.Random(6)
    targets = rng.choices(["role", "steady", "victim"], weights=[8, 1, 1], k=TOTAL)
    # Each takes 1 ms, so a consumer has a batch in hand for a while: a kill catches one.
    plan = [
        Outgoing(kind="test.record", role="crew", payload={"ms": 1}) if t == "role"
        else Outgoing(kind="test.record", to=t, payload={"ms": 1})
        for t in targets
    ]  # fmt: skip
    started = time.monotonic()
    kills, sent = 0, []
    # Sent over ~30 s, so messages are in flight at every kill; slower if the victim's
    # lives are long (a loaded machine starts an agent in seconds): the sends stretch
    # to outlast the kills still to come.
    pace = 30 / (TOTAL / CHUNK)
    next_send = last_kill = time.monotonic()
    consuming_since = None
    while plan:
        now = time.monotonic()
        if now >= next_send:
            sent += mailbox.send_many(plan[:CHUNK], sender="chaos")
            plan = plan[CHUNK:]
            next_send += pace
        holding = in_hand(redis_client, "victim", victim.pid)
        if consuming_since is None and holding:
            consuming_since = now
        # Two seconds into each life, at a moment it holds messages it has not acknowledged.
        if consuming_since is not None and now >= consuming_since + 2 and holding:
            victim.signal(signal.SIGKILL)
            victim.stop()
            kills += 1
            chunks_left = max(len(plan) / CHUNK, 1)
            pace = max(pace, (now - last_kill) * max(KILLS - kills, 1) * 1.2 / chunks_left)
            last_kill = now
            victim = processes.start("agent", "--name=victim", "--role=crew", "--skills=noop",
                                     name=f"victim-{kills}")  # fmt: skip
            consuming_since = None
        time.sleep(0.02)

    ids = [m.pk for m in sent]
    try:
        wait_for(
            lambda: Message.objects.filter(pk__in=ids, state="handled").count() == TOTAL,
            timeout=60,
            what="every message to be handled",
        )
        wait_for(lambda: pending(redis_client) == 0, timeout=20, what="no pending entries")
    finally:
        records = Event.objects.filter(kind="test.handled")
        chaos_report(
            scenario=f"inbox consumer SIGKILLed every 2 s (x{kills})",
            unit="messages",
            lost=TOTAL - Message.objects.filter(pk__in=ids, state="handled").count(),
            duplicated=records.count() - records.values("subject").distinct().count(),
            recovered=Message.objects.filter(pk__in=ids, deliveries__gt=1).count(),
        )
    elapsed = time.monotonic() - started

    assert records.count() == TOTAL  # each handler's effect committed once...
    assert records.values("subject").distinct().count() == TOTAL  # ...for every message
    assert not Message.objects.filter(state="dead").exists()
    assert redis_client.xlen("hive:dead") == 0
    # The faults did happen: deliveries were lost with their consumer and taken over.
    assert kills >= KILLS
    assert Message.objects.filter(pk__in=ids, deliveries__gt=1).exists()
    victims = Message.objects.filter(pk__in=ids, consumer__startswith="victim:")
    assert victims.values("consumer").distinct().count() >= 3
    print(f"{TOTAL} messages, {kills} kills, {elapsed:.1f} s; "
          f"{Message.objects.filter(deliveries__gt=1).count()} redelivered")  # fmt: skip


def test_poison_messages_are_dead_lettered_after_exactly_max_deliveries(
    start_agents, redis_client, settings, chaos_report
):
    start_agents({"name": "p1", "role": "poisoned"}, {"name": "p2", "role": "poisoned"})
    kinds = ["test.record"] * 300 + ["test.poison"] * 10
    random.Random(7).shuffle(kinds)

    sent = mailbox.send_many([Outgoing(kind=k, role="poisoned") for k in kinds], sender="chaos")

    poison = [m for m in sent if m.kind == "test.poison"]
    wait_for(
        lambda: not Message.objects.filter(pk__in=[m.pk for m in sent], state="pending").exists(),
        timeout=60,
        what="every message to be handled or dead",
    )
    limit = settings.HIVE_MAX_DELIVERIES
    dead = {int(f[b"mid"]): f for _, f in redis_client.xrange("hive:dead")}
    handled = Event.objects.filter(kind="test.handled")
    chaos_report(
        scenario="poison messages (10 among 300)",
        unit="messages",
        # A poison message is meant to end dead-lettered, the others handled.
        lost=Message.objects.filter(pk__in=[m.pk for m in sent], state="pending").count(),
        duplicated=handled.count() - handled.values("subject").distinct().count(),
        recovered=len(dead),
        note="recovered = dead-lettered after the cap",
    )
    assert sorted(dead) == [m.pk for m in poison]  # each in the dead-letter stream, once
    for message in Message.objects.filter(pk__in=[m.pk for m in poison]):
        assert (message.state, message.deliveries) == ("dead", limit)
        assert message.error == f"poisoned message {message.pk}"
        assert int(redis_client.get(f"test:poison:{message.pk}")) == limit  # tries
        assert int(dead[message.pk][b"deliveries"]) == limit
    assert Message.objects.filter(state="handled").count() == 300
    assert Event.objects.filter(kind="test.handled").count() == 300
    assert redis_client.xpending("hive:inbox:role:poisoned", GROUP)["pending"] == 0


def test_a_message_that_kills_its_agent_is_dead_lettered_after_max_deliveries(
    start_agent, processes, redis_client, settings, chaos_report
):
    agent = start_agent("doomed")
    sent = mailbox.send(to="doomed", kind="test.crash", sender="chaos")
    after = mailbox.send(to="doomed", kind="test.record", sender="chaos")

    def dead_or_down():
        return not agent.alive() or Message.objects.get(pk=sent.pk).state == "dead"

    # Each delivery kills the agent; a supervisor (here, the test) starts it again.
    restarts = 0
    while restarts <= 10:
        wait_for(dead_or_down, timeout=30, what="the agent to die or the message to be dead")
        if agent.alive():
            break
        agent.stop()
        agent = processes.start("agent", "--name=doomed", name=f"doomed-{restarts}")
        restarts += 1

    message = Message.objects.get(pk=sent.pk)
    limit = settings.HIVE_MAX_DELIVERIES
    # Killed on deliveries 1..limit; the next process took it over as delivery limit + 1
    # and dead-lettered it without running it.
    assert restarts == limit
    assert (message.state, message.deliveries) == ("dead", limit)
    assert message.error == (
        f"delivered {limit} times without being acknowledged (did its handler kill the agent?)"
    )
    ((_, dead),) = redis_client.xrange("hive:dead")
    assert int(dead[b"mid"]) == sent.pk and int(dead[b"deliveries"]) == limit
    # The message read in the same batch did not count the poison's deliveries.
    wait_for(
        lambda: Message.objects.get(pk=after.pk).state == "handled",
        timeout=30,
        what="the message behind it to be handled",
    )
    chaos_report(
        scenario="poison message (kills its agent)",
        unit="messages",
        lost=Message.objects.filter(pk__in=[sent.pk, after.pk], state="pending").count(),
        duplicated=Event.objects.filter(kind="test.handled").count() - 1,
        recovered=int(message.state == "dead"),
        note=f"agent restarted {restarts} times; dead-lettered",
    )
    assert Message.objects.get(pk=after.pk).deliveries <= 2
    assert agent.alive()
