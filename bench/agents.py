"""Memory of an idle agent: a `hive agent` process with its pool, against a raw Celery
worker with the same pool, measured in the same run."""

import sys
import time
from pathlib import Path

from django.conf import settings

from agents.models import Agent
from bench._table import Result
from tests.processes import ProcessGroup, group_members, wait_for

CONCURRENCY = 2
SETTLE = 5.0  # seconds idle before measuring, so start-up garbage is collected


def run(group: ProcessGroup) -> list[Result]:
    agent = group.start(
        "agent", "--name=bench-memory", "--skills=noop,sleep,http.request",
        f"--concurrency={CONCURRENCY}", name="agent", HIVE_LOG_LEVEL="WARNING",
    )  # fmt: skip
    wait_for(
        lambda: Agent.objects.filter(name="bench-memory", status="idle").exists(),
        timeout=60,
        what="the bench agent",
    )
    raw = group.start_argv(
        [sys.executable, "-m", "celery", "-A", "bench._raw_celery", "worker",
         f"--concurrency={CONCURRENCY}", "--pool=prefork", "--without-mingle",
         "--without-gossip", "--loglevel=WARNING", "--queues=bench.memory"],
        name="raw-celery",
        BENCH_BROKER_URL=settings.CELERY_BROKER_URL,
    )  # fmt: skip
    wait_for(lambda: len(group_members(raw.pid)) > CONCURRENCY, timeout=60, what="raw pool")
    time.sleep(SETTLE)
    hive_main, hive_total = _memory(agent.pid)
    raw_main, raw_total = _memory(raw.pid)
    base = f"raw Celery worker, -c {CONCURRENCY}"
    return [
        Result("agents", "idle RSS, agent process", hive_main, raw_main, "MB", base, "<= 150 MB"),
        Result(
            # What an agent really costs; the goal (issue #3) is on the process's RSS.
            "agents", f"idle PSS, agent + {CONCURRENCY} pool", hive_total, raw_total, "MB", base,
            "",
        ),
    ]  # fmt: skip


def _memory(pid: int) -> tuple[float, float]:
    """(RSS of the main process, PSS summed over its process group) in MB.

    PSS splits pages shared after fork between the processes sharing them, so the
    sum is what the agent really costs; summing RSS would count them again per child.
    """
    rss = _field(Path(f"/proc/{pid}/status"), "VmRSS:")
    pss = sum(_field(Path(f"/proc/{p}/smaps_rollup"), "Pss:") for p in group_members(pid))
    return rss / 1024, pss / 1024


def _field(path: Path, name: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(name):
            return int(line.split()[1])  # kB
    raise ValueError(f"{name} not in {path}")
