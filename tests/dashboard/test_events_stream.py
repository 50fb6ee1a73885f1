"""Committed events reach the `hive:events` stream (published off the caller's thread);
events of a transaction that rolled back never do."""

import json

import pytest
from django.db import transaction

from dashboard.events import EVENTS_STREAM, event_emit
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_committed_events_reach_the_stream_and_rolled_back_ones_do_not(redis_client):
    with transaction.atomic():
        kept = event_emit(kind="agent.online", subject="agent:kept", data={"pid": 1})
    with pytest.raises(RuntimeError), transaction.atomic():
        event_emit(kind="agent.online", subject="agent:gone")
        raise RuntimeError("roll back")
    last = event_emit(kind="agent.offline", subject="agent:kept")

    def published() -> dict | None:
        by_seq = {int(f[b"seq"]): f for _, f in redis_client.xrange(EVENTS_STREAM)}
        return by_seq if last.pk in by_seq else None

    entries = wait_for(published, timeout=10, what="the events on the stream")

    assert entries[kept.pk][b"subject"] == b"agent:kept"
    assert json.loads(entries[kept.pk][b"data"]) == {"pid": 1}
    assert entries[last.pk][b"kind"] == b"agent.offline"
    assert all(fields[b"subject"] != b"agent:gone" for fields in entries.values())
