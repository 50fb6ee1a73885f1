"""Flow control on real agents and a real coordinator: a concurrency key holds across
agents, a rate limit holds across agents, priority overtakes a queue, a paused run
dispatches nothing until resumed, a deadline cancels a run and stops its step, and a
slot held by an agent SIGKILLed is recovered through the reaper. The rules in detail
run in this process (test_flow.py)."""

import itertools
import os
import signal
import time

import pytest

from agents.models import Agent
from coordination.models import Run, StepRun
from coordination.services import run_pause, run_resume, run_start
from events.models import Event
from tests.processes import wait_for
from tests.runs import steps_of, wait_run

pytestmark = pytest.mark.django_db(transaction=True)

ENV = {"type": "object", "properties": {"env": {"type": "string"}}}


def _spans(steps) -> list[tuple[float, float]]:
    return sorted((s.started_at.timestamp(), s.finished_at.timestamp()) for s in steps)


def test_a_concurrency_key_lets_one_step_run_at_a_time_across_agents(
    start_agents, coordinator, make_workflow
):
    start_agents({"name": "deploy-a", "skills": "sleep"}, {"name": "deploy-b", "skills": "sleep"})
    workflow = make_workflow(
        [{"id": "deploy", "skill": "sleep", "with": {"seconds": 1.5},
          "concurrency": {"key": "deploy:{{ params.env }}", "limit": 1}}],
        params=ENV,
    )  # fmt: skip

    runs = [run_start(workflow=workflow, params={"env": "prod"}) for _ in range(3)]
    other = run_start(workflow=workflow, params={"env": "staging"})

    runs = [wait_run(run, timeout=60) for run in runs]
    assert [run.state for run in runs] == ["succeeded"] * 3
    prod = [steps_of(run)["deploy"] for run in runs]
    spans = _spans(prod)
    for (_, finished), (started, _) in itertools.pairwise(spans):
        assert finished <= started, f"steps of deploy:prod overlapped: {spans}"
    # The key is per environment: staging ran beside prod.
    staging = steps_of(wait_run(other))["deploy"]
    assert staging.started_at.timestamp() < spans[1][0] and staging.state == "succeeded"
    # The ones that waited said why, and started in the order they came (FIFO).
    reasons = Event.objects.filter(kind="step.waiting", subject__in=[f"run:{r.pk}" for r in runs])
    assert {e.data["reason"] for e in reasons} == {"waiting for capacity: deploy:prod 1/1"}
    order = sorted(prod, key=lambda step: step.started_at)
    assert [step.run_id for step in order] == [run.pk for run in runs]


def test_a_rate_limit_holds_across_three_agents(start_agents, coordinator, make_workflow):
    start_agents(*({"name": f"rate-{i}", "skills": "noop", "concurrency": 2} for i in range(3)))
    workflow = make_workflow(
        [{"id": "call", "skill": "noop", "foreach": "{{ range(30) | list }}",
          "with": {"n": "{{ item }}"}, "rate": {"key": "api", "limit": 10, "per": 5}}]
    )  # fmt: skip

    run = wait_run(run_start(workflow=workflow, params={}), timeout=90)

    assert run.state == "succeeded"
    items = StepRun.objects.filter(run=run).exclude(group=None)
    starts = sorted(step.started_at.timestamp() for step in items)
    assert len(starts) == 30
    assert starts[-1] - starts[0] >= 10, "30 starts at 10 per 5 s take at least 10 s"
    for i, first in enumerate(starts):
        in_window = [t for t in starts[i:] if t < first + 5]
        assert len(in_window) <= 10, f"{len(in_window)} starts within 5 s from {first}"
    assert len({step.agent for step in items}) == 3
    waited = Event.objects.filter(kind="step.waiting", subject=f"run:{run.pk}")
    assert {e.data["reason"] for e in waited} == {"waiting for rate: api 10/5s"}


