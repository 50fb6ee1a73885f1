"""`hive up` supervises: a process that dies is restarted, the others never stop.

One `hive up` for the module (three agents, Flower unable to bind its port at first),
started by the fixture. The tests run in order: Flower flaps first, then it is let
up; an agent, then the web server is SIGKILLed; last an agent is shut down on
purpose (it stays down)."""

import itertools
import os
import re
import signal
import socket
import textwrap
import time

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from agents.models import Agent
from coordination.services import run_start
from events.models import Event
from tests.chaos.support import succeeded_once
from tests.e2e.conftest import TIMEOUT_MS, chromium_browser, wait_live
from tests.processes import free_port, group_members, wait_for
from tests.runs import wait_run

ADMIN_PASSWORD = "supervised-admin-pw"
AGENTS = ("alpha", "beta", "spare")
STARTED = re.compile(r"\| (\S+) started \(pid=(\d+)\)")
# What the Must-show asks: a SIGKILLed process is back within this many seconds.
BACK_WITHIN = 15

pytestmark = pytest.mark.django_db(transaction=True)


class Stack:
    def __init__(self, up, web: str, flower: str, flower_blocker: socket.socket):
        self.up, self.web, self.flower = up, web, flower
        self.flower_blocker = flower_blocker
        self.agent_rows: dict[str, dict] = {}

    def pids(self) -> dict[str, int]:
        """Each process's pid as `hive up` last started it (its `started (pid=N)` line)."""
        return {name: int(pid) for name, pid in STARTED.findall(self.up.log())}

    def starts(self, name: str) -> int:
        return sum(started == name for started, _ in STARTED.findall(self.up.log()))

    def auth(self) -> dict[str, str]:
        admin = get_user_model().objects.get(username="admin")
        return {"Authorization": f"Token {Token.objects.get_or_create(user=admin)[0].key}"}

    def assert_untouched(self, before: dict[str, int], *, but: str = "") -> None:
        """Every process but `but` still runs with the pid it had in `before`."""
        now = self.pids()
        for name, pid in before.items():
            if name != but:
                assert now[name] == pid, f"{name} was restarted:\n{self.up.log()[-3000:]}"
                assert pid in group_members(pid), f"{name} (pid {pid}) is gone"
        assert self.up.alive(), self.up.log()[-3000:]


@pytest.fixture(autouse=True)
def _rows_back(stack):
    """The tests commit (hive up's processes must see what they write), so the test
    database is emptied after each one, hive up's rows with it, and hive up writes
    them only as it starts: the admin and each agent's row. They are put back as they
    were when the last test ended (an agent's heartbeat updates its row, never makes
    it: tests/conftest.py's shared_agent does the same)."""
    users = get_user_model().objects
    if not users.filter(username="admin").exists():
        users.create_superuser("admin", password=ADMIN_PASSWORD)
    for row in stack.agent_rows.values():
        if not Agent.objects.filter(name=row["name"]).exists():
            Agent.objects.create(**row)
    yield
    stack.agent_rows = {row["name"]: row for row in Agent.objects.values()}


@pytest.fixture(scope="module")
def stack(module_processes, django_db_blocker, tmp_path_factory):
    pool = tmp_path_factory.mktemp("pool") / "agents.yaml"
    pool.write_text(
        textwrap.dedent("""\
        agents:
          - {name: alpha, role: worker, skills: [noop, sleep], concurrency: 2}
          - {name: beta, role: worker, skills: [noop, sleep], concurrency: 2}
          - {name: spare, role: spare, skills: [noop]}
        """)
    )
    # Flower's port, taken: Flower exits at once on every start until it is let go.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    web_port, flower_port = free_port(), blocker.getsockname()[1]
    with django_db_blocker.unblock():
        up = module_processes.start(
            "up", name="up",
            HIVE_PORT=str(web_port), HIVE_FLOWER_PORT=str(flower_port),
            HIVE_ADMIN_PASSWORD=ADMIN_PASSWORD, HIVE_AGENTS_FILE=str(pool),
            # Growing 1 s, 2 s: flapping at the third quick exit.
            HIVE_RESTART_DELAY="1", HIVE_RESTART_DELAY_MAX="2",
        )  # fmt: skip
        stack = Stack(up, f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{flower_port}",
                      blocker)  # fmt: skip

        def online():
            assert up.alive(), up.log()
            idle = Agent.objects.filter(status="idle", name__in=AGENTS).count() == len(AGENTS)
            return idle and _get(f"{stack.web}/healthz") == 200

        wait_for(online, timeout=120, what="the agents and the web server")
        stack.agent_rows = {row["name"]: row for row in Agent.objects.values()}
        yield stack
        blocker.close()
        up.signal(signal.SIGINT)
        up.proc.wait(timeout=60)
        module_processes.stop_all()
        call_command("flush", verbosity=0, interactive=False, reset_sequences=False)


@pytest.fixture(scope="module")
def browser():
    with pytest.MonkeyPatch.context() as patch:
        # Playwright's sync API keeps an asyncio loop in this thread (tests/e2e/conftest).
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with chromium_browser() as chromium:
            yield chromium


@pytest.fixture
def dashboard(stack, browser):
    """The overview of the stack's web server, logged in (a session lives as long as
    the test's rows)."""
    context = browser.new_context(base_url=stack.web)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto("/accounts/login/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{stack.web}/")
    yield page
    context.close()


