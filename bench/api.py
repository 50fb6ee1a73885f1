"""The API under a realistic history: p50/p95 of the runs list (first page) and of a
run's detail with 100,000 runs (300,000 steps) in the database, over HTTP through the
real ASGI server with a token, beside the same reads as raw SQL in the same run (the
floor no web framework goes under). The runs are removed again at the end."""

import random
import statistics
import time

import httpx
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from rest_framework.authtoken.models import Token

from bench._db import tables_tidy
from bench._table import Result
from coordination.models import Run, StepRun
from coordination.services import workflow_save
from coordination.spec import spec_validate
from tests.processes import ProcessGroup, free_port, wait_for

RUNS = 100_000
STEPS = ("build", "test", "ship")
REQUESTS = 300
BATCH = 5_000


def run(group: ProcessGroup) -> list[Result]:
    workflow = _history()
    try:
        user, _ = get_user_model().objects.get_or_create(
            username="bench-api", defaults={"is_staff": True}
        )
        token, _ = Token.objects.get_or_create(user=user)
        port = free_port()
        web = group.start("web", f"--port={port}", name="web", HIVE_LOG_LEVEL="WARNING")
        url = f"http://127.0.0.1:{port}/api/v1"
        ids = list(Run.objects.filter(workflow=workflow).values_list("pk", flat=True))
        with httpx.Client(headers={"Authorization": f"Token {token.key}"}, timeout=30) as client:
            wait_for(lambda: web.alive() and _answers(client, f"{url}/runs/?limit=1"),
                     timeout=60, what="the web server")  # fmt: skip
            list_ms = _times(lambda: client.get(f"{url}/runs/").raise_for_status())
            detail_ms = _times(
                lambda: client.get(f"{url}/runs/{random.choice(ids)}/").raise_for_status()
            )
        raw_list = _times(lambda: _raw(_LIST_SQL, []))
        raw_detail = _times(lambda: _raw(_DETAIL_SQL, [random.choice(ids)]))
    finally:
        Run.objects.filter(workflow=workflow).delete()
        tables_tidy(Run, StepRun)

    def p(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100)[q - 1]

    return [
        Result("api", "runs list (50 of 100k), p50", p(list_ms, 50), p(raw_list, 50), "ms",
               "raw SQL of the page", ""),
        Result("api", "runs list (50 of 100k), p95", p(list_ms, 95), p(raw_list, 95), "ms",
               "raw SQL of the page", "<= 100 ms"),
        Result("api", "run detail (3 steps), p50", p(detail_ms, 50), p(raw_detail, 50), "ms",
               "raw SQL of run + steps", ""),
        Result("api", "run detail (3 steps), p95", p(detail_ms, 95), p(raw_detail, 95), "ms",
               "raw SQL of run + steps", "<= 100 ms"),
    ]  # fmt: skip


def _history():
    """RUNS finished runs of a three-step workflow, written in bulk."""
    steps = [{"id": s, "skill": "noop", "needs": [STEPS[i - 1]] if i else []}
             for i, s in enumerate(STEPS)]  # fmt: skip
    workflow, _ = workflow_save(
        name="bench-api", spec=spec_validate({"steps": steps}, source="bench")
    )
    Run.objects.filter(workflow=workflow).delete()
    output = {"ok": True, "log": "x" * 200}
    for start in range(0, RUNS, BATCH):
        with transaction.atomic():
            runs = Run.objects.bulk_create(
                Run(workflow=workflow, state="succeeded", params={"n": start + i})
                for i in range(BATCH)
            )
            StepRun.objects.bulk_create(
                StepRun(run=r, step_id=s, key=s, skill="noop", state="succeeded", attempt=1,
                        tries=1, agent="bench", inputs={}, output=output)
                for r in runs for s in STEPS
            )  # fmt: skip
    return workflow


def _answers(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.TransportError:
        return False


def _times(call) -> list[float]:
    for _ in range(10):  # warm up connections and caches
        call()
    times = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


_LIST_SQL = (
    "SELECT r.*, w.name, w.version, u.username FROM coordination_run r "
    "JOIN coordination_workflow w ON w.id = r.workflow_id "
    "LEFT JOIN auth_user u ON u.id = r.created_by_id ORDER BY r.id DESC LIMIT 51"
)
_DETAIL_SQL = (
    "SELECT r.*, w.spec, s.* FROM coordination_run r "
    "JOIN coordination_workflow w ON w.id = r.workflow_id "
    "JOIN coordination_steprun s ON s.run_id = r.id WHERE r.id = %s ORDER BY s.id"
)


def _raw(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        cursor.fetchall()
