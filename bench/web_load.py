"""One web process under 200 concurrent API requests (issue 15 #4): reads (runs,
agents, messages) and writes (message POSTs), at most 60 s. It must answer every
request with a 2xx, or a 503 with Retry-After when its database bound stays full,
never a 500, and never hold more PostgreSQL connections than HIVE_WEB_DB_CONNECTIONS
(counted by its sockets in pg_stat_activity, tests/pg_connections.py). Its /healthz
p99 under that load is beside the idle p99 of the same process, measured first.

`python -m bench web_load`; PostgreSQL only. It prints the server's max_connections:
the load passes with PostgreSQL's default of 100, a web process's 20 well inside it.
"""

import asyncio
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.authtoken.models import Token

from agents.mailbox import agent_stream
from agents.models import Agent, Message
from agents.services import agent_register
from bench._table import Result
from tests.pg_connections import ConnectionWatch, server_dsn
from tests.processes import ProcessGroup

CLIENTS = 200  # requests in flight at once
EACH = 3  # requests each client sends, one after another
DEADLINE = 60  # seconds for the whole load
PROBES = 300  # /healthz requests idle, for the baseline
PROBE_EVERY = 0.05  # seconds between /healthz requests under load
AGENT = "bench-load"
REQUESTS = [
    ("GET", "/api/v1/runs/", None),
    ("POST", "/api/v1/messages/", {"to": AGENT, "kind": "load"}),
    ("GET", "/api/v1/agents/", None),
    ("GET", "/api/v1/messages/", None),
]


def run(group: ProcessGroup) -> list[Result]:
    if connection.vendor != "postgresql":
        print("bench: web_load needs PostgreSQL (DATABASE_URL); skipped")
        return []
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_connections")
        max_connections = int(cursor.fetchone()[0])
    bound = settings.HIVE_WEB_DB_CONNECTIONS
    print(f"bench: PostgreSQL max_connections {max_connections}, web bound {bound}")
    user, _ = get_user_model().objects.get_or_create(
        username="bench-load", defaults={"is_staff": True, "is_superuser": True}
    )
    token, _ = Token.objects.get_or_create(user=user)
    agent_register(name=AGENT, role="bench", skills=["noop"], concurrency=1, host="bench",
                   pid=0, version="bench")  # fmt: skip
    web, url = group.start_web(HIVE_LOG_LEVEL="WARNING")
    try:
        headers = {"Authorization": f"Token {token.key}"}
        idle_health = _serial(f"{url}/healthz", {}, PROBES)
        idle_api = _serial(f"{url}/api/v1/runs/", headers, PROBES)
        watch = ConnectionWatch(
            pid=web.pid,
            dsn=server_dsn(connection.settings_dict),
            database=connection.settings_dict["NAME"],
        )
        with watch:
            statuses, api_ms, health_ms, seconds = asyncio.run(_load(url, headers))
    finally:
        Message.objects.filter(sender="user:bench-load").delete()
        Agent.objects.filter(name=AGENT).delete()
        redis.Redis.from_url(settings.REDIS_URL).delete(agent_stream(AGENT))

    answers = dict(sorted(statuses.items()))
    print(f"bench: {CLIENTS * EACH} requests in {seconds:.1f} s, {CLIENTS} at a time: "
          f"{answers}; peak connections {watch.peak} of {bound}")  # fmt: skip
    wrong = {s: n for s, n in statuses.items() if not (200 <= s < 300 or s == 503)}
    assert not wrong, f"web_load: answers other than 2xx or 503: {wrong}"
    assert not statuses[_NO_RETRY_AFTER], "web_load: a 503 without Retry-After"
    assert watch.peak <= bound, f"web_load: {watch.peak} connections, bound {bound}"
    answered = sum(statuses.values()) - statuses[_NO_RETRY_AFTER]
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)

    def p(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100)[q - 1]

    return [
        Result("web_load", f"/healthz p99, {CLIENTS} API requests in flight", p(health_ms, 99),
               p(idle_health, 99), "ms", "idle", ""),
        Result("web_load", f"API request p50, {CLIENTS} in flight", p(api_ms, 50),
               p(idle_api, 50), "ms", "runs list, idle", ""),
        Result("web_load", f"API requests answered 2xx ({answered - ok} 503s)", ok, answered,
               "req", "all answered", ""),
        Result("web_load", f"peak DB connections (max_connections {max_connections})",
               watch.peak, bound, "conn", "HIVE_WEB_DB_CONNECTIONS", "<= 1.00x"),
    ]  # fmt: skip


# Counted among the statuses: a 503 without its retry hint (always a failure).
_NO_RETRY_AFTER = -503


def _serial(url: str, headers: dict, count: int) -> list[float]:
    times = []
    with httpx.Client(headers=headers, timeout=30) as client:
        for n in range(count + 10):
            started = time.perf_counter()
            client.get(url).raise_for_status()
            if n >= 10:  # the first ones warm the connection up
                times.append((time.perf_counter() - started) * 1000)
    return times


def _probe(url: str, done: threading.Event) -> list[float]:
    """/healthz one request at a time until `done`, from a thread of its own: the
    load's event loop, busy with 200 clients, would otherwise delay the probe itself."""
    times = []
    with httpx.Client(timeout=DEADLINE) as client:
        while not done.is_set():
            started = time.perf_counter()
            client.get(f"{url}/healthz").raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
            done.wait(PROBE_EVERY)
    return times


async def _load(url: str, headers: dict) -> tuple[Counter, list[float], list[float], float]:
    statuses: Counter = Counter()
    api_ms: list[float] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)

    async def client_loop(client: httpx.AsyncClient, n: int) -> None:
        for i in range(EACH):
            method, path, body = REQUESTS[(n + i) % len(REQUESTS)]
            started = time.perf_counter()
            response = await client.request(method, url + path, json=body)
            api_ms.append((time.perf_counter() - started) * 1000)
            statuses[response.status_code] += 1
            if response.status_code == 503 and "Retry-After" not in response.headers:
                statuses[_NO_RETRY_AFTER] += 1

    done = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        probing = pool.submit(_probe, url, done)
        started = time.perf_counter()
        try:
            async with (
                httpx.AsyncClient(headers=headers, timeout=DEADLINE, limits=limits) as client,
                asyncio.timeout(DEADLINE),
            ):
                await asyncio.gather(*(client_loop(client, n) for n in range(CLIENTS)))
        finally:
            seconds = time.perf_counter() - started
            done.set()
    return statuses, api_ms, probing.result(), seconds
