"""The dashboard's live path, end to end: from the commit of a step's state change to
the run page's DOM showing it in headless Chromium (engine's event row -> publisher
thread -> `hive:events` -> relay -> Channels pub/sub layer -> daphne -> WebSocket ->
live.js), at 10 and at 200 changes a second; beside the raw Channels group_send ->
WebSocket latency through the same daphne, measured in the same run at the same rates.

Coalescing may skip a step's intermediate state under a burst; a change counts as
shown when its step first shows it or a later change (the DOM is never older)."""

import asyncio
import json
import shutil
import statistics
import threading
import time

from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test import Client

from bench._table import Result
from coordination.models import Run, StepRun, Workflow
from events.services import event_emit
from tests.e2e.conftest import CHROMIUM_ARGS
from tests.processes import ProcessGroup

STEPS = 20
RATES = [10, 200]
SECONDS = {10: 6, 200: 5}
# Changes first made at each rate and not counted: connections, caches, the JIT.
WARM_UP_SECONDS = 1
USER, PASSWORD = "bench-dashboard", "bench-dashboard-pw"


def run(group: ProcessGroup) -> list[Result]:
    chromium = shutil.which("chromium")
    if not chromium:
        print("bench dashboard: skipped, no Chromium (apt-get install -y chromium)")
        return []
    _, url = group.start_web(HIVE_LOG_LEVEL="WARNING")
    user = _user()
    runs = [_run(user) for _ in RATES]
    raw = {rate: _raw_latency(url, user, rate) for rate in RATES}
    dom = _dom_latency(chromium, url, runs, RATES)
    rows = []
    base = "group_send→WebSocket"
    for rate in RATES:
        for q, goal in ((50, ""), (99, "<= 100 ms" if rate == 200 else "")):
            rows.append(Result("dashboard", f"commit→DOM p{q} at {rate} changes/s",
                               _q(dom[rate], q), _q(raw[rate], q), "ms", base, goal))  # fmt: skip
    return rows


def _q(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100)[q - 1] if len(samples) > 1 else samples[0]


def _user():
    User = get_user_model()
    user, _ = User.objects.get_or_create(username=USER, defaults={"is_staff": True})
    user.is_staff = user.is_superuser = True
    user.set_password(PASSWORD)
    user.save()
    return user


def _run(user) -> Run:
    """A run of STEPS independent steps that nothing dispatches: the bench changes
    their states itself, as the engine does (row and event in one transaction)."""
    spec = {"steps": [{"id": f"s{i}", "skill": "noop", "needs": []} for i in range(STEPS)],
            "params": {}}  # fmt: skip
    workflow, _ = Workflow.objects.get_or_create(
        name="bench-dashboard", version=1, defaults={"spec": spec, "digest": "bench"}
    )
    run = Run.objects.create(workflow=workflow, state="running", created_by=user)
    StepRun.objects.bulk_create(
        StepRun(run=run, step_id=f"s{i}", key=f"s{i}", skill="noop", state="queued")
        for i in range(STEPS)
    )
    return run


