"""Fixtures that run Hive on real parts: Redis (embedded or REDIS_URL), the test
database, and real agent, coordinator and web processes."""

import itertools

import pytest
import redis
from django.conf import settings

from agents.models import Agent
from coordination.services import workflow_save
from coordination.spec import spec_validate
from hive_core.embedded_redis import embedded_redis_ensure, embedded_redis_stop
from tests.processes import ProcessGroup, wait_for


@pytest.fixture(scope="session", autouse=True)
def redis_url():
    """The suite's Redis, emptied once at the start: embedded under var/test/ or REDIS_URL.
    Every test has it: the web's cache (throttles) lives there too."""
    started = settings.REDIS_EMBEDDED and embedded_redis_ensure(
        directory=settings.VAR_DIR, socket_path=settings.REDIS_EMBEDDED_SOCKET
    )
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    yield settings.REDIS_URL
    if started:
        embedded_redis_stop(socket_path=settings.REDIS_EMBEDDED_SOCKET)


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def fresh_throttles(redis_url):
    """Throttle counts outlive the test that made them in the Redis cache (and user
    ids repeat on SQLite): start with none. Never `cache.clear()`: it empties the
    whole Redis database, queues and streams included."""
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter("hive:cache:*throttle_*"):
        client.delete(key)
    client.close()


@pytest.fixture
def empty_streams(redis_url):
    """Hive's streams outlive a test's database rows (and ids are reused): start with none."""
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter("hive:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def processes(redis_url, transactional_db, tmp_path):
    """Start `manage.py hive ...` processes; all are stopped at teardown, pass or fail.

    Child processes share the test database, so tests that use them commit
    (transactional_db) and the rows are flushed after the processes are gone.
    """
    group = ProcessGroup(tmp_path)
    yield group
    group.stop_all()


@pytest.fixture
def start_agent(processes):
    """Start an agent process and wait until it has registered itself."""

    def start(name: str, *, role: str = "", skills: str = "noop", concurrency: int = 1, **env: str):
        """`env`: environment variables of the agent's own (a setting only it sees)."""
        args = ["agent", f"--name={name}", f"--skills={skills}", f"--concurrency={concurrency}"]
        process = processes.start(*args, *([f"--role={role}"] if role else []), name=name, **env)
        wait_for(
            lambda: (
                not process.alive()
                or Agent.objects.filter(name=name, pid=process.pid, status="idle").exists()
            ),
            timeout=60,
            what=f"agent {name} to register",
        )
        assert process.alive(), f"agent {name} exited:\n{process.log()}"
        return process

    return start


@pytest.fixture(scope="session")
def live_server_url(redis_url, django_db_setup, django_db_blocker, tmp_path_factory):
    """A real ASGI server (daphne, as in production) on a free port, shared by the session.

    It reads the test database on every request, so each test sees its own rows.
    """
    group = ProcessGroup(tmp_path_factory.mktemp("web"))
    with django_db_blocker.unblock():  # child_env reads the test database's settings
        _, url = group.start_web()
    yield url
    group.stop_all()


@pytest.fixture
def coordinator(processes):
    """The real coordinator: beat and reaper (retries, lost steps, waiting steps)."""
    return processes.start("coordinator", name="coordinator")


_workflow_names = itertools.count()


@pytest.fixture
def make_workflow():
    """Save a workflow from a list of steps (and a params schema) and return it."""

    def make(steps: list[dict], params: dict | None = None, name: str = ""):
        spec = spec_validate({"steps": steps, "params": params or {}}, source="test")
        workflow, _ = workflow_save(name=name or f"wf-{next(_workflow_names)}", spec=spec)
        return workflow

    return make


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of the test's own, to stop, restart or pause (tests/redis_server.py)."""
    from tests.redis_server import private_redis_server

    directory = tmp_path / "redis"
    directory.mkdir()
    server = private_redis_server(directory)
    yield server
    server.stop()


def pytest_terminal_summary(terminalreporter):
    """Say it loudly when the browser tests were skipped for want of Chromium."""
    from tests.e2e.conftest import BROWSER_MISSING

    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if BROWSER_MISSING in str(report.longrepr)
    ]
    if skipped:
        terminalreporter.write_sep(
            "!", f"{len(skipped)} browser tests SKIPPED: {BROWSER_MISSING}", red=True, bold=True
        )
