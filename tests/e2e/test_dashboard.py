"""The dashboard in a real browser, live: a command from the console runs to success
before the user's eyes, a failed step is retried, an approval given and a run paused
and resumed from the run page, a killed agent turns offline, and a page whose socket
was cut catches up."""

import os
import signal
import uuid

import pytest
from django.contrib.auth import get_user_model

from agents.models import Agent
from coordination.models import Run, StepRun
from coordination.services import run_start, step_approve
from tests.e2e.conftest import USER, logged_in_page, screenshot, wait_live
from tests.processes import wait_for

# Records every state each step node of `root` shows, in order, across refreshes.
RECORD_STATES = """(root) => {
  window.seenStates = {};
  const note = () => {
    for (const node of document.querySelectorAll(`${root} [data-step-id]`)) {
      const seen = (window.seenStates[node.dataset.stepId] ||= []);
      if (seen.at(-1) !== node.dataset.state) seen.push(node.dataset.state);
    }
  };
  note();
  new MutationObserver(note).observe(document.querySelector(root),
    {subtree: true, childList: true, attributes: true, attributeFilter: ["data-state"]});
  window.notReloaded = true;
}"""


@pytest.fixture
def agent(shared_agent, transactional_db):
    """One agent for the module's tests that run steps: none needs a fresh one."""
    return shared_agent("ui", skills="noop,sleep,test.flaky", concurrency=2)


def db_states(run: Run) -> dict[str, str]:
    return dict(StepRun.objects.filter(run=run).values_list("key", "state"))


def page_states(page, root: str = "") -> dict[str, str]:
    return page.eval_on_selector_all(
        f"{root} [data-step-id]",
        "ns => Object.fromEntries(ns.map(n => [n.dataset.stepId, n.dataset.state]))",
    )


def test_a_command_from_the_console_runs_live_from_queued_to_succeeded(page, agent, ui_command):
    page.goto("/console/")
    page.wait_for_selector("body[data-console-ready]")
    wait_live(page)

    # Completion: the command's name, then its parameter.
    page.fill("#console-text", "/ui:ch")
    page.wait_for_selector('#suggestions li[data-suggestion="/ui:chain "]')
    page.press("#console-text", "Tab")
    page.type("#console-text", "sec")
    page.wait_for_selector('#suggestions li[data-suggestion="/ui:chain seconds="]')
    page.press("#console-text", "Tab")
    assert page.input_value("#console-text") == "/ui:chain seconds="
    # The form generated from the params schema writes the same text.
    page.fill('#console-generated input[name="seconds"]', "0.8")
    assert page.input_value("#console-text") == '/ui:chain seconds="0.8"'

    # A bad value: the parse/validation error inline, pointing at the token.
    page.fill("#console-text", "/ui:chain seconds=9")
    page.click("#console-run")
    error = page.wait_for_selector('#console-result .result.error[data-code="invalid"]')
    assert "seconds: 9 is greater than the maximum of 5" in error.inner_text()
    assert "^" in error.inner_text()  # under the token

    # The dry run's plan; nothing starts.
    page.fill("#console-text", "/ui:chain seconds=0.8")
    page.check("#console-dry")
    page.click("#console-run")
    plan = page.wait_for_selector('#console-result [data-outcome="planned"] [data-plan]')
    assert '"seconds": 0.8' in plan.inner_text()
    assert not Run.objects.exists()

    page.uncheck("#console-dry")
    page.evaluate(RECORD_STATES, "#console-run-view")
    page.click("#console-run")
    page.wait_for_selector('#console-run-view [data-run-state="succeeded"]', timeout=20_000)
    page.wait_for_selector('#console-run-view [data-step-id=done][data-state="succeeded"]')

    seen = page.evaluate("window.seenStates")
    assert seen["nap"][-1] == "succeeded" and {"queued", "running"} & set(seen["nap"]), seen
    assert seen["done"][-1] == "succeeded" and len(seen["done"]) > 1, seen  # changed live
    assert page.evaluate("window.notReloaded")
    run = Run.objects.get()
    assert run.state == "succeeded" and db_states(run) == {"nap": "succeeded", "done": "succeeded"}
    screenshot(page, "console")

    for path, name, hook in [
        (f"/runs/{run.pk}/", "run", f'[data-run-state="succeeded"][data-run-id="{run.pk}"]'),
        ("/runs/", "runs", f'tr[data-run-id="{run.pk}"][data-run-state="succeeded"]'),
        ("/", "overview", "[data-count=online]"),
        ("/agents/", "agents", '[data-agent="ui"]'),
        ("/messages/", "messages", "table.inboxes"),
    ]:
        page.goto(path)
        page.wait_for_selector(hook)
        screenshot(page, name)