def _changes(run: Run, rate: int) -> tuple[dict[int, float], dict[int, str]]:
    """Change step states at `rate` a second; each change's commit time and step."""
    committed, step_of = {}, {}
    warm_up = rate * WARM_UP_SECONDS
    count = warm_up + rate * SECONDS[rate]
    started = time.perf_counter()
    for i in range(count):
        pause = started + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        key = f"s{i % STEPS}"
        state = "running" if (i // STEPS) % 2 == 0 else "queued"
        with transaction.atomic():
            StepRun.objects.filter(run=run, key=key).update(state=state)
            event = event_emit(kind=f"step.{state}", subject=f"run:{run.pk}", data={"step": key})
        if i >= warm_up:
            committed[event.pk] = time.time() * 1000
        step_of[event.pk] = key
    connection.close()  # this thread's own
    return committed, step_of


def _dom_latency(chromium: str, url: str, runs: list[Run], rates: list[int]) -> dict:
    from playwright.sync_api import sync_playwright

    results = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                             args=CHROMIUM_ARGS)  # fmt: skip
        # The page's CSP forbids eval, which Playwright's string predicates use; the
        # bench measures the page, it does not test the policy (tests/security does).
        page = browser.new_page(base_url=url, bypass_csp=True)
        page.goto("/accounts/login/")
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/")
        for run, rate in zip(runs, rates, strict=True):
            page.goto(f"/runs/{run.pk}/")
            page.wait_for_selector("body[data-live=on][data-synced]", timeout=30_000)
            page.evaluate("""() => { window.applied = [];
              document.addEventListener("hive:applied", (e) => window.applied.push(
                [e.detail.seq, performance.timeOrigin + performance.now()])); }""")
            # Playwright's sync API keeps an event loop in this thread, where Django
            # refuses database calls: the changes are made from a thread of their own.
            committed, step_of = _in_thread(_changes, run, rate)
            last = max(committed)
            page.wait_for_function(f"window.applied.some(([seq]) => seq >= {last})",
                                   timeout=30_000)  # fmt: skip
            applied = page.evaluate("window.applied")
            results[rate] = _shown_after(committed, step_of, applied)
        browser.close()
    return results


def _in_thread(function, *args):
    out = []
    worker = threading.Thread(target=lambda: out.append(function(*args)))
    worker.start()
    worker.join()
    return out[0]


def _shown_after(committed: dict, step_of: dict, applied: list) -> list[float]:
    """Per change: ms from its commit until its step showed it or a later change."""
    first_shown: dict[int, float] = {}
    for seq, at in applied:
        if seq in step_of and (seq not in first_shown or at < first_shown[seq]):
            first_shown[seq] = at
    latencies, next_shown = [], {}
    for seq in sorted(committed, reverse=True):  # newest first: carry later shows back
        key = step_of[seq]
        if seq in first_shown:
            next_shown[key] = min(first_shown[seq], next_shown.get(key, float("inf")))
        if key in next_shown:
            latencies.append(next_shown[key] - committed[seq])
    return latencies


def _raw_latency(url: str, user, rate: int) -> list[float]:
    """group_send of a timestamped message to a group a socket (the dashboard's own
    consumer, same daphne and layer) joined, at `rate` a second; ms until received."""
    from websockets.sync.client import connect

    client = Client()
    client.force_login(user)
    headers = {"Origin": url, "Cookie": f"sessionid={client.cookies['sessionid'].value}"}
    group = "run.999999999"  # a run group no page watches; staff may join any
    received: list[float] = []
    warm_up = rate * WARM_UP_SECONDS
    count = warm_up + rate * SECONDS[rate]
    with connect(url.replace("http", "ws") + "/ws/events/", additional_headers=headers) as ws:
        ws.send(json.dumps({"subscribe": "run", "run": 999999999}))
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"

        def receive():
            while len(received) < count:
                message = json.loads(ws.recv(timeout=30))
                if message["type"] == "events":
                    sent = message["events"][0]["data"]["sent"]
                    received.append(time.time() * 1000 - sent)

        reader = threading.Thread(target=receive)
        reader.start()
        asyncio.run(_send_paced(group, rate, count))
        reader.join(timeout=60)
    return received[warm_up:]


async def _send_paced(group: str, rate: int, count: int) -> None:
    """group_send from one event loop (the layer keeps its connection per loop)."""
    layer = get_channel_layer()
    started = time.perf_counter()
    for i in range(count):
        pause = started + i / rate - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        event = {"seq": i, "kind": "bench", "subject": "bench", "at": "",
                 "data": {"sent": time.time() * 1000}}  # fmt: skip
        message = {"type": "events.batch", "group": group, "after": None, "upto": i,
                   "events": [event]}  # fmt: skip
        await layer.group_send(group, message)
