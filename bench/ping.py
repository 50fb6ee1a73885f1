"""Dispatch to a named agent: `hive ping`'s path (agent queue, real worker, result
backend) against a raw Celery no-op task on the same broker, in the same run."""

import os
import statistics
import sys
import time

from django.conf import settings

from agents.models import Agent
from agents.routing import agent_queue
from agents.tasks import ping_task
from bench._table import Result
from tests.processes import ProcessGroup, wait_for

ROUND_TRIPS = 500
BURST = 2000
WARM_UP = 50


def run(group: ProcessGroup) -> list[Result]:
    group.start(
        "agent", "--name=bench-ping", "--skills=noop", name="agent", HIVE_LOG_LEVEL="WARNING"
    )
    wait_for(
        lambda: Agent.objects.filter(name="bench-ping", status="idle").exists(),
        timeout=60,
        what="the bench agent",
    )
    group.start_argv(
        [sys.executable, "-m", "celery", "-A", "bench._raw_celery", "worker", "--concurrency=1",
         "--pool=prefork", "--without-mingle", "--without-gossip", "--loglevel=WARNING"],
        name="raw-celery",
        BENCH_BROKER_URL=settings.CELERY_BROKER_URL,
    )  # fmt: skip
    noop = raw_noop()

    def hive_send():
        return ping_task.apply_async(queue=agent_queue("bench-ping"))

    def raw_send():
        return noop.apply_async()

    raw_send().get(timeout=60)  # the raw worker is up
    hive = _measure(hive_send)
    raw = _measure(raw_send)
    name, base = "ping", "raw Celery no-op"
    return [
        Result(name, "round trip p50", hive["p50"], raw["p50"], "ms", base, "<= 1.5x"),
        Result(name, "round trip p99", hive["p99"], raw["p99"], "ms", base, "<= 2x"),
        Result(
            name, f"throughput ({BURST} sent)", hive["rate"], raw["rate"], "/s", base, ">= 0.8x"
        ),
    ]


def raw_noop():
    """The baseline's no-op task, on the same broker as Hive."""
    # The baseline app reads its broker from the environment, as its worker does.
    os.environ["BENCH_BROKER_URL"] = settings.CELERY_BROKER_URL
    from bench._raw_celery import noop

    return noop


def _measure(send) -> dict[str, float]:
    for _ in range(WARM_UP):
        send().get(timeout=30)
    samples = []
    for _ in range(ROUND_TRIPS):
        started = time.perf_counter()
        send().get(timeout=30)
        samples.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    results = [send() for _ in range(BURST)]
    for result in results:
        result.get(timeout=120)
    rate = BURST / (time.perf_counter() - started)
    quantiles = statistics.quantiles(samples, n=100)
    return {"p50": statistics.median(samples), "p99": quantiles[98], "rate": rate}
