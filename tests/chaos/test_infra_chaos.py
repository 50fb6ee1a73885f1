"""Faults in the infrastructure under a running workflow: Redis restarted without
persistence, Redis paused (SIGSTOP) for 30 s, every database connection killed.
Each ends with every run finished, no step lost and no result stored twice.

The Redis scenarios run on a private redis-server (tests/redis_server.py): the
agents and the coordinator are pointed at it, and runs are started by a `hive
workflow start` process pointed at it too, so nothing here touches the suite's Redis.
"""

import time

import pytest
from django.db import connection

from coordination.services import run_start
from tests.chaos.support import fan_out, run_counts, start_run_on, under_way
from tests.runs import wait_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chaos]

ITEMS = 150


def pool_on(redis_url: str, processes, start_agents) -> None:
    """Two agents and the coordinator, all on `redis_url`."""
    start_agents(
        {"name": "east", "skills": "sleep,noop", "concurrency": 2, "REDIS_URL": redis_url},
        {"name": "west", "skills": "sleep,noop", "concurrency": 2, "REDIS_URL": redis_url},
    )
    processes.start("coordinator", name="coordinator", REDIS_URL=redis_url)


def test_a_run_completes_after_redis_restarts_without_persistence(
    private_redis, processes, start_agents, make_workflow, chaos_report
):
    pool_on(private_redis.url, processes, start_agents)
    run = start_run_on(processes, fan_out(make_workflow), private_redis.url)
    under_way(run)

    private_redis.restart()  # no AOF, no RDB: every queue, group and key is gone

    run = wait_run(run, timeout=120)
    counts = run_counts(run, redis_client=private_redis.client())
    chaos_report(scenario="Redis restart (no persistence)", unit="steps", **counts)
    assert run.state == "succeeded", run.error
    assert run_counts(run)["lost"] == run_counts(run)["duplicated"] == 0


def test_a_run_completes_after_every_database_connection_is_terminated(
    start_agents, coordinator, make_workflow, chaos_report
):
    if connection.vendor != "postgresql":
        pytest.skip("terminates PostgreSQL backends; SQLite has no server connections to cut")
    start_agents(
        {"name": "east", "skills": "sleep,noop", "concurrency": 2},
        {"name": "west", "skills": "sleep,noop", "concurrency": 2},
    )
    run = run_start(workflow=fan_out(make_workflow), params={"numbers": list(range(ITEMS))})
    under_way(run)

    terminated = 0
    for _ in range(2):  # twice, a second apart: in the middle of claims and results
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            terminated += cursor.fetchone()[0]
        time.sleep(1)

    run = wait_run(run, timeout=120)
    chaos_report(
        scenario="PostgreSQL: all connections terminated (x2)",
        unit="steps",
        note=f"{terminated} backends terminated",
        **run_counts(run),
    )
    assert terminated >= 4  # two agents and the coordinator were connected
    assert run.state == "succeeded", run.error
    assert run_counts(run)["lost"] == run_counts(run)["duplicated"] == 0


@pytest.mark.slow
def test_agents_consume_again_within_60_s_after_redis_is_paused_for_30_s(
    private_redis, processes, start_agents, make_workflow, chaos_report
):
    pool_on(private_redis.url, processes, start_agents)
    workflow = fan_out(make_workflow)
    during = start_run_on(processes, workflow, private_redis.url)
    under_way(during)

    private_redis.pause()
    time.sleep(30)
    private_redis.resume()
    resumed = time.monotonic()

    # A run started after Redis is back, with no process restarted, is consumed at once.
    after = start_run_on(processes, workflow, private_redis.url, items=10)
    after = wait_run(after, timeout=60)
    consumed_in = time.monotonic() - resumed
    during = wait_run(during, timeout=120)
    chaos_report(
        scenario="Redis paused (SIGSTOP) 30 s",
        unit="steps",
        note=f"new run done {consumed_in:.0f} s after SIGCONT",
        **run_counts(during, after, redis_client=private_redis.client()),
    )
    assert after.state == "succeeded", after.error
    assert consumed_in < 60
    assert during.state == "succeeded", during.error
    assert run_counts(during, after)["lost"] == run_counts(during, after)["duplicated"] == 0
    # Nobody restarted anything: the first processes are the ones still running.
    assert all(p.alive() for p in processes.processes if not p.name.startswith("start-"))
