"""The supervisor's loop (ops/supervisor.py) on small real processes, in about a second:
restarts with backoff, flapping, a stop that was asked for, and SIGTERM stopping all.
tests/hive_project/test_up_supervises.py proves the same on a whole `hive up`."""

import io
import os
import signal
import sys
import threading

from honcho.printer import Printer

from ops.restarts import RestartPolicy
from ops.supervisor import Supervisor
from tests.processes import wait_for

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _supervise(processes: dict[str, list[str]], *, until, asked=frozenset()):
    """Run a Supervisor over `processes` in this (the main) thread until `until(events)`
    holds, then SIGTERM it; return its events, its output and its return code."""
    events: list[tuple[str, str, dict]] = []
    output = io.StringIO()
    supervisor = Supervisor(
        policy=RestartPolicy(delay=0.05, delay_max=0.2),
        intended=lambda exit_: exit_.name in asked,
        record=lambda kind, name, data: events.append((kind, name, data)),
        printer=Printer(output),
    )
    for name, argv in processes.items():
        supervisor.add_process(name, argv)

    def stop_when_done():
        try:  # stopped either way: a timeout shows as the test's assertions failing
            wait_for(lambda: until(events), timeout=30, what="the supervisor's events")
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    watcher = threading.Thread(target=stop_when_done, daemon=True)
    watcher.start()
    try:
        supervisor.loop()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    watcher.join(timeout=5)
    return events, output.getvalue(), supervisor.returncode


def _pids(output: str, name: str) -> list[int]:
    marker = f"{name} started (pid="
    return [int(line.split(marker)[1].rstrip(")")) for line in output.splitlines()
            if marker in line]  # fmt: skip


def test_a_crashing_process_is_restarted_with_growing_delay_until_flapping_the_rest_untouched():
    def flapped_a_while(events):
        flapping = [data for kind, _, data in events if kind == "process.restarted"]
        return sum(data["flapping"] for data in flapping) >= 2

    events, output, returncode = _supervise(
        {"steady": SLEEP, "crasher": _python("raise SystemExit(3)")}, until=flapped_a_while
    )

    restarts = [data for kind, name, data in events if kind == "process.restarted"]
    assert {name for _, name, _ in events} == {"crasher"}
    assert [r["delay"] for r in restarts[:4]] == [0, 0.05, 0.1, 0.2]
    assert [r["restarts"] for r in restarts] == list(range(1, len(restarts) + 1))
    assert {r["exit"] for r in restarts} == {"exit 3"}
    flapping = [data for kind, _, data in events if kind == "process.flapping"]
    assert len(flapping) == 1 and flapping[0]["restarts"] == 4
    assert "crasher restarted after exit 3 (restart 1, after 0 s)" in output
    assert "crasher is flapping: 4 exits in a row" in output
    # The steady one started once and was stopped by the SIGTERM only.
    assert len(_pids(output, "steady")) == 1
    assert "SIGTERM received" in output
    assert returncode == 143


def test_a_process_killed_by_a_signal_is_restarted_and_one_asked_to_stop_stays_down():
    victim = _python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")

    def both_seen(events):
        kinds = {(kind, name) for kind, name, _ in events}
        return {("process.restarted", "victim"), ("process.stopped", "asked")} <= kinds

    events, output, _ = _supervise(
        {"victim": victim, "asked": _python("pass"), "steady": SLEEP},
        until=both_seen,
        asked={"asked"},
    )

    restarted = next(d for k, n, d in events if (k, n) == ("process.restarted", "victim"))
    assert restarted["exit"] == "killed by SIGKILL" and restarted["status"] == -9
    assert "asked stopped on purpose (exit 0); it stays down" in output
    assert len(_pids(output, "asked")) == 1
    assert not any(n == "asked" for k, n, _ in events if k != "process.stopped")
