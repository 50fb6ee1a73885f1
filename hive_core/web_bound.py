"""The web process's bound on database connections, and a 503 (never a 500) past it.

Django's ASGI handler runs each HTTP request's sync code (middleware, views, the ORM)
on a new thread of its own, and a Django connection belongs to a thread: under daphne
every request opened a connection and left it behind for CONN_MAX_AGE (60 s). 150
API requests, 20 at a time, held 66 to 94 of PostgreSQL's connections here, and
requests past `max_connections` failed with 500 "too many clients already".

`DatabaseBound` runs requests on a fixed set of single-thread executors instead,
through asgiref's public `ThreadSensitiveContext(executor=...)`: at most that many
threads ever touch the database, each keeps its one connection between requests (as
a WSGI worker's threads do, so CONN_MAX_AGE still saves the connect), and a request
waits for a free thread for up to HIVE_WEB_DB_WAIT_MS, then gets a 503 with
Retry-After. WebSocket consumers reach the database only through
`database_sync_to_async`, on asgiref's one shared thread: one connection more, which
the bound counts.

Measured here (PostgreSQL on the same 2-core host, shared and loaded, 300 serial
requests after a warm-up; p50, median of three alternating runs): runs list 31.7 ->
21.1 ms, agents list 24.7 -> 17.1 ms, message POST 26.9 -> 18.6 ms, as the old
per-request thread paid a new PostgreSQL connection on every request. The same 150
requests held at most 19 connections with the default bound of 20, and no 500;
`python -m bench web_load` puts 200 requests in flight.

Why not Django 5.2's pooled connections: they need psycopg 3, whose presence switches
every process (agents included) off psycopg2, whose SQL-level PREPARE the agents' hot
path relies on (hive_core/db.py), and psycopg_pool's threads must not cross the
fork into Celery's prefork children. This bound lives only in the web process. Nor
a semaphore with CONN_MAX_AGE=0: it bounds as well, but pays the connect that the
figures above saved on every request.
"""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.db import OperationalError, connection
from django.http import HttpResponse

# Seconds a client is told to wait before trying again: a burst that filled the
# bound drains in well under that (a request takes ~20 ms), and a PostgreSQL that
# refused a connection is usually one whose other clients are finishing.
RETRY_AFTER = 2

# Paths that never touch the database and must answer while the bound is full: a
# liveness probe that failed under load would get a healthy process restarted.
EXEMPT_PATHS = frozenset({"/healthz"})


def unavailable_body(*, path: str, message: str) -> tuple[str, bytes]:
    """The content type and body of a 503: the API's error shape under /api/, text elsewhere."""
    if path.startswith("/api/"):
        error = {"error": {"code": "unavailable", "message": message, "fields": {}}}
        return "application/json", json.dumps(error).encode()
    return "text/plain; charset=utf-8", message.encode()


class DatabaseBound:
    """ASGI middleware: HTTP requests run on at most `threads` database threads."""

    def __init__(self, app, *, threads: int, wait: float):
        self.app = app
        self.wait = wait
        self.free = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hive-web-db-{n}")
            for n in range(threads)
        ]
        self.slots = asyncio.Semaphore(threads)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.wait):
                await self.slots.acquire()
        except TimeoutError:
            await self._unavailable(scope, send)
            return
        executor = self.free.pop()
        try:
            # Django's own per-request context, entered inside this one, keeps it.
            async with ThreadSensitiveContext(executor=executor):
                await self.app(scope, receive, send)
        finally:
            self.free.append(executor)
            self.slots.release()

    async def _unavailable(self, scope, send) -> None:
        content_type, body = unavailable_body(
            path=scope["path"],
            message=f"the server is busy: no database connection was free within "
            f"{self.wait:g} s; retry in {RETRY_AFTER} s",
        )
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(RETRY_AFTER).encode()),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class DatabaseUnavailableMiddleware:
    """PostgreSQL refusing a connection ("too many clients", "connection refused") is a
    503 with Retry-After: the request was fine and may succeed in a moment. A query
    that fails on an open connection is still a bug's 500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        # A failed connect leaves no connection behind; a failed query keeps its own.
        if not isinstance(exception, OperationalError) or connection.connection is not None:
            return None
        content_type, body = unavailable_body(
            path=request.path,
            message=f"the database refused a connection; retry in {RETRY_AFTER} s",
        )
        response = HttpResponse(body, status=503, content_type=content_type)
        response["Retry-After"] = str(RETRY_AFTER)
        return response