def test_a_failed_step_shows_its_error_and_is_retried_from_the_page(page, agent, make_workflow):
    workflow = make_workflow(
        [
            {"id": "first", "skill": "noop"},
            {"id": "shaky", "skill": "test.flaky", "needs": "first",
             "with": {"key": str(uuid.uuid4()), "failures": 1}},
            {"id": "last", "skill": "noop", "needs": "shaky"},
        ]
    )  # fmt: skip
    run = run_start(workflow=workflow, params={})
    page.goto(f"/runs/{run.pk}/")
    page.wait_for_selector('[data-run-state="failed"]', timeout=20_000)
    page.wait_for_selector('[data-step-id=shaky][data-state="failed"]')
    assert page.inner_text('[data-step-error="shaky"]') == "flaky failure 1 of 1"
    screenshot(page, "run-failed")

    page.evaluate(RECORD_STATES, "#live")
    page.click('tr[data-step-row="shaky"] button[data-action="retry"]')
    page.wait_for_selector('[data-run-state="succeeded"]', timeout=20_000)
    # The run's state is written at once from its event; a refetch of the steps that
    # began before the last step's commit can show it running for a moment, until
    # the refetch its event asked for lands.
    page.wait_for_selector('[data-step-id=last][data-state="succeeded"]')

    assert page_states(page) == {"first": "succeeded", "shaky": "succeeded", "last": "succeeded"}
    assert db_states(run) == page_states(page)
    assert page.evaluate("window.notReloaded")


def test_an_approval_step_is_approved_from_the_page(page, agent, make_workflow):
    workflow = make_workflow(
        [
            {"id": "gate", "skill": "noop", "approval": True},
            {"id": "deploy", "skill": "noop", "needs": "gate"},
        ]
    )
    run = run_start(workflow=workflow, params={})
    page.goto(f"/runs/{run.pk}/")
    page.wait_for_selector('[data-step-id=gate][data-state="waiting"]')
    screenshot(page, "run-waiting")

    page.click('tr[data-step-row="gate"] button[data-action="approve"]')
    page.wait_for_selector('[data-run-state="succeeded"]', timeout=20_000)
    page.wait_for_selector('[data-step-id=deploy][data-state="succeeded"]')

    assert page_states(page) == {"gate": "succeeded", "deploy": "succeeded"} == db_states(run)
    assert Run.objects.get(pk=run.pk).state == "succeeded"


def test_an_agent_is_drained_and_resumed_from_its_card_and_turns_offline_when_killed(
    page, start_agent, coordinator
):
    doomed = start_agent("doomed", skills="noop")
    page.goto("/agents/")
    wait_live(page)
    card = '[data-agent="doomed"]'
    page.wait_for_selector(f'{card}[data-status="idle"]')

    page.click(f'{card} button[data-action="drain"]')
    page.wait_for_selector(f'{card}[data-status="draining"]')
    page.click(f'{card} button[data-action="resume"]')
    page.wait_for_selector(f'{card}[data-status="idle"]')

    page.evaluate("window.notReloaded = true")
    os.killpg(doomed.pid, signal.SIGKILL)
    # HIVE_AGENT_TIMEOUT is 4 s in the tests; the reaper runs every second.
    page.wait_for_selector(f'{card}[data-status="offline"]', timeout=20_000)
    assert Agent.objects.get(name="doomed").status == "offline"
    assert page.evaluate("window.notReloaded")
    screenshot(page, "agents-offline")


def test_after_the_socket_is_cut_and_restored_the_page_matches_the_database(
    page, agent, make_workflow
):
    cut = {"on": False, "routes": []}

    def route(ws):
        if cut["on"]:
            ws.close()  # the server is unreachable: the page retries with backoff
            return
        ws.connect_to_server()
        cut["routes"].append(ws)

    page.route_web_socket("**/ws/events/", route)
    workflow = make_workflow(
        [
            {"id": "gate", "skill": "noop", "approval": True},
            {"id": "one", "skill": "noop", "needs": "gate"},
            {"id": "two", "skill": "noop", "needs": "one"},
        ]
    )
    run = run_start(workflow=workflow, params={})
    page.goto(f"/runs/{run.pk}/")
    wait_live(page)
    page.wait_for_selector('[data-step-id=gate][data-state="waiting"]')
    page.evaluate("window.notReloaded = true")

    cut["on"] = True
    for ws in cut["routes"]:
        ws.close()
    page.wait_for_selector("body[data-live=off]")
    step_approve(step=StepRun.objects.get(run=run, key="gate"), user=None)
    wait_for(lambda: Run.objects.get(pk=run.pk).state == "succeeded", timeout=20, what="the run")
    page.wait_for_timeout(500)  # the page, offline, has not heard of it
    assert page.get_attribute("[data-run-id]", "data-run-state") == "waiting"

    cut["on"] = False
    page.wait_for_selector('[data-run-state="succeeded"]', timeout=15_000)
    page.wait_for_selector("body[data-live=on]")

    assert page_states(page) == db_states(run) == {"gate": "succeeded", "one": "succeeded",
                                                   "two": "succeeded"}  # fmt: skip
    assert page.evaluate("window.notReloaded")


