"""Committed events reach the `hive:events` stream (published off the caller's thread);
events of a transaction that rolled back never do."""

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.db import transaction

from events.services import EVENTS_STREAM, event_emit
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


def test_a_process_exits_promptly_with_every_event_it_emitted_published(redis_client):
    """A CLI command's last events go out at exit, and the exit does not wait on the
    publisher thread (frozen mid-send, it held the Redis pool's lock: a hang)."""
    script = (
        "import django; django.setup()\n"
        "from events.services import _publisher\n"
        "for i in range(3000):\n"
        "    _publisher.put(({'seq': i, 'kind': 'test.exit', 'subject': 'test:exit',"
        " 'data': '{}', 'at': ''}, {}))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "HIVE_LOG_LEVEL": "WARNING"}

    done = subprocess.run([sys.executable, "-c", script], cwd=settings.BASE_DIR, env=env,
                          timeout=60, capture_output=True, text=True)  # fmt: skip

    assert done.returncode == 0, done.stderr
    kinds = [f[b"kind"] for _, f in redis_client.xrange(EVENTS_STREAM)]
    assert kinds.count(b"test.exit") == 3000
