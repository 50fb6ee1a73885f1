"""A shutdown asked for is on the record, for the process it was asked of only: what
`hive up` reads to leave that process down (ops/cli.py)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.selectors import agent_shutdown_requested
from events.services import event_emit

pytestmark = pytest.mark.django_db


def test_a_shutdown_request_counts_for_the_process_it_named_only():
    started = timezone.now()
    event_emit(kind="agent.shutdown", subject="agent:a1", data={"pid": 10, "node": "a1@h"})

    assert agent_shutdown_requested(name="a1", pid=10, since=started)
    # Another process of that name, another agent with that pid: not asked.
    assert not agent_shutdown_requested(name="a1", pid=11, since=started)
    assert not agent_shutdown_requested(name="a2", pid=10, since=started)
    # A process started after the request (its pid reused): not asked either.
    later = timezone.now() + timedelta(seconds=1)
    assert not agent_shutdown_requested(name="a1", pid=10, since=later)