def test_a_process_that_exits_at_once_is_retried_with_growing_delay_and_shown_flapping(
    stack, dashboard
):
    before = {n: p for n, p in stack.pids().items() if n != "flower"}

    def restarts():
        return list(Event.objects.filter(kind="process.restarted", subject="process:flower"))

    # Flapping once the backoff reached the cap (1 s, then 2 s); retried at the cap since.
    wait_for(
        lambda: sum(e.data["flapping"] for e in restarts()) >= 2,
        timeout=120,
        what="Flower to be restarted twice as flapping",
    )
    seen = restarts()
    assert [e.data["delay"] for e in seen[:3]] == [0, 1, 2]
    assert {e.data["delay"] for e in seen[3:]} == {2}
    assert [e.data["restarts"] for e in seen] == list(range(1, len(seen) + 1))
    assert {e.data["exit"] for e in seen} == {"exit 1"}
    # A restart came no sooner than its delay after the one before (the run between
    # them was Flower's start-up, until it failed to bind).
    for earlier, later in itertools.pairwise(seen):
        assert (later.created_at - earlier.created_at).total_seconds() >= later.data["delay"]
    flapping = Event.objects.get(kind="process.flapping", subject="process:flower")
    assert flapping.data["restarts"] == 3
    assert "flower is flapping: 3 exits in a row" in stack.up.log()

    # The overview says so, and the rest keeps serving meanwhile.
    dashboard.goto("/")
    dashboard.wait_for_selector('[data-process="flower"][data-process-state="flapping"]')
    stack.assert_untouched(before)
    assert Agent.objects.filter(status="idle", name__in=AGENTS).count() == len(AGENTS)

    # Never given up on: once its port is free, Flower serves.
    stack.flower_blocker.close()
    wait_for(lambda: _get(f"{stack.flower}/healthcheck") == 200, timeout=30, what="Flower to serve")


def test_an_agent_sigkilled_is_restarted_under_its_name_and_the_run_succeeds(stack, make_workflow):
    workflow = make_workflow([
        {"id": "work", "skill": "sleep", "foreach": "{{ params.numbers }}",
         "with": {"seconds": 2}},
        {"id": "done", "skill": "noop", "needs": ["work"], "with": {"ok": True}},
    ])  # fmt: skip
    run = run_start(workflow=workflow, params={"numbers": list(range(8))})
    wait_for(
        lambda: run.steps.filter(state="running", agent="beta").exists(),
        timeout=30,
        what="beta to run a step",
    )
    before = stack.pids()
    victim = Agent.objects.get(name="beta").pid
    assert victim == before["agent.beta"]  # the agent is the process `hive up` started

    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(
        lambda: Agent.objects.filter(name="beta", status="idle").exclude(pid=victim).exists(),
        timeout=BACK_WITHIN,
        what="beta to be online again",
    )
    back = time.monotonic() - killed
    print(f"\nagent SIGKILLed: online again under its name in {back:.1f} s")

    run = wait_run(run, timeout=90)
    assert run.state == "succeeded", run.error
    once = succeeded_once(run)
    assert len(once) == run.steps.count() == 10  # 8 items, their group, done
    assert set(once.values()) == {1}
    restarted = Event.objects.get(kind="process.restarted", subject="process:agent.beta")
    assert restarted.data | {"delay": 0} == {
        "process": "agent.beta", "status": -9, "exit": "killed by SIGKILL", "restarts": 1,
        "delay": 0, "flapping": False,
    }  # fmt: skip
    assert stack.pids()["agent.beta"] == Agent.objects.get(name="beta").pid
    stack.assert_untouched(before, but="agent.beta")


def test_the_web_server_sigkilled_is_back_and_the_dashboard_reconnects(stack, dashboard):
    dashboard.goto("/")
    wait_live(dashboard)
    before = stack.pids()

    os.kill(before["web"], signal.SIGKILL)
    killed = time.monotonic()
    dashboard.wait_for_selector("body[data-live=off]")
    wait_for(
        lambda: _get(f"{stack.web}/healthz") == 200,
        timeout=BACK_WITHIN,
        what="the web server to answer again",
    )
    back = time.monotonic() - killed
    # The page's socket opens again on its own, and the page catches up through it:
    # the overview shows the restart, which happened while it was away.
    dashboard.wait_for_selector("body[data-live=on]", timeout=BACK_WITHIN * 1000)
    reconnected = time.monotonic() - killed
    dashboard.wait_for_selector('[data-process="web"][data-process-state="restarted"]')
    print(f"\nweb SIGKILLed: answering in {back:.1f} s, dashboard live in {reconnected:.1f} s")

    assert stack.pids()["web"] != before["web"]
    stack.assert_untouched(before, but="web")


def test_an_agent_shut_down_on_purpose_stays_down_and_nothing_else_stops(stack):
    before = stack.pids()

    response = httpx.post(f"{stack.web}/api/v1/agents/spare/shutdown/", headers=stack.auth())

    assert response.status_code == 200, response.text
    wait_for(
        lambda: Event.objects.filter(kind="process.stopped", subject="process:agent.spare"),
        timeout=60,
        what="hive up to see spare stop",
    )
    assert "agent.spare stopped on purpose (exit 0); it stays down" in stack.up.log()
    assert Agent.objects.get(name="spare").status == "offline"
    # The request is on the record, naming the process it stopped.
    request = Event.objects.get(kind="agent.shutdown", subject="agent:spare")
    assert request.data["pid"] == before["agent.spare"]
    # Down and not restarted: one start, no restart event, its process gone.
    assert stack.starts("agent.spare") == 1
    assert not Event.objects.filter(kind="process.restarted", subject="process:agent.spare")
    assert not group_members(before["agent.spare"])
    stack.assert_untouched(before, but="agent.spare")
    assert _get(f"{stack.web}/healthz") == 200


def _get(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None
