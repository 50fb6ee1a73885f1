"""`hive up` with HIVE_COORDINATORS=2 runs two coordinators: one leads, one stands by."""

import signal

import pytest

from coordination.leadership import STATUS_KEY, coordinator_leader, coordinators_status
from ops.processes import stack_processes
from tests.processes import free_port, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_stack_names_one_coordinator_or_each_of_several(settings):
    assert [n for n in stack_processes([]) if n.startswith("coordinator")] == ["coordinator"]

    settings.HIVE_COORDINATORS = 2
    stack = stack_processes([])

    assert [n for n in stack if n.startswith("coordinator")] == ["coordinator.1", "coordinator.2"]
    assert stack["coordinator.2"][-2:] == ["coordinator", "--name=coordinator.2"]


def test_up_starts_two_coordinators_one_leading_and_stops_both(processes, tmp_path, redis_client):
    pool = tmp_path / "agents.yaml"
    pool.write_text("agents:\n  - {name: solo, skills: [noop]}\n")
    redis_client.delete(STATUS_KEY)
    up = processes.start(
        "up", name="up", HIVE_COORDINATORS="2", HIVE_AGENTS_FILE=str(pool),
        HIVE_PORT=str(free_port()), HIVE_FLOWER_PORT=str(free_port()),
        HIVE_ADMIN_PASSWORD="up-test-password",
    )  # fmt: skip

    def both_running():
        assert up.alive(), up.log()
        records = [r for r in coordinators_status() if r["alive"]]
        names = sorted(r["name"] for r in records)
        return (
            names == ["coordinator.1", "coordinator.2"] and coordinator_leader(records) and records
        )

    records = wait_for(both_running, timeout=90, what="both coordinators to run")
    assert coordinator_leader(records)["name"] in {"coordinator.1", "coordinator.2"}
    assert sum(r["leading"] for r in records) == 1

    up.signal(signal.SIGINT)
    up.proc.wait(timeout=60)
    # Each stopped cleanly, releasing the lock and removing its record.
    assert coordinators_status() == []
