"""The engine on one agent: steps/s of a 2,000-item foreach of `noop`, and the per-step
latency of a 100-step chain, beside raw Celery no-op tasks on the same broker with the
same worker settings (prefork, -c 2, acks late, prefetch 1), in the same run; and the
chain's step with a concurrency key and with a rate limit beside its plain step. Each
figure is the median of three rounds."""

import statistics
import sys
import time

from django.conf import settings

from agents.models import Agent
from bench._db import tables_tidy
from bench._table import Result
from coordination.models import Run, StepRun
from coordination.services import run_start, workflow_save
from coordination.spec import spec_validate
from events.models import Event
from tests.processes import ProcessGroup, wait_for

FANOUT = 2000
CHAIN = 100
CONCURRENCY = 2
ROUNDS = 3
# Flow control's own cost: each step of these chains takes its key's row lock and
# counts the key's holders as it is dispatched (concurrency), or takes the lock and
# rewrites the window's starts as it is claimed (rate); the limits are too high for a
# step ever to wait, so only that bookkeeping is measured. A window of 1 s keeps the
# rate's list of starts as short as a busy key's (a few hundred). Each costs about
# three round trips on a plain step's seven (and a step's end looks at the key's
# line), hence the goal of at most twice the plain step.
FLOW = {
    "a concurrency key": {"concurrency": {"key": "bench:slots", "limit": 1000}},
    "a rate limit": {"rate": {"key": "bench:rate", "limit": 10_000, "per": 1}},
}


def run(group: ProcessGroup) -> list[Result]:
    # Both workers log at WARNING: the benchmark measures the engine, not logging.
    group.start("agent", "--name=bench-engine", "--skills=noop", f"--concurrency={CONCURRENCY}",
                name="agent", HIVE_LOG_LEVEL="WARNING")  # fmt: skip
    wait_for(
        lambda: Agent.objects.filter(name="bench-engine", status="idle").exists(),
        timeout=60,
        what="the bench agent",
    )
    group.start_argv(
        [sys.executable, "-m", "celery", "-A", "bench._raw_celery", "worker",
         f"--concurrency={CONCURRENCY}", "--pool=prefork", "--without-mingle",
         "--without-gossip", "--loglevel=WARNING"],
        name="raw-celery",
        BENCH_BROKER_URL=settings.CELERY_BROKER_URL,
    )  # fmt: skip
    from bench.ping import raw_noop

    noop = raw_noop()
    noop.apply_async().get(timeout=60)

    each = {"id": "each", "skill": "noop", "foreach": "{{ params.n }}", "with": {"i": "{{ item }}"}}
    fanout = _workflow("bench-fanout", [each])
    chain = _workflow("bench-chain", _links({}))
    flows = {what: _workflow(f"bench-chain-{i}", _links(flow)) for i, (what, flow) in
             enumerate(FLOW.items())}  # fmt: skip
    tables_tidy(Run, StepRun, Event)  # the rows earlier runs left behind
    _timed_run(chain, {})  # warm up the agent and the database

    # Rounds alternate Hive and raw Celery, and each figure is the median over the
    # rounds, so a burst of load from elsewhere on the machine moves both sides.
    rates, raw_rates, steps, raw_steps = [], [], [], []
    flow_steps = {what: [] for what in FLOW}
    for _ in range(ROUNDS):
        rates.append(FANOUT / _timed_run(fanout, {"n": list(range(FANOUT))}))
        started = time.perf_counter()
        results = [noop.apply_async() for _ in range(FANOUT)]
        for result in results:
            result.get(timeout=300)
        raw_rates.append(FANOUT / (time.perf_counter() - started))

        steps.append(_timed_run(chain, {}) / CHAIN * 1000)
        trips = []
        for _ in range(CHAIN):
            started = time.perf_counter()
            noop.apply_async().get(timeout=30)
            trips.append((time.perf_counter() - started) * 1000)
        raw_steps.append(statistics.mean(trips))
        for what, workflow in flows.items():
            flow_steps[what].append(_timed_run(workflow, {}) / CHAIN * 1000)
    median = statistics.median
    hive_rate, raw_rate = median(rates), median(raw_rates)
    hive_step, raw_step = median(steps), median(raw_steps)

    return [
        Result("engine", f"{FANOUT}-item foreach, steps/s", hive_rate, raw_rate, "/s",
               "raw Celery no-op tasks/s", ">= 0.5x"),
        Result("engine", f"{CHAIN}-step chain, per step", hive_step, raw_step, "ms",
               "raw Celery round trip", "<= 3x"),
        *(Result("engine", f"{CHAIN}-step chain, per step with {what}",
                 median(flow_steps[what]), hive_step, "ms", "the chain's plain step", "<= 2x")
          for what in FLOW),
    ]  # fmt: skip


def _links(flow: dict) -> list[dict]:
    """A chain of CHAIN `noop` steps, each with the flow control fields `flow`."""
    return [
        {"id": f"s{i}", "skill": "noop", "needs": [f"s{i - 1}"] if i else [], **flow}
        for i in range(CHAIN)
    ]


def _workflow(name: str, steps: list[dict]):
    workflow, _ = workflow_save(name=name, spec=spec_validate({"steps": steps}, source="bench"))
    return workflow


def _timed_run(workflow, params: dict) -> float:
    """Seconds from run_start to the run's success (the database says when)."""
    started = time.perf_counter()
    run = run_start(workflow=workflow, params=params)
    done = wait_for(
        lambda: Run.objects.filter(pk=run.pk, state__in=Run.TERMINAL).first(),
        timeout=600,
        what=f"{workflow.name} to finish",
        # Often enough for 1% resolution, rarely enough not to load the database.
        interval=0.02,
    )
    elapsed = time.perf_counter() - started
    assert done.state == "succeeded", done.error
    return elapsed
