"""/ws/events/: the dashboard's live feed. A socket joins the overview group or the
group of a run its user may see, and gets the relay's batches (dashboard/relay.py),
less the runs its user may not see. Clients send
`{"subscribe": "overview"}` or `{"subscribe": "run", "run": <id>}`."""

import json

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from dashboard.relay import OVERVIEW_GROUP, relay, run_group
from dashboard.selectors import event_sees_all, event_subjects_visible
from hive_core.api import MAX_ID

# A page watches one run or two; more from one socket is a misbehaving client.
MAX_SUBSCRIPTIONS = 20
# How long "subscribed" waits for the relay to read (it starts with the first socket);
# past it the answer goes anyway, and a missed event is a gap the client catches up.
RELAY_START_WAIT = 5.0
# Subjects whose visibility a socket remembers (it never changes for a subject and a user).
VISIBILITY_CACHE = 10_000
# A client sends `{"subscribe": "run:12"}` and the like, tens of characters; a
# 100,000-deep JSON message was a RecursionError traceback in the web process.
MAX_MESSAGE_LENGTH = 4096

_connected = 0


def connected_clients() -> int:
    """WebSocket clients connected to this process now (for the operations gauge)."""
    return _connected


class EventsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)  # before accept: the handshake is refused (403)
            return
        self.user = user
        self.joined: set[str] = set()
        self.visible: dict[str, bool] = {}
        self.sees_all = await database_sync_to_async(event_sees_all)(user=user)
        await self.accept()
        global _connected
        _connected += 1
        self.counted = True
        relay.attach()

    async def disconnect(self, code):
        if getattr(self, "counted", False):
            global _connected
            _connected -= 1
            self.counted = False
            relay.detach()
        for group in getattr(self, "joined", ()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        # A malformed message is answered, not a crash of the socket.
        if len(text_data or bytes_data or "") > MAX_MESSAGE_LENGTH:
            await self.send_json(
                {"type": "error", "error": f"longer than {MAX_MESSAGE_LENGTH} characters"}
            )
            return
        try:
            content = json.loads(text_data or "")
        except RecursionError:  # `[[[[...` within the length: json recurses per level
            await self.send_json({"type": "error", "error": "JSON nested too deep"})
            return
        except ValueError:
            await self.send_json({"type": "error", "error": "not JSON"})
            return
        if not isinstance(content, dict):
            await self.send_json({"type": "error", "error": "expected an object"})
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        topic = content.get("subscribe")
        if topic == "overview":
            group = OVERVIEW_GROUP
        elif topic == "run":
            run_id = content.get("run")
            valid = isinstance(run_id, int) and not isinstance(run_id, bool)
            if not valid or not 0 < run_id <= MAX_ID or not await self._sees(run_id):
                # The same answer for a run that does not exist and one not theirs.
                await self.send_json({"type": "error", "error": f"no run {run_id!r}"})
                return
            group = run_group(run_id)
        else:
            await self.send_json(
                {"type": "error", "error": 'expected {"subscribe": "overview" | "run"}'}
            )
            return
        if group not in self.joined:
            if len(self.joined) >= MAX_SUBSCRIPTIONS:
                await self.send_json({"type": "error", "error": "too many subscriptions"})
                return
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.add(group)
        # "subscribed" promises every event from now on: the relay must be reading
        # (it starts with the first socket; a slow start only delays the answer).
        await relay.until_serving(timeout=RELAY_START_WAIT)
        await self.send_json({"type": "subscribed", "group": group})

    async def events_batch(self, message):
        events = message["events"]
        if message["group"] == OVERVIEW_GROUP and not self.sees_all:
            events = await self._visible_events(events)
        await self.send_json({
            "type": "events", "group": message["group"], "after": message["after"],
            "upto": message["upto"], "events": events,
        })  # fmt: skip

    async def _sees(self, run_id: int) -> bool:
        if self.sees_all:
            return True
        await self._learn({f"run:{run_id}"})
        return self.visible[f"run:{run_id}"]

    async def _visible_events(self, events: list[dict]) -> list[dict]:
        """The rule of the events API (dashboard/selectors.py), on events in hand."""
        await self._learn({e["subject"] for e in events})
        return [e for e in events if self.visible[e["subject"]]]

    async def _learn(self, subjects: set[str]) -> None:
        if len(self.visible) > VISIBILITY_CACHE:
            self.visible.clear()
        unknown = subjects - self.visible.keys()
        if not unknown:
            return
        seen = await database_sync_to_async(event_subjects_visible)(
            user=self.user, subjects=unknown
        )
        self.visible.update({subject: subject in seen for subject in unknown})
