"""Start and stop real Hive processes for tests, by process group, even when a test fails."""

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from django.conf import settings
from django.db import connection

from ops.processes import hive_argv

BASE_DIR = Path(settings.BASE_DIR)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The test database as a URL, so child processes use it and not the dev one."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "tests.settings"),
        "DATABASE_URL": database_url(),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def wait_for(predicate: Callable[[], object], *, timeout: float, what: str, interval=0.1):
    """Poll `predicate` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of group `pgid`, read from /proc.

    kill(0) would count zombies: orphans of a SIGKILLed leader are reaped by
    whatever PID 1 is, which in a container may be slow or never.
    """
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


class ManagedProcess:
    """One process in its own process group, logging to a file."""

    def __init__(self, argv: list[str], *, log_dir: Path, name: str, env: dict[str, str]):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=BASE_DIR,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stop() reaches pool children too
        )
        self.pid = self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def group_members_now(self) -> list[int]:
        return group_members(self.pid)

    def group_alive(self) -> bool:
        return bool(group_members(self.pid))

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, *, grace: float = 15.0, terminated: bool = False) -> int | None:
        """SIGTERM the whole group (unless `terminated` already), then SIGKILL whatever
        is left after `grace` seconds."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if not (terminated and sig == signal.SIGTERM):
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    break
            if self._wait_group_gone(wait):
                break
        self._log.close()
        return self.proc.wait(timeout=5)

    def _wait_group_gone(self, timeout: float) -> bool:
        # The leader is our child and must be reaped; orphaned pool processes
        # (after a SIGKILL of the leader) are not, so they are watched in /proc.
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None or self.group_alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


class ProcessGroup:
    """Every process a test started; `stop_all` runs at teardown whatever happened."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.processes: list[ManagedProcess] = []

    def start(self, *args: str, name: str, **env: str) -> ManagedProcess:
        """Start `manage.py hive ARGS`."""
        return self.start_argv(hive_argv(*args), name=name, **env)

    def start_argv(self, argv: list[str], *, name: str, **env: str) -> ManagedProcess:
        process = ManagedProcess(argv, log_dir=self.log_dir, name=name, env=child_env(**env))
        self.processes.append(process)
        return process

    def start_web(self, **env: str) -> tuple[ManagedProcess, str]:
        """Start `hive web` on a free port; return it and its URL once it answers."""
        port = free_port()
        web = self.start("web", f"--port={port}", name=f"web-{port}", **env)
        url = f"http://127.0.0.1:{port}"

        def answers():
            assert web.alive(), f"web exited:\n{web.log()}"
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, timeout=60, what="the web server to answer")
        return web, url

    def stop_all(self) -> None:
        """SIGTERM every group at once, then wait for each: they shut down side by side
        (an agent's warm shutdown takes seconds)."""
        stopping = list(reversed(self.processes))
        for process in stopping:
            with contextlib.suppress(ProcessLookupError):  # gone already
                os.killpg(process.pid, signal.SIGTERM)
        for process in stopping:
            process.stop(terminated=True)
