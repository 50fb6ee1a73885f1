"""Faults against the engine, on real processes: agents SIGKILLed mid-run, Redis
wiped, a step that kills its worker. The database is the record; nothing is lost
and no step's result is stored twice."""

import signal
import time

import pytest

from coordination.models import StepRun
from coordination.services import run_start
from tests.chaos.support import run_counts, succeeded_once
from tests.processes import wait_for
from tests.runs import steps_of, wait_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chaos]


def test_a_500_step_run_survives_an_agent_killed_twice(
    start_agent, start_agents, coordinator, make_workflow, processes, chaos_report
):
    start_agents(
        {"name": "steady", "skills": "sleep", "concurrency": 2},
        {"name": "victim", "skills": "sleep", "concurrency": 2},
    )
    workflow = make_workflow(
        [{"id": "work", "skill": "sleep", "foreach": "{{ params.numbers }}",
          "with": {"seconds": 0.3}}]
    )  # fmt: skip
    run = run_start(workflow=workflow, params={"numbers": list(range(500))})

    for _ in range(2):
        wait_for(
            lambda: StepRun.objects.filter(run=run, state="running", agent="victim").exists(),
            timeout=60,
            what="the victim to be running a step",
        )
        victim = next(p for p in reversed(processes.processes) if p.name.startswith("victim"))
        victim.signal(signal.SIGKILL)
        victim.stop()
        time.sleep(1)
        start_agent("victim", skills="sleep", concurrency=2)

    run = wait_run(run, timeout=240)
    chaos_report(scenario="agent SIGKILL during a run (x2)", unit="steps", **run_counts(run))

    assert run.state == "succeeded", run.error
    items = StepRun.objects.filter(run=run, group__isnull=False)
    assert items.count() == 500
    assert set(items.values_list("state", flat=True)) == {"succeeded"}
    once = succeeded_once(run)
    assert len(once) == 501 and set(once.values()) == {1}  # 500 items and the group
    # Steps the killed agent held were run again elsewhere; their history says so.
    assert items.filter(tries__gt=1).exists()


def test_a_run_completes_after_redis_is_flushed_mid_run(
    start_agent, coordinator, make_workflow, redis_client, chaos_report
):
    start_agent("survivor", skills="sleep", concurrency=2)
    workflow = make_workflow(
        [
            {"id": "work", "skill": "sleep", "foreach": "{{ params.numbers }}",
             "with": {"seconds": 0.05}},
            {"id": "after", "skill": "sleep", "needs": "work", "with": {"seconds": 0}},
        ]
    )  # fmt: skip
    run = run_start(workflow=workflow, params={"numbers": list(range(200))})
    wait_for(
        lambda: (
            StepRun.objects.filter(run=run, state="succeeded", group__isnull=False).count() > 20
        ),
        timeout=60,
        what="the run to be under way",
    )

    redis_client.flushdb()  # every queued message, binding and heartbeat key is gone

    run = wait_run(run, timeout=180)
    # The reaper's counts were flushed too: what it counted since is this run's.
    counts = run_counts(run, redis_client=redis_client)
    chaos_report(scenario="Redis wiped (FLUSHDB) mid-run", unit="steps", **counts)
    assert run.state == "succeeded", run.error
    once = succeeded_once(run)
    assert len(once) == 202 and set(once.values()) == {1}


def test_a_poison_step_that_kills_its_worker_fails_after_the_cap(
    start_agent, coordinator, make_workflow, settings, chaos_report
):
    start_agent("sacrifice", skills="test.crash,noop", concurrency=1)
    workflow = make_workflow([{"id": "poison", "skill": "test.crash"}])

    run = wait_run(run_start(workflow=workflow, params={}), timeout=120)

    step = steps_of(run)["poison"]
    # The poison step is meant to fail, not to be lost: it is counted as lost only if
    # it did not reach its end (failed, after exactly the cap).
    chaos_report(
        scenario="poison step (kills its worker)",
        unit="steps",
        lost=int(step.state != "failed"),
        duplicated=0,
        recovered=step.tries - 1,
        note=f"failed after {step.tries} tries",
    )
    assert run.state == "failed"
    assert step.tries == settings.HIVE_STEP_MAX_LOST
    assert step.error == (
        f"lost its worker on agent 'sacrifice' while running, {settings.HIVE_STEP_MAX_LOST} "
        "times; giving up"
    )
    # The agent itself survived its poisoned pool processes and still works.
    healthy = make_workflow([{"id": "ok", "skill": "noop"}])
    assert wait_run(run_start(workflow=healthy, params={})).state == "succeeded"
