"""Overlap policies on real agents: skip, queue (started by the coordinator when the
blocking run ends), cancel-running and allow; keyed by a template; and the
check-and-start is race-free."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from commands.models import Invocation
from commands.services import (
    CommandFailure,
    command_execute,
    commands_load,
    invocations_dequeue,
)
from coordination.models import Run
from coordination.services import run_cancel, run_pause
from tests.processes import wait_for
from tests.runs import wait_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def start_agent(shared_agent, transactional_db):
    """The agent (napper) is started once for the module: no test needs a fresh one.
    (Each test gets it with its pool whole: a cancel's revoke takes a pool process.)"""
    return shared_agent


@pytest.fixture
def nap(definitions, users):
    """`/nap <seconds> [lane]` with the given overlap policy, keyed by lane."""

    def make(policy: str):
        definitions("nap.md", f"""
            ---
            argument-hint: <seconds> [lane]
            params:
              seconds: {{type: number, minimum: 0}}
              lane: {{type: string, default: a}}
            overlap: {{policy: {policy}, key: "nap:{{{{ params.lane }}}}"}}
            workflow:
              steps: [{{id: nap, skill: sleep, with: {{seconds: "{{{{ params.seconds }}}}"}}}}]
            ---
        """)  # fmt: skip
        commands_load(paths=[definitions.root])
        return lambda text: command_execute(text=text, user=users["ada"], source="api")

    return make


def running(invocation: Invocation) -> Run:
    return wait_for(
        lambda: (run := Run.objects.get(pk=invocation.run_id)).steps.filter(
            state="running").exists() and run,
        timeout=30, what=f"run {invocation.run_id} to run its step",
    )  # fmt: skip


def test_skip_starts_nothing_while_a_run_with_the_key_is_open(nap, start_agent, users):
    start_agent("napper", skills="sleep,noop", concurrency=2)
    execute = nap("skip")

    first = execute("/nap 30")
    running(first)
    second = execute("/nap 30")
    other_lane = execute("/nap 0 lane=b")

    assert (second.outcome, second.run, second.overlap_key) == ("skipped", None, "nap:a")
    assert second.error == f"run {first.run_id} with overlap key 'nap:a' is still running"
    assert other_lane.outcome == "started"
    assert wait_run(other_lane.run).state == "succeeded"

    command_execute(text=f"/hive:cancel {first.run_id}", user=users["admin"], source="cli")
    after = execute("/nap 0")
    assert after.outcome == "started" and wait_run(after.run).state == "succeeded"


def test_queue_starts_each_in_turn_when_the_blocking_run_ends(nap, start_agent, coordinator):
    start_agent("napper", skills="sleep,noop", concurrency=2)
    execute = nap("queue")

    first = execute("/nap 2")
    second = execute("/nap 0.5")
    third = execute("/nap 0")

    assert first.outcome == "started"
    assert [(i.outcome, i.run) for i in (second, third)] == [("queued", None), ("queued", None)]
    runs = []
    for invocation in (first, second, third):
        invocation = wait_for(
            lambda i=invocation: (fresh := Invocation.objects.get(pk=i.pk)).run_id and fresh,
            timeout=60, what=f"invocation {invocation.pk} to start",
        )  # fmt: skip
        assert invocation.outcome == "started"
        runs.append(wait_run(invocation.run, timeout=60))
    assert [r.state for r in runs] == ["succeeded"] * 3
    # Never two at once: each started after the one before it finished.
    assert runs[0].finished_at <= runs[1].started_at and runs[1].finished_at <= runs[2].started_at


def test_cancel_running_cancels_the_open_run_then_starts(nap, start_agent):
    start_agent("napper", skills="sleep,noop", concurrency=2)
    execute = nap("cancel-running")

    first = execute("/nap 30")
    running(first)
    started = time.monotonic()
    second = execute("/nap 0")

    assert Run.objects.get(pk=first.run_id).state == "cancelled"
    assert Run.objects.get(pk=first.run_id).error == "cancelled by ada"
    assert second.outcome == "started"
    assert wait_run(second.run).state == "succeeded"
    assert time.monotonic() - started < 20  # the agent's slot was freed, not waited for


def test_allow_runs_them_side_by_side(nap, start_agent):
    start_agent("napper", skills="sleep,noop", concurrency=2)
    execute = nap("allow")

    first, second = execute("/nap 1"), execute("/nap 1")
    runs = [wait_run(first.run), wait_run(second.run)]

    assert [r.state for r in runs] == ["succeeded", "succeeded"]
    assert runs[1].steps.get().started_at < runs[0].steps.get().finished_at


def test_concurrent_invocations_with_skip_start_exactly_one_run(nap, users):
    execute = nap("skip")  # no agent: the run waits for one, and stays open

    def attempt(_):
        try:
            return execute("/nap 5").outcome
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = sorted(pool.map(attempt, range(6)))

    assert outcomes == ["skipped"] * 5 + ["started"]
    assert Run.objects.count() == 1


def test_an_overlap_key_that_cannot_render_refuses_the_dry_run_as_the_run(definitions, users):
    definitions("lane.md", """
        ---
        params: {type: object, properties: {lane: {type: string}}}
        overlap: {policy: skip, key: "lane:{{ params.lane }}"}
        workflow: {steps: [{id: a, skill: noop}]}
        ---
    """)  # fmt: skip
    commands_load(paths=[definitions.root])

    for dry_run in (True, False):
        with pytest.raises(CommandFailure) as refused:
            command_execute(text="/lane", user=users["ada"], source="api", dry_run=dry_run)
        assert (refused.value.code, str(refused.value)) == (
            "failed",
            "overlap key: 'dict object' has no attribute 'lane'",
        )
    assert not Run.objects.exists()


def test_a_paused_run_holds_its_key_and_a_queued_invocation_keeps_its_priority(nap, users):
    skip = nap("skip")
    first = skip("/nap 0")
    run_pause(run=first.run, user=None)

    skipped = skip("/nap 0")
    assert skipped.outcome == "skipped"

    nap("queue")  # the same command, queueing now
    queued = command_execute(
        text="/nap 0", user=users["ada"], source="api", priority=8, deadline=120
    )
    assert (queued.outcome, queued.priority, queued.deadline) == ("queued", 8, 120)
    run_cancel(run=first.run, user=None)
    assert invocations_dequeue() == 1

    queued.refresh_from_db()
    assert queued.run.priority == 8
    assert 119 < (queued.run.deadline - queued.run.created_at).total_seconds() <= 120
