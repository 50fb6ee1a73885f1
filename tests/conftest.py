"""Fixtures that run Hive on real parts: Redis (embedded or REDIS_URL), the test
database, and real agent, coordinator and web processes."""

import functools
import itertools

import pytest
import redis
from django.conf import settings
from django.db.backends.postgresql.operations import DatabaseOperations as PostgresOperations
from django.utils import timezone

from agents.liveness import agents_live
from agents.models import Agent
from coordination.services import workflow_save
from coordination.spec import spec_validate
from hive_core.embedded_redis import embedded_redis_ensure, embedded_redis_stop
from tests.chaos.report import chaos_collect, chaos_table
from tests.processes import ManagedProcess, ProcessGroup, wait_for

# Tables a flush keeps: what migrations made and post_migrate would make again.
FLUSH_KEEPS = frozenset({"django_content_type", "auth_permission"})


def _sql_flush_by_delete(self, style, tables, *, reset_sequences=False, allow_cascade=False):
    """Empty the tables after a committing test (transactional_db) with DELETE, not
    TRUNCATE: a TRUNCATE of Hive's 29 tables took 1.0 s on PostgreSQL (the 2-core
    machine, shared), a DELETE of a test's few rows 0.03 s (Django's foreign keys
    are deferred, so the order does not matter in the flush's one transaction).
    Content types and permissions stay, as in every other test, instead of being
    deleted and made again by post_migrate (0.7 s more). Only this process flushes:
    the processes the tests start never import this module."""
    if reset_sequences or allow_cascade:
        return _sql_flush_by_truncate(
            self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
        )
    quote = self.quote_name
    # Quoted table names from the introspection, no values.
    return [f"DELETE FROM {quote(table)};" for table in tables if table not in FLUSH_KEEPS]  # noqa: S608


_sql_flush_by_truncate = PostgresOperations.sql_flush
PostgresOperations.sql_flush = _sql_flush_by_delete


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


def agent_start(group: ProcessGroup, name: str, **options) -> ManagedProcess:
    """Start `hive agent` in `group` and wait until it is online."""
    (process,) = agents_start(group, {"name": name, **options})
    return process


def agents_start(group: ProcessGroup, *agents: dict) -> list[ManagedProcess]:
    """Start agents side by side (each a dict of `agent_launch`'s arguments), then wait
    until every one is online: their start-ups overlap."""
    launched = [(agent["name"], agent_launch(group, **agent)) for agent in agents]
    for name, process in launched:
        wait_for(
            lambda name=name, process=process: (
                not process.alive()
                or Agent.objects.filter(name=name, pid=process.pid, status="idle").exists()
            ),
            timeout=60,
            what=f"agent {name} to register",
        )
        assert process.alive(), f"agent {name} exited:\n{process.log()}"
    return [process for _, process in launched]


def agent_launch(
    group: ProcessGroup,
    name: str,
    *,
    role: str = "",
    skills: str = "noop",
    concurrency: int = 1,
    **env: str,
) -> ManagedProcess:
    """`hive agent` in `group`; `env`: environment variables of the agent's own."""
    args = ["agent", f"--name={name}", f"--skills={skills}", f"--concurrency={concurrency}"]
    return group.start(*args, *([f"--role={role}"] if role else []), name=name, **env)


@pytest.fixture
def start_agent(processes):
    """Start an agent process and wait until it has registered itself.
    `env`: environment variables of the agent's own (a setting only it sees)."""
    return functools.partial(agent_start, processes)


@pytest.fixture
def start_agents(processes):
    """`start_agents({"name": ..., "skills": ...}, ...)`: several agents, started side
    by side, each as `start_agent` takes it; returns their processes in order."""
    return functools.partial(agents_start, processes)


@pytest.fixture(scope="module")
def module_processes(redis_url, django_db_setup, tmp_path_factory):
    """Processes shared by the tests of one module, stopped after its last test."""
    group = ProcessGroup(tmp_path_factory.mktemp("processes"))
    yield group
    group.stop_all()


