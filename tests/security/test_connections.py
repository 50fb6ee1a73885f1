"""Issue 15 #4: a burst of API requests took PostgreSQL's connections (94 of 100 here)
and failed with 500 "too many clients already". The web process holds at most
HIVE_WEB_DB_CONNECTIONS connections, and running out is a 503 with Retry-After."""

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg2
import pytest
from django.db import connection

from agents.services import agent_register
from tests.pg_connections import ConnectionWatch, server_dsn
from tests.processes import free_port, wait_for
from tests.security.conftest import auth

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="connection limits are PostgreSQL's"
)

BOUND = 4


def assert_unavailable(response: httpx.Response, *, api: bool) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "2"
    if api:
        assert response.json()["error"]["code"] == "unavailable"
        assert response.json()["error"]["fields"] == {}


def test_sixty_concurrent_requests_never_take_more_connections_than_the_bound(processes, attackers):
    admin = attackers["admin"]
    agent_register(name="target", role="t", skills=["noop"], concurrency=1, host="h", pid=1,
                   version="test")  # fmt: skip
    web, url = processes.start_web(HIVE_WEB_DB_CONNECTIONS=str(BOUND))
    requests = [
        ("GET", "/api/v1/runs/", None),
        ("POST", "/api/v1/messages/", {"to": "target", "kind": "ping"}),
        ("GET", "/api/v1/messages/", None),
        ("GET", "/api/v1/agents/", None),
    ]
    start = threading.Barrier(60)

    def one(n: int) -> httpx.Response:
        method, path, body = requests[n % len(requests)]
        with httpx.Client(headers=auth(admin), timeout=60) as client:
            start.wait()
            return client.request(method, url + path, json=body)

    watch = ConnectionWatch(
        pid=web.pid,
        dsn=server_dsn(connection.settings_dict),
        database=connection.settings_dict["NAME"],
    )
    with watch, ThreadPoolExecutor(60) as pool:
        responses = list(pool.map(one, range(60)))

    for response in responses:
        if response.status_code == 503:
            assert_unavailable(response, api=True)
        else:
            assert response.status_code in {200, 201}, response.text
    assert sum(r.status_code in {200, 201} for r in responses) >= 50
    assert watch.samples > 5
    assert 1 <= watch.peak <= BOUND, f"the web process held {watch.peak} connections"
    assert watch.names == {f"hive-web:{web.pid}"}


def test_a_request_that_finds_the_bound_full_is_a_503_with_retry_after(processes, attackers):
    """One request thread (a bound of 2, one for WebSockets) held by a query that waits
    on a lock: the next request waits 0.2 s, then is told to come back."""
    admin = attackers["admin"]
    _, url = processes.start_web(HIVE_WEB_DB_CONNECTIONS="2", HIVE_WEB_DB_WAIT_MS="200")
    locker = psycopg2.connect(server_dsn(connection.settings_dict).replace(
        "dbname='postgres'", f"dbname='{connection.settings_dict['NAME']}'"))  # fmt: skip
    try:
        with locker.cursor() as cursor:
            cursor.execute("LOCK TABLE agents_message IN ACCESS EXCLUSIVE MODE")
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(httpx.get, f"{url}/api/v1/messages/", headers=auth(admin),
                               timeout=60)  # fmt: skip
            wait_for(_waiting_on_lock, timeout=30, what="the request to block")
            with httpx.Client(timeout=30) as client:
                assert_unavailable(client.get(f"{url}/api/v1/runs/", headers=auth(admin)), api=True)
                page = client.get(f"{url}/console/")
                assert_unavailable(page, api=False)
                assert page.headers["Content-Type"].startswith("text/plain")
                # The liveness probe touches no database and still answers.
                assert client.get(f"{url}/healthz").status_code == 200
            locker.rollback()
            assert held.result().status_code == 200
        assert httpx.get(f"{url}/api/v1/runs/", headers=auth(admin)).status_code == 200
    finally:
        locker.close()


def _waiting_on_lock() -> bool:
    # A connection of its own: pg_stat_activity is a snapshot taken once a transaction.
    watcher = psycopg2.connect(server_dsn(connection.settings_dict))
    try:
        with watcher.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND query LIKE '%agents_message%'")  # fmt: skip
            return cursor.fetchone()[0] > 0
    finally:
        watcher.close()


def test_postgresql_refusing_a_connection_is_a_503_not_a_500(processes, attackers):
    """Nothing listens on the database's port: every connect is refused, as when
    PostgreSQL has no slot left ("too many clients already")."""
    admin = attackers["admin"]
    nowhere = f"postgres://postgres@127.0.0.1:{free_port()}/hive"
    _, url = processes.start_web(DATABASE_URL=nowhere)
    with httpx.Client(timeout=30) as client:
        api = client.get(f"{url}/api/v1/runs/", headers=auth(admin))
        assert_unavailable(api, api=True)
        assert "the database refused a connection" in api.json()["error"]["message"]
        # A page whose session must be read from the database.
        page = client.get(f"{url}/console/", headers={"Cookie": "sessionid=" + "x" * 32})
        assert_unavailable(page, api=False)
