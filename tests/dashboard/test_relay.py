"""The relay from the `hive:events` stream to Channels groups, on the real Redis and
the real pub/sub channel layer: bursts coalesced per object, and a Redis blip survived."""

import asyncio
import json

import redis.asyncio as aioredis
from channels.layers import get_channel_layer
from django.conf import settings

from dashboard.relay import CLIENT_NAME, OVERVIEW_GROUP, Relay, events_coalesce
from events.services import EVENTS_STREAM


def event(seq: int, subject: str, kind: str, **data) -> dict:
    return {"seq": seq, "kind": kind, "subject": subject, "data": data, "at": ""}


def test_a_burst_keeps_the_latest_event_of_each_object_in_order():
    burst = [
        event(1, "run:1", "step.queued", step="a"),
        event(2, "run:1", "step.queued", step="b"),
        event(3, "run:1", "step.running", step="a"),
        event(4, "agent:x", "agent.status", to="busy"),
        event(5, "run:1", "step.succeeded", step="a"),
        event(6, "run:1", "run.succeeded"),
    ]
    assert [e["seq"] for e in events_coalesce(burst)] == [2, 4, 5, 6]


def test_the_relay_survives_a_redis_blip_and_loses_nothing(redis_url, empty_streams):
    async def scenario() -> list[dict]:
        client = aioredis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(OVERVIEW_GROUP, channel)
        relay = Relay()
        relay.attach()

        async def publish(seq: int) -> None:
            fields = {"seq": seq, "kind": "agent.status", "subject": f"agent:a{seq}",
                      "data": json.dumps({"to": "idle"}), "at": ""}  # fmt: skip
            await client.xadd(EVENTS_STREAM, fields)

        async def relay_connected() -> list[dict]:
            for _ in range(100):
                found = [c for c in await client.client_list() if c["name"] == CLIENT_NAME]
                if found:
                    return found
                await asyncio.sleep(0.05)
            raise AssertionError("the relay never connected")

        await relay_connected()
        await asyncio.sleep(0.2)  # its first XREAD is blocking
        await publish(1)
        received = [await asyncio.wait_for(layer.receive(channel), 5)]
        for connection in await relay_connected():
            await client.client_kill_filter(_id=connection["id"])
        await publish(2)  # while the relay reconnects
        received.append(await asyncio.wait_for(layer.receive(channel), 10))
        relay.detach()
        await client.aclose()
        return received

    first, second = asyncio.run(scenario())

    assert [e["seq"] for e in first["events"]] == [1]
    assert [e["seq"] for e in second["events"]] == [2]
    # The same holder, so the chain of batches goes on: clients see no gap.
    assert (first["after"], first["upto"], second["after"]) == (None, 1, 1)
