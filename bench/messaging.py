"""Agent messaging end to end on one agent: send -> handled (the handler's transaction
committed) -> acknowledged, batched and one message at a time, and the round trip of
one request; beside plain redis-py XADD / XREADGROUP / XACK on the same Redis, with a
consumer process of its own, measured in the same run."""

import statistics
import sys
import time
import uuid

import redis
from django.conf import settings

from agents import mailbox
from agents.mailbox import GROUP, Outgoing
from agents.models import Agent, Message
from bench._table import Result
from tests.processes import ProcessGroup, wait_for

AGENT = "bench-msg"
BATCHED = 20_000
CHUNK = 500  # messages per send_many
SINGLE = 2_000
ROUND_TRIPS = 1_000
WARM_UP = 500
RAW_STREAM = "bench:raw"


def run(group: ProcessGroup) -> list[Result]:
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    for key in (mailbox.agent_stream(AGENT), RAW_STREAM):
        client.delete(key)
    # The agent logs at WARNING: the benchmark measures messaging, not logging.
    agent = group.start("agent", f"--name={AGENT}", "--skills=noop", name="agent",
                        HIVE_LOG_LEVEL="WARNING")  # fmt: skip
    wait_for(
        lambda: Agent.objects.filter(name=AGENT, status="idle").exists(),
        timeout=60,
        what="the bench agent",
    )
    # Its inbox answers (an idle consumer shows in XINFO only once it has read, on Redis 6).
    reply = mailbox.request(to=AGENT, kind="ping", timeout=30, sender="bench")
    assert reply["pid"] == agent.pid, reply
    group.start_argv([sys.executable, "-m", "bench._raw_streams", settings.REDIS_URL, RAW_STREAM],
                     name="raw-streams")  # fmt: skip

    _hive_batched(client, WARM_UP)
    hive_batched = _hive_batched(client, BATCHED)
    hive_single = _hive_single(client, SINGLE)
    hive_trips = _hive_round_trips(ROUND_TRIPS)

    _raw_run(client, WARM_UP, pipelined=True)
    raw_batched = _raw_run(client, BATCHED, pipelined=True)
    raw_single = _raw_run(client, SINGLE, pipelined=False)
    raw_trips = _raw_round_trips(client, ROUND_TRIPS)

    name, base = "messaging", "raw redis-py"
    hive_q, raw_q = _quantiles(hive_trips), _quantiles(raw_trips)
    return [
        Result(name, f"end to end, batched ({CHUNK} a send), msg/s", hive_batched, raw_batched,
               "/s", f"{base}, pipelined XADD", ">= 6945/s"),
        Result(name, "end to end, one send at a time, msg/s", hive_single, raw_single, "/s",
               f"{base}, XADD one by one", ""),
        Result(name, "one message, request -> reply p50", hive_q[0], raw_q[0], "ms",
               f"{base} round trip", ""),
        Result(name, "one message, request -> reply p99", hive_q[1], raw_q[1], "ms",
               f"{base} round trip", "<= 5 ms"),
    ]  # fmt: skip


def _wait_done(client, first: Message, last: Message, count: int) -> None:
    """Until the last message is handled and nothing is pending (all acknowledged);
    one consumer handles its stream in order, so the last one handled means all were."""
    stream = mailbox.agent_stream(AGENT)
    while not (
        Message.objects.filter(pk=last.pk, state=Message.State.HANDLED).exists()
        and client.xpending(stream, GROUP)["pending"] == 0
    ):
        time.sleep(0.005)
    handled = Message.objects.filter(
        pk__gte=first.pk, pk__lte=last.pk, state=Message.State.HANDLED
    ).count()
    assert handled == count, f"{handled} of {count} handled"


def _hive_batched(client, count: int) -> float:
    started = time.perf_counter()
    sent = []
    for offset in range(0, count, CHUNK):
        batch = [Outgoing(kind="note", to=AGENT, payload={"n": offset + i})
                 for i in range(min(CHUNK, count - offset))]  # fmt: skip
        sent += mailbox.send_many(batch, sender="bench")
    _wait_done(client, sent[0], sent[-1], count)
    return count / (time.perf_counter() - started)


def _hive_single(client, count: int) -> float:
    started = time.perf_counter()
    sent = [mailbox.send(to=AGENT, kind="note", payload={"n": i}, sender="bench")
            for i in range(count)]  # fmt: skip
    _wait_done(client, sent[0], sent[-1], count)
    return count / (time.perf_counter() - started)


def _hive_round_trips(count: int) -> list[float]:
    for _ in range(50):
        mailbox.request(to=AGENT, kind="ping", timeout=10, sender="bench")
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        mailbox.request(to=AGENT, kind="ping", timeout=10, sender="bench")
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _raw_run(client, count: int, *, pipelined: bool) -> float:
    fields = {"kind": "note", "from": "bench", "to": AGENT, "cid": "", "reply": "",
              "payload": '{"n":0}'}  # fmt: skip
    started = time.perf_counter()
    last = None
    if pipelined:
        for offset in range(0, count, CHUNK):
            pipe = client.pipeline(transaction=False)
            for i in range(min(CHUNK, count - offset)):
                pipe.xadd(RAW_STREAM, {**fields, "mid": offset + i})
            last = pipe.execute()[-1]
    else:
        for i in range(count):
            last = client.xadd(RAW_STREAM, {**fields, "mid": i})
    while True:
        (group,) = [g for g in client.xinfo_groups(RAW_STREAM) if g["name"] == "raw"]
        if group["last-delivered-id"] == last and group["pending"] == 0:
            break
        time.sleep(0.005)
    return count / (time.perf_counter() - started)


def _raw_round_trips(client, count: int) -> list[float]:
    blocking = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=None,
                                    decode_responses=True)  # fmt: skip
    samples = []
    for i in range(count + 50):
        reply = f"hive:reply:{uuid.uuid4().hex}"
        started = time.perf_counter()
        client.xadd(RAW_STREAM, {"kind": "ping", "reply": reply, "cid": str(i), "payload": "{}"})
        response = blocking.xread({reply: "0-0"}, count=1, block=10_000)
        blocking.delete(reply)
        assert response, "no reply from the raw consumer"
        if i >= 50:
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def _quantiles(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), statistics.quantiles(samples, n=100)[98]
