"""Faults against the coordinators, on real processes: the leader SIGKILLed mid-run while
retries, a lost lease and a schedule need a coordinator; both coordinators SIGSTOPed
and resumed. The standby takes over, the run succeeds with each step's result stored
once, and the schedule fires at most once per period."""

import signal
import time

import pytest
from django.conf import settings

from coordination.leadership import coordinator_leader, coordinators_status
from coordination.models import StepRun
from coordination.services import run_start
from tests.chaos.support import run_counts, succeeded_once
from tests.coordinators import (
    coordinators_start,
    firing_gaps,
    firings,
    leader_after_kill,
    leader_wait,
    schedule_every,
)
from tests.processes import wait_for
from tests.runs import wait_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chaos]

EVERY = 3  # the schedule's period, seconds


FLAKY = ("flaky-a", "flaky-b", "flaky-c")


def _needy_workflow(make_workflow, key: str):
    """Steps only a coordinator finishes: flaky ones whose retries wait out a backoff
    (the reaper sends them when due), and slow ones, one of which a killed agent holds
    (the reaper finds its agent offline and runs it again)."""
    flaky = [
        {"id": step, "skill": "test.flaky", "with": {"key": f"{key}-{step}", "failures": 2},
         "retries": 3, "backoff": 2}
        for step in FLAKY
    ]  # fmt: skip
    return make_workflow(
        [
            *flaky,
            {"id": "slow", "skill": "sleep", "foreach": "{{ params.numbers }}",
             "with": {"seconds": 2}},
            {"id": "after", "skill": "noop", "needs": [*FLAKY, "slow"]},
        ]
    )  # fmt: skip


def _schedule_report(name: str) -> tuple[int, str]:
    """Firings twice in a period (a gap shorter than the period, less the slack for
    clocks), and the gaps, for the report."""
    gaps = firing_gaps(name)
    doubled = sum(1 for gap in gaps if gap < EVERY - 0.6)
    return doubled, f"{firings(name)} firings, gaps {min(gaps):.1f}-{max(gaps):.1f} s"


def test_the_leader_killed_mid_run_hands_over_retries_leases_and_a_schedule(
    processes, start_agents, make_workflow, chaos_report
):
    first, second = coordinators_start(processes, "first", "second")
    leader = leader_wait([first, second], timeout=5)
    standby = second if leader is first else first
    _, victim = start_agents(
        {"name": "steady", "skills": "test.flaky,sleep,noop", "concurrency": 2},
        {"name": "victim", "skills": "sleep", "concurrency": 2},
    )
    schedule_every(EVERY, name="during-chaos")
    # Firing on its period before the kill, so the hand-over falls between firings.
    wait_for(lambda: firings("during-chaos") >= 2, timeout=30, what="two firings")
    workflow = _needy_workflow(make_workflow, key=f"kill-{time.time_ns()}")
    run = run_start(workflow=workflow, params={"numbers": list(range(8))})
    wait_for(
        lambda: StepRun.objects.filter(run=run, state="running", agent="victim").exists(),
        timeout=60,
        what="the victim agent to hold a step",
    )

    follower, took = leader_after_kill(leader, [standby], signal.SIGKILL)
    victim.signal(signal.SIGKILL)  # its lease is the new leader's to recover
    victim.stop()  # its orphaned pool processes too
    run = wait_run(run, timeout=120)
    settled = firings("during-chaos")
    wait_for(lambda: firings("during-chaos") >= settled + 2, timeout=30, what="two more firings")

    counts = run_counts(run)
    doubled, note = _schedule_report("during-chaos")
    chaos_report(
        scenario="leading coordinator SIGKILL mid-run",
        unit="steps",
        **counts,
        note=f"standby led after {took:.2f} s; schedule: {note}, {doubled} doubled",
    )
    assert follower is standby
    assert took <= 2 * settings.HIVE_REAPER_INTERVAL, f"took {took:.2f} s"
    assert run.state == "succeeded", run.error
    once = succeeded_once(run)
    assert len(once) == 3 + 8 + 1 + 1 and set(once.values()) == {1}  # flaky, items, group, after
    flaky = StepRun.objects.filter(run=run, key__in=FLAKY)
    assert list(flaky.values_list("tries", flat=True)) == [3, 3, 3]  # two retries each
    # The victim's step was run again elsewhere after its lease was recovered.
    assert StepRun.objects.filter(run=run, skill="sleep", tries__gt=1).exists()
    gaps = firing_gaps("during-chaos")
    assert doubled == 0 and max(gaps) < 2 * EVERY, gaps


@pytest.mark.slow
def test_both_coordinators_stopped_for_20_seconds_lose_and_double_nothing(
    processes, start_agents, make_workflow, chaos_report
):
    both = coordinators_start(processes, "first", "second")
    start_agents({"name": "steady", "skills": "test.flaky,sleep,noop", "concurrency": 4})
    schedule_every(EVERY, name="paused")
    workflow = _needy_workflow(make_workflow, key=f"stop-{time.time_ns()}")
    run = run_start(workflow=workflow, params={"numbers": list(range(8))})
    wait_for(
        lambda: StepRun.objects.filter(run=run, key__in=FLAKY, tries=2).exists(),
        timeout=60,
        what="a flaky step to wait for its retry",
    )
    for coordinator in both:
        coordinator.signal(signal.SIGSTOP)
    before = firings("paused")
    time.sleep(20)  # the fault itself: 20 s in which no coordinator runs
    during = firings("paused") - before
    for coordinator in both:
        coordinator.signal(signal.SIGCONT)

    run = wait_run(run, timeout=120)
    resumed = firings("paused")
    wait_for(lambda: firings("paused") >= resumed + 2, timeout=30, what="two more firings")
    leader = leader_wait(both, timeout=10)

    counts = run_counts(run)
    doubled, note = _schedule_report("paused")
    leaders = [r for r in coordinators_status() if r["alive"] and r["leading"]]
    chaos_report(
        scenario="both coordinators SIGSTOP 20 s",
        unit="steps",
        **counts,
        note=f"{leader.name} leads after; schedule: {note}, {doubled} doubled",
    )
    assert during == 0  # nothing fired while both were stopped
    assert run.state == "succeeded", run.error
    assert set(succeeded_once(run).values()) == {1}
    assert doubled == 0, firing_gaps("paused")
    assert len(leaders) == 1 and coordinator_leader(leaders)["pid"] == leader.pid
    assert all(c.alive() for c in both)
