"""The live feed: a task in the web process reads the `hive:events` stream and hands
each batch to the Channels groups the dashboard's sockets join (DESIGN.md, step 6).

One relay runs at a time across web processes (a lock in Redis): the pub/sub channel
layer reaches every process's sockets, so a second relay would only send everything
twice. Each message names the `upto` sequence number of the batch before it in its
group (`after`): a client that sees a different one missed something, and catches
up from GET /api/v1/events/?after=<seq>, as it does after a reconnect. The database
stays the record; this is only the fast path.
"""

import asyncio
import contextlib
import json
import logging
import uuid

import redis
import redis.asyncio as aioredis
from channels.layers import get_channel_layer
from django.conf import settings

from events.services import EVENTS_STREAM

logger = logging.getLogger(__name__)

OVERVIEW_GROUP = "overview"
LOCK_KEY = "hive:events:relay"
CLIENT_NAME = "hive-events-relay"
# The lock's holder renews it at least every BLOCK_MS; a dead holder's lock is taken
# over after this long (clients catch up over the gap from the API).
LOCK_TTL_MS = 3000
BLOCK_MS = 1000
READ_COUNT = 1000
# A relay remembers the last batch of this many groups (run groups come and go);
# a forgotten group's next message has `after` null, which clients treat as a gap.
MAX_GROUPS = 10_000
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


def run_group(run_id: int) -> str:
    return f"run.{run_id}"


def subject_run_id(subject: str) -> int | None:
    kind, _, pk = subject.partition(":")
    return int(pk) if kind == "run" and pk.isdigit() else None


def event_from_entry(fields: dict) -> dict:
    return {
        "seq": int(fields["seq"]),
        "kind": fields["kind"],
        "subject": fields["subject"],
        "data": json.loads(fields["data"]),
        "at": fields["at"],
    }


def events_coalesce(events: list[dict]) -> list[dict]:
    """The latest event of each object (a run, a step of a run, an agent), in sequence
    order: under a burst a client gets every object's newest state, not each step of
    the way, and never loses the last one."""
    latest: dict[tuple, dict] = {}
    for event in events:
        step = event["data"].get("step") if isinstance(event["data"], dict) else None
        latest[(event["subject"], step)] = event
    return sorted(latest.values(), key=lambda e: e["seq"])


def batch_groups(events: list[dict]) -> dict[str, list[dict]]:
    """Every event goes to the overview (the consumer filters what a user may see);
    a run's events go to its own group as well."""
    groups: dict[str, list[dict]] = {OVERVIEW_GROUP: events}
    for event in events:
        run_id = subject_run_id(event["subject"])
        if run_id is not None:
            groups.setdefault(run_group(run_id), []).append(event)
    return groups


class Relay:
    """Started by the first socket of the process, stopped with the last one."""

    def __init__(self):
        self.sockets = 0
        self.task: asyncio.Task | None = None
        self.last_sent: dict[str, int] = {}
        self.last_id = "$"
        self.token = ""
        # Set once events are being read for this process's sockets (by this relay, from
        # a known entry, or by another process's): what a socket subscribes to from then
        # on reaches it (EventsConsumer waits for it before it says "subscribed").
        self.serving = False

    async def until_serving(self, timeout: float) -> None:
        """Wait until `serving` (at most `timeout` s). A flag polled, not an asyncio.Event:
        the one relay of the module outlives event loops (tests run several)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.serving and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)

    def attach(self) -> None:
        self.sockets += 1
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def detach(self) -> None:
        self.sockets -= 1
        if self.sockets <= 0 and self.task is not None:
            self.sockets = 0
            self.task.cancel()
            self.task = None
            self.serving = False

    async def _run(self) -> None:
        """Relay until cancelled. A Redis blip costs a reconnect (with backoff), never
        the relay: it goes on from the last entry it read, still holding its lock."""
        self.token, self.last_id = uuid.uuid4().hex, "$"
        self.serving = False
        delay = 0.1
        while True:
            client = _blocking_client()
            try:
                await self._hold_and_relay(client)
            except asyncio.CancelledError:
                await _release(client, self.token)
                raise
            except (redis.RedisError, OSError):
                logger.warning("event relay: Redis failed; retrying in %.1f s", delay,
                               exc_info=True)  # fmt: skip
            except Exception:
                logger.exception("event relay failed; retrying in %.1f s", delay)
            else:
                delay = 0.1  # lost the lock, not Redis
            await _close(client)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _hold_and_relay(self, client) -> None:
        # Another process's relay serves every socket while it holds the lock.
        while not await client.eval(_RENEW, 1, LOCK_KEY, self.token, LOCK_TTL_MS):
            if await client.set(LOCK_KEY, self.token, nx=True, px=LOCK_TTL_MS):
                # A new holder cannot know what was sent before: `after` null, clients
                # resync; and it starts from the stream's end.
                self.last_sent.clear()
                self.last_id = await _stream_end(client)
                break
            self.serving = True  # another process's relay reads for every socket
            await asyncio.sleep(LOCK_TTL_MS / 3000)
        self.serving = True
        while True:
            reply = await client.xread(
                {EVENTS_STREAM: self.last_id}, block=BLOCK_MS, count=READ_COUNT
            )
            if reply:
                entries = reply[0][1]
                self.last_id = entries[-1][0]
                # Sent even if the lock ran out meanwhile: a new holder starts from the
                # stream's end, so dropping them here lost them for every open page
                # (a test saw an event emitted just as the lock went never arrive). At
                # worst another holder sent some of them too, which clients resync.
                await self.send(get_channel_layer(), [event_from_entry(f) for _, f in entries])
            if not await client.eval(_RENEW, 1, LOCK_KEY, self.token, LOCK_TTL_MS):
                return  # lost the lock (a long pause): start over

    async def send(self, layer, events: list[dict]) -> None:
        events = events_coalesce(events)
        upto = events[-1]["seq"]
        if len(self.last_sent) > MAX_GROUPS:
            self.last_sent.clear()
        for group, group_events in batch_groups(events).items():
            message = {
                "type": "events.batch",
                "group": group,
                "after": self.last_sent.get(group),
                "upto": upto,
                "events": group_events,
            }
            self.last_sent[group] = upto
            await layer.group_send(group, message)


async def _stream_end(client) -> str:
    """The id of the stream's last entry: reading after it from now on misses nothing
    added after this call (`$` would mean the end at the time of each XREAD)."""
    last = await client.xrevrange(EVENTS_STREAM, count=1)
    return last[0][0] if last else "0-0"


async def _release(client, token: str) -> None:
    try:
        if await client.get(LOCK_KEY) == token:
            await client.delete(LOCK_KEY)
    except (redis.RedisError, OSError):
        pass  # the lock runs out by itself
    await _close(client)


async def _close(client) -> None:
    with contextlib.suppress(redis.RedisError, OSError):
        await client.aclose()


def _blocking_client():
    # No socket timeout: XREAD BLOCK waits longer than redis-py's default (DESIGN.md).
    return aioredis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=None, decode_responses=True, client_name=CLIENT_NAME
    )


relay = Relay()
