"""Durable waits with real agents and a real coordinator: a sleep survives a restart of
every process while it sleeps, holding no worker, and ends on time; a signal sent by
the API or by /hive:signal wakes its step with its payload."""

import os
import signal
import time

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from agents.mailbox import user_sender
from agents.services import message_send
from commands.executing import command_execute
from commands.loading import commands_load
from coordination.models import Run, Signal
from coordination.services import run_cancel, run_start
from tests.conftest import agent_start
from tests.processes import wait_for
from tests.runs import steps_of, wait_run

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_sleep_survives_every_process_restarting_and_holds_no_worker(processes, make_workflow):
    agent = agent_start(processes, "sleeper", skills="noop,sleep", concurrency=1)
    coordinator = processes.start("coordinator", name="coordinator")
    napping = make_workflow(
        [{"id": "before", "skill": "noop"},
         {"id": "nap", "needs": "before", "sleep": 20},
         {"id": "after", "skill": "noop", "needs": "nap"}]
    )  # fmt: skip
    busy = make_workflow([{"id": "work", "skill": "sleep", "with": {"seconds": 0.2}}])
    run = run_start(workflow=napping, params={})
    wait_for(lambda: steps_of(run)["nap"].state == "waiting", timeout=30, what="the nap")

    # The agent has one worker: it runs other steps while the run sleeps.
    others = [wait_run(run_start(workflow=busy, params={})) for _ in range(3)]
    assert [other.state for other in others] == ["succeeded"] * 3
    # Every process dies, at once, and comes back.
    for process in (agent, coordinator):
        os.killpg(process.pid, signal.SIGKILL)
    time.sleep(2)
    agent_start(processes, "sleeper", skills="noop,sleep", concurrency=1)
    processes.start("coordinator", name="coordinator-again")

    run = wait_run(run, timeout=60)

    assert run.state == "succeeded"
    nap = steps_of(run)["nap"]
    due = nap.started_at.timestamp() + 20
    assert 0 <= nap.finished_at.timestamp() - due < 5, "the nap ended within a few seconds of due"
    assert nap.agent == "" and nap.tries == 0  # no agent ran it


def test_signals_by_api_hive_signal_and_a_message_wake_their_steps(
    start_agent, coordinator, make_workflow
):
    start_agent("signals", skills="noop")
    workflow = make_workflow(
        [{"id": "ci", "wait_for": {"signal": "ci-passed", "timeout": 120}},
         {"id": "review", "wait_for": {"signal": "approved", "timeout": 120}},
         {"id": "scan", "wait_for": {"signal": "scanned", "timeout": 120}},
         {"id": "ship", "skill": "noop", "needs": ["ci", "review", "scan"],
          "with": {"build": "{{ steps.ci.output.build }}", "by": "{{ steps.review.output }}",
                   "scan": "{{ steps.scan.output }}"}}]
    )  # fmt: skip
    admin = User.objects.create_superuser("admin", password="pw")
    run = run_start(workflow=workflow, params={}, user=admin)
    wait_for(lambda: steps_of(run)["scan"].state == "waiting", timeout=30, what="the waits")
    api = APIClient()
    api.force_authenticate(admin)

    sent = api.post(f"/api/v1/runs/{run.pk}/signals/",
                    {"name": "ci-passed", "payload": {"build": 7}}, format="json")  # fmt: skip
    command_execute(text=f"/hive:signal {run.pk} approved '\"ada\"'", user=admin, source="api")
    # The third through an agent's inbox: a message of kind hive.signal, sent as admin.
    message_send(sender=user_sender(admin), to="signals", kind="hive.signal",
                 payload={"run": run.pk, "name": "scanned", "payload": "clean"})  # fmt: skip

    assert sent.status_code == 201
    run = wait_run(run)
    assert run.state == "succeeded"
    assert steps_of(run)["ship"].output == {"build": 7, "by": "ada", "scan": "clean"}
    sources = sorted(Signal.objects.filter(run=run).values_list("source", flat=True))
    assert sources == ["api", "command", "message"]


def test_the_demo_canary_soaks_waits_for_its_signal_and_promotes(
    start_agents, coordinator, settings
):
    settings.HIVE_COMMAND_DIRS = []
    commands_load()
    start_agents({"name": "builder", "role": "builder", "skills": "noop"},
                 {"name": "reviewer", "role": "reviewer", "skills": "noop"})  # fmt: skip
    admin = User.objects.create_superuser("admin", password="pw")

    invocation = command_execute(text="/demo:canary 1.4.0 soak=1", user=admin, source="api")
    run = invocation.run
    wait_for(lambda: steps_of(run)["health"].state == "waiting", timeout=30, what="the health wait")
    command_execute(text=f"/hive:signal {run.pk} healthy '{{\"errors\": 0}}'", user=admin,
                    source="api")  # fmt: skip

    run = wait_run(run)
    assert run.state == "succeeded"
    assert steps_of(run)["promote"].output == {
        "promoted": "1.4.0", "health": {"errors": 0}, "smoked": 2
    }  # fmt: skip
    children = Run.objects.filter(parent_step__run=run).order_by("pk")
    assert [c.params["service"] for c in children] == ["api", "web"]


def test_sub_workflows_on_real_agents(start_agent, coordinator, make_workflow):
    start_agent("children", skills="noop,sleep,test.fail", concurrency=2)
    admin = User.objects.create_superuser("admin", password="pw")
    child = make_workflow(
        [{"id": "build", "skill": "sleep", "with": {"seconds": 0.2}},
         {"id": "ship", "skill": "noop", "needs": "build", "with": {"item": "{{ params.n }}"}}],
        name="child",
    )  # fmt: skip
    make_workflow([{"id": "boom", "skill": "test.fail"}], name="boom")
    make_workflow([{"id": "nap", "sleep": 600}], name="napping")
    fan = make_workflow([{"id": "each", "workflow": "child", "foreach": "{{ range(5) | list }}",
                          "with": {"n": "{{ item }}"}}])  # fmt: skip
    failing = make_workflow([{"id": "call", "workflow": "boom"}])
    long = make_workflow([{"id": "call", "workflow": "napping"}, {"id": "also", "workflow": "child",
                          "with": {"n": 9}}])  # fmt: skip

    fanned = wait_run(run_start(workflow=fan, params={}, user=admin), timeout=60)
    failed = wait_run(run_start(workflow=failing, params={}, user=admin))
    cancelled = run_start(workflow=long, params={}, user=admin)
    wait_for(lambda: Run.objects.filter(parent_step__run=cancelled).count() == 2,
             timeout=30, what="the children to start")  # fmt: skip
    run_cancel(run=cancelled)

    assert fanned.state == "succeeded"
    assert steps_of(fanned)["each"].output == [{"ship": {"item": n}} for n in range(5)]
    assert child.runs.filter(state="succeeded").count() >= 5
    assert failed.state == "failed" and "workflow: run" in steps_of(failed)["call"].error
    children = wait_for(
        lambda: (found := list(Run.objects.filter(parent_step__run=cancelled)))
        and all(c.state in ("cancelled", "succeeded") for c in found) and found,
        timeout=30, what="the children to end",
    )  # fmt: skip
    assert "cancelled" in {c.state for c in children}
