"""Emit events: a row in the same transaction as the change, and after commit an
entry on the `hive:events` stream for live relays (the database stays the record)."""

import json
import logging

import redis
from django.db import transaction

from dashboard.models import Event
from hive_project.redis_client import redis_client

logger = logging.getLogger(__name__)

EVENTS_STREAM = "hive:events"
# The stream is a live feed, not the record: keep about this many entries.
EVENTS_STREAM_MAXLEN = 10_000


def event_emit(*, kind: str, subject: str, data: dict | None = None) -> Event:
    event = Event.objects.create(kind=kind, subject=subject, data=data or {})
    event_publish_on_commit(event)
    return event


def event_publish_on_commit(event: Event) -> None:
    """Put a stored event on the live stream once its transaction commits (at once
    outside a transaction), for events written by statements of their own."""
    transaction.on_commit(lambda: _publish(event))


def _publish(event: Event) -> None:
    fields = {
        "seq": event.pk,
        "kind": event.kind,
        "subject": event.subject,
        "data": json.dumps(event.data),
        "at": event.created_at.isoformat(),
    }
    try:
        redis_client().xadd(EVENTS_STREAM, fields, maxlen=EVENTS_STREAM_MAXLEN, approximate=True)
    except redis.RedisError:
        # Readers catch up from the Event table by sequence number.
        logger.warning("event %s not published to %s", event.pk, EVENTS_STREAM, exc_info=True)