@pytest.fixture(scope="module")
def shared_agent(module_processes, django_db_blocker):
    """`shared_agent(name, ...)` (as `start_agent`): an agent process started once for
    the module's tests, for tests that do not need a fresh one. Call it from a
    function fixture of a committing test (transactional_db).

    The test database is emptied after each such test, the agent's row with it,
    and an agent writes its row only as it registers: the row is put back as the
    agent wrote it, with the status and load of its last heartbeat (in Redis).
    """
    started: dict[str, tuple[ManagedProcess, dict, dict]] = {}

    def get(name: str, **options) -> ManagedProcess:
        if name not in started:
            with django_db_blocker.unblock():
                process = agent_start(module_processes, name, **options)
                started[name] = (process, Agent.objects.values().get(name=name), options)
        process, row, first = started[name]
        assert options == first, f"agent {name} was started with {first}, not {options}"
        assert process.alive(), f"agent {name} exited:\n{process.log()}"
        # What the last test left running (a step it revoked, one it did not wait for)
        # is gone by a heartbeat after this moment.
        since = timezone.now().isoformat()
        live = wait_for(
            lambda: (beat := agents_live([name]).get(name)) and beat["at"] >= since
            and beat["running"] == 0 and beat,
            timeout=30,
            what=f"agent {name} to run nothing",
        )  # fmt: skip
        # A step the last test revoked took its pool process with it: the pool is whole
        # again once the worker has forked its replacement.
        processes = 1 + options.get("concurrency", 1)
        wait_for(
            lambda: len(process.group_members_now()) >= processes,
            timeout=30,
            what=f"agent {name}'s {processes - 1} pool processes",
        )
        if not Agent.objects.filter(name=name, pid=process.pid).exists():
            beat = {
                "status": live["status"],
                "load": live["load"],
                "last_heartbeat": timezone.now(),
            }
            Agent.objects.create(**{**row, **beat})
        return process

    return get


@pytest.fixture(autouse=True)
def operator_rates_fresh():
    """Each process keeps the operators' rate limits it read for a few seconds
    (coordination/flow.py): a test reads its own, not a limit an earlier test set."""
    from coordination.flow import operator_rates_forget

    operator_rates_forget()


@pytest.fixture(autouse=True)
def routing_fresh():
    """Routing keeps the agents it read for a second (agents/routing.py): each test reads
    its own, not the last test's."""
    from tests.coordination.harness import routing_forget

    routing_forget()


@pytest.fixture
def harness(redis_url, transactional_db, monkeypatch):
    """The engine with its steps run in this process (tests/coordination/harness.py):
    `harness.agent(...)` brings an agent online, `harness.drain()` runs what is sent.

    Committing (transactional_db), so the engine's dispatch runs after commit as in
    production, and every step's claim and result is its own transaction.
    """
    from coordination import dispatch
    from tests.coordination.harness import Harness, routing_forget

    harness = Harness()
    monkeypatch.setattr(dispatch, "transport", harness)
    yield harness
    harness.close()
    routing_forget()


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
def coordinator(processes, redis_client):
    """The real coordinator: beat and reaper (retries, lost steps, waiting steps).

    Its queue is emptied first: a firing an earlier test's beat sent and no coordinator
    took is of a schedule this test's database has not, and would be recorded here as
    a denied invocation (a test saw one as its first scheduled invocation)."""
    from coordination.dispatch import queue_keys

    redis_client.delete(*queue_keys(settings.HIVE_COORDINATOR_QUEUE))
    return processes.start("coordinator", name="coordinator")


_workflow_names = itertools.count()


@pytest.fixture
def make_workflow():
    """Save a workflow from a list of steps (and a params schema) and return it."""

    def make(steps: list[dict], params: dict | None = None, name: str = "", **rest):
        """`rest`: the spec's other top-level fields (priority, timeout, concurrency)."""
        spec = spec_validate({"steps": steps, "params": params or {}, **rest}, source="test")
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


def pytest_runtest_logreport(report):
    chaos_collect(report)


def pytest_terminal_summary(terminalreporter):
    """The fault battery's table; and say it loudly when the browser tests were skipped
    for want of Chromium."""
    from tests.e2e.conftest import BROWSER_MISSING

    chaos_table(terminalreporter)

    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if BROWSER_MISSING in str(report.longrepr)
    ]
    if skipped:
        terminalreporter.write_sep(
            "!", f"{len(skipped)} browser tests SKIPPED: {BROWSER_MISSING}", red=True, bold=True
        )