def test_a_step_is_rejected_and_a_run_cancelled_from_the_page(page, make_workflow):
    workflow = make_workflow(
        [
            {"id": "gate", "skill": "noop", "approval": True},
            {"id": "deploy", "skill": "noop", "needs": "gate"},
        ]
    )
    rejected, cancelled = (run_start(workflow=workflow, params={}) for _ in range(2))
    page.on("dialog", lambda dialog: dialog.accept("not on a Friday"))

    page.goto(f"/runs/{rejected.pk}/")
    page.click('tr[data-step-row="gate"] button[data-action="reject"]')
    page.wait_for_selector('[data-run-state="failed"]')
    assert "not on a Friday" in page.inner_text('[data-step-error="gate"]')

    page.goto(f"/runs/{cancelled.pk}/")
    page.click('button[data-action="cancel"]')
    page.wait_for_selector('[data-run-state="cancelled"]')

    states = dict(Run.objects.values_list("pk", "state"))
    assert (states[rejected.pk], states[cancelled.pk]) == ("failed", "cancelled")


def test_a_running_run_is_paused_and_resumed_from_the_page(page, agent, make_workflow):
    workflow = make_workflow(
        [
            {"id": "nap", "skill": "sleep", "with": {"seconds": 2}},
            {"id": "next", "skill": "noop", "needs": "nap"},
        ]
    )
    run = run_start(workflow=workflow, params={})
    page.goto(f"/runs/{run.pk}/")
    wait_live(page)
    page.wait_for_selector('[data-step-id=nap][data-state="running"]')
    page.evaluate("window.notReloaded = true")

    page.click('button[data-action="pause"]')
    page.wait_for_selector('[data-run-state="paused"]')
    page.wait_for_selector('button[data-action="resume"]')  # a refetch since the pause
    assert page.inner_text("[data-run-state-label]") == "paused"
    assert page.inner_text("[data-run-waiting]") == f"paused by {USER}"
    # The running step finishes; the next one is held with its reason, undispatched.
    page.wait_for_selector('[data-step-id=nap][data-state="succeeded"]', timeout=20_000)
    page.wait_for_selector('[data-step-id=next][data-state="pending"][data-waiting]')
    assert page.inner_text('[data-step-waiting="next"]') == "paused"
    page.wait_for_timeout(1000)
    held = StepRun.objects.get(run=run, key="next")
    assert (held.state, held.waiting_reason, held.agent) == ("pending", "paused", "")
    assert Run.objects.get(pk=run.pk).state == "paused"
    assert not page.query_selector('button[data-action="pause"]')
    screenshot(page, "run-paused")

    page.click('button[data-action="resume"]')
    page.wait_for_selector('[data-run-state="succeeded"]', timeout=20_000)
    # A finished run has no buttons: only a refetch after the last event shows that (an
    # event's hint alone can be overwritten by a refetch begun before it).
    page.wait_for_selector(".run-head button", state="detached")

    assert page_states(page) == db_states(run) == {"nap": "succeeded", "next": "succeeded"}
    assert page.inner_text("[data-run-state-label]") == "succeeded"
    assert not page.query_selector("[data-run-waiting]")
    assert page.evaluate("window.notReloaded")


POST = """async (url) => (await fetch(url, {
  method: "POST", credentials: "same-origin",
  headers: {"X-CSRFToken": document.querySelector('meta[name="csrf-token"]').content},
})).status"""


def test_without_change_run_the_page_offers_no_pause_and_the_api_refuses_one(
    browser, live_server_url, transactional_db, make_workflow
):
    # A user who sees the run (they started it) but may not change it.
    watcher = get_user_model().objects.create_user("watcher", password="pw-watcher-1")
    workflow = make_workflow([{"id": "gate", "skill": "noop", "approval": True}])
    run = run_start(workflow=workflow, params={}, user=watcher)

    with logged_in_page(browser, live_server_url, "watcher", "pw-watcher-1") as page:
        page.goto(f"/runs/{run.pk}/")
        page.wait_for_selector('[data-step-id=gate][data-state="waiting"]')
        assert page.query_selector_all("button[data-action]") == []
        refused = page.evaluate(POST, f"/api/v1/runs/{run.pk}/pause/")

    assert refused == 403
    assert Run.objects.get(pk=run.pk).state == "waiting"
