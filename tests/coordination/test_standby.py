"""Coordinators in standby, on real `hive coordinator` processes: one leads, the other
takes over when the leader is killed or its session is terminated, a schedule fires
once per period across the hand-over, and `--status` and /readyz say who leads."""

import signal

import pytest
from django.db import connection

from coordination.leadership import coordinator_leader, coordinators_status
from coordination.locks import LOCK_KEY
from events.models import Event
from tests.coordinators import (
    coordinators_start,
    firing_gaps,
    firings,
    leader_after_kill,
    leader_wait,
    schedule_every,
)
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

EVERY = 2  # the schedule's period, seconds


def _status(processes) -> tuple[int, str]:
    """`hive coordinator --status`: its exit status and output."""
    status = processes.start("coordinator", "--status", name=f"status-{len(processes.processes)}")
    return status.proc.wait(timeout=60), status.log()


def test_the_standby_leads_within_two_intervals_of_the_leaders_kill_and_fires_on_time(
    processes, settings
):
    first, second = coordinators_start(processes, "first", "second")
    leader = leader_wait([first, second], timeout=5)
    standby = second if leader is first else first
    schedule = schedule_every(EVERY, name="handed-over")
    wait_for(lambda: firings("handed-over") >= 2, timeout=30, what="two firings")

    follower, took = leader_after_kill(leader, [standby], signal.SIGKILL)
    fired_then = firings("handed-over")
    wait_for(lambda: firings("handed-over") >= fired_then + 3, timeout=30, what="three more")

    assert follower is standby
    assert took <= 2 * settings.HIVE_REAPER_INTERVAL, f"took {took:.2f} s"
    # Once per period: no firing twice (two within a period), none skipped (a gap of
    # two periods), though the beat that fired them changed.
    gaps = firing_gaps("handed-over")
    assert min(gaps) >= EVERY - 0.6 and max(gaps) < 2 * EVERY, gaps
    schedule.refresh_from_db()
    assert schedule.total_run_count == firings("handed-over")  # each firing claimed once
    leading = Event.objects.filter(kind="coordinator.leading").order_by("id")
    assert [e.data["pid"] for e in leading] == [leader.pid, standby.pid]


def test_a_leader_whose_session_is_terminated_steps_down_and_the_standby_leads(processes):
    if connection.vendor != "postgresql":
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    first, second = coordinators_start(processes, "first", "second")
    leader = leader_wait([first, second], timeout=5)
    standby = second if leader is first else first

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
            " AND objid = %s AND granted AND database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database())",
            [LOCK_KEY],
        )
        assert cursor.fetchone() == (True,)

    assert leader_wait([standby], timeout=10) is standby
    # The deposed one noticed, said so, and stands by (it lives on).
    stepped_down = wait_for(
        lambda: Event.objects.filter(kind="coordinator.standby", data__pid=leader.pid).first(),
        timeout=10,
        what="the deposed leader to step down",
    )
    assert stepped_down.data["reason"] == "lost the leader lock"
    wait_for(
        lambda: any(
            r["pid"] == leader.pid and r["alive"] and not r["leading"]
            for r in coordinators_status()
        ),
        timeout=10,
        what="the deposed leader's record to say standby",
    )
    assert leader.alive() and coordinator_leader(coordinators_status())["pid"] == standby.pid


def test_status_says_which_coordinator_leads_and_readyz_names_it(processes, client):
    first, second = coordinators_start(processes, "first", "second")
    leader = leader_wait([first, second], timeout=5)
    standby = second if leader is first else first
    names = {first.pid: "first", second.pid: "second"}

    code, output = _status(processes)
    ready = client.get("/readyz").json()

    assert code == 0, output
    lines = output.strip().splitlines()
    # The leader first, then the standby, each by name, host and pid.
    assert lines[0].startswith(f"{names[leader.pid]} on ")
    assert f"(pid {leader.pid}): leading since " in lines[0]
    assert lines[1].endswith(f"(pid {standby.pid}): standby")
    assert ready["coordinators"] == {"leader": names[leader.pid], "standby": 1}

    processes.stop_all()  # a clean stop removes their records
    code, output = _status(processes)
    assert (code, output.strip().splitlines()[-1]) == (1, "no coordinator leads")
    assert client.get("/readyz").json()["coordinators"] == {"leader": None, "standby": 0}