def test_a_priority_9_run_overtakes_200_queued_steps(start_agent, make_workflow):
    start_agent("busy", skills="sleep")
    batch = make_workflow(
        [{"id": "each", "skill": "sleep", "foreach": "{{ range(200) | list }}",
          "with": {"seconds": 0.01}}]
    )  # fmt: skip
    urgent = make_workflow([{"id": "now", "skill": "sleep", "with": {"seconds": 0}}])
    queued = run_start(workflow=batch, params={})
    wait_for(
        lambda: StepRun.objects.filter(run=queued, state="succeeded").exclude(group=None).exists(),
        timeout=30,
        what="the batch to start",
    )

    first = wait_run(run_start(workflow=urgent, params={}, priority=9))

    queued = wait_run(queued, timeout=120)
    assert first.state == queued.state == "succeeded"
    started = steps_of(first)["now"].started_at
    items = StepRun.objects.filter(run=queued).exclude(group=None)
    after = items.filter(started_at__gt=started).count()
    assert after > 150, f"only {after} of 200 priority-0 steps started after the priority-9 one"
    assert steps_of(first)["now"].priority == 9 and items.first().priority == 0


def test_a_paused_run_dispatches_nothing_until_resumed(start_agent, coordinator, make_workflow):
    start_agent("pausing", skills="sleep,noop")
    workflow = make_workflow(
        [{"id": "first", "skill": "sleep", "with": {"seconds": 2}},
         {"id": "then", "skill": "noop", "needs": "first"}]
    )  # fmt: skip
    run = run_start(workflow=workflow, params={})
    wait_for(lambda: steps_of(run)["first"].state == "running", timeout=30, what="first to run")

    assert run_pause(run=run).state == "paused"

    # The running step finishes; the next waits, for as long as the run is paused.
    wait_for(lambda: steps_of(run)["first"].state == "succeeded", timeout=30, what="first")
    time.sleep(10)
    steps = steps_of(run)
    assert (steps["then"].state, steps["then"].waiting_reason) == ("pending", "paused")
    assert Run.objects.get(pk=run.pk).state == "paused"
    assert not Event.objects.filter(
        subject=f"run:{run.pk}", kind="step.running", data__step="then"
    ).exists()

    assert run_resume(run=run).state in ("running", "waiting")
    run = wait_run(run)
    assert run.state == "succeeded"
    kinds = list(Event.objects.filter(subject=f"run:{run.pk}", kind__startswith="run.")
                 .values_list("kind", flat=True))  # fmt: skip
    assert kinds == ["run.started", "run.paused", "run.resumed", "run.running", "run.succeeded"]


def test_a_run_past_its_deadline_is_cancelled_and_its_step_stopped(
    start_agent, coordinator, make_workflow
):
    start_agent("late", skills="sleep")
    workflow = make_workflow([{"id": "long", "skill": "sleep", "with": {"seconds": 60}}], timeout=3)

    started = time.monotonic()
    run = wait_run(run_start(workflow=workflow, params={}), timeout=30)

    assert (run.state, run.error) == ("cancelled", "deadline exceeded")
    assert time.monotonic() - started < 30
    assert steps_of(run)["long"].state == "cancelled"
    # The revoke terminated the pool process running the step, well before its 60 s.
    wait_for(
        lambda: Agent.objects.filter(name="late", load=0).exists(),
        timeout=20,
        what="the agent to run nothing",
    )


def test_a_slot_held_by_a_killed_agent_comes_back_through_the_reaper(
    start_agents, coordinator, make_workflow
):
    doomed, _ = start_agents({"name": "doomed", "skills": "sleep"},
                             {"name": "spare", "skills": "sleep,noop"})  # fmt: skip
    workflow = make_workflow(
        [{"id": "hold", "skill": "sleep", "agent": "doomed", "with": {"seconds": 60},
          "retries": 0, "on_failure": "continue", "concurrency": {"key": "gpu", "limit": 1}},
         ]
    )  # fmt: skip
    other = make_workflow(
        [{"id": "use", "skill": "noop", "concurrency": {"key": "gpu", "limit": 1}}]
    )
    holder = run_start(workflow=workflow, params={})
    wait_for(lambda: steps_of(holder)["hold"].state == "running", timeout=30, what="the hold")
    waiter = run_start(workflow=other, params={})
    assert steps_of(waiter)["use"].waiting_reason == "waiting for capacity: gpu 1/1"

    os.killpg(doomed.pid, signal.SIGKILL)  # the agent and its pool, at once

    # The reaper marks the agent offline and takes the step back; with no agent left
    # for it, it lets its slot go, and the waiting step gets it.
    waiter = wait_run(waiter, timeout=60)
    assert waiter.state == "succeeded"
    hold = steps_of(holder)["hold"]
    assert hold.state == "pending" and hold.waiting_reason.startswith("waiting for an agent")
    assert steps_of(waiter)["use"].agent == "spare"
