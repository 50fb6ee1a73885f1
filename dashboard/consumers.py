"""/ws/events/: the dashboard's live feed. A socket joins the overview group or the
group of a run its user may see, and gets the relay's batches (dashboard/relay.py),
less the runs its user may not see. Clients send
`{"subscribe": "overview"}` or `{"subscribe": "run", "run": <id>}`."""

import json

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from coordination.selectors import run_sees_all, run_visible_ids
from dashboard.relay import OVERVIEW_GROUP, relay, run_group, subject_run_id
from hive_project.api import MAX_ID

# A page watches one run or two; more from one socket is a misbehaving client.
MAX_SUBSCRIPTIONS = 20
# Runs whose visibility a socket remembers (it never changes for a run and a user).
VISIBILITY_CACHE = 10_000

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
        self.visible: dict[int, bool] = {}
        self.sees_all = await database_sync_to_async(run_sees_all)(user=user)
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
        try:
            content = json.loads(text_data or "")
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
        await self._learn({run_id})
        return self.visible[run_id]

    async def _visible_events(self, events: list[dict]) -> list[dict]:
        run_ids = {subject_run_id(e["subject"]) for e in events} - {None}
        await self._learn(run_ids)
        return [e for e in events if self.visible.get(subject_run_id(e["subject"]), True)]

    async def _learn(self, run_ids: set[int]) -> None:
        unknown = run_ids - self.visible.keys()
        if not unknown:
            return
        if len(self.visible) > VISIBILITY_CACHE:
            self.visible.clear()
        seen = await database_sync_to_async(run_visible_ids)(user=self.user, ids=unknown)
        self.visible.update({pk: pk in seen for pk in unknown})
