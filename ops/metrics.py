"""Prometheus metrics, read from the database and Redis when scraped.

Agents, the coordinator and the web server are separate processes (and hosts):
counters kept in each process's memory would only describe the web process that
answers the scrape, and would reset with it. So the collector asks the record
instead, a handful of aggregate queries per scrape (no query per agent, run or
skill), and Redis for the queue lengths and the reaper's counts.
"""

import logging
from collections.abc import Iterator

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count, F, Q
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from agents.models import Agent, Message
from agents.routing import agent_queues
from agents.selectors import agent_status_counts
from commands.models import Trigger
from coordination import flow
from coordination.dispatch import queue_lengths
from coordination.models import Run, StepRun
from coordination.reaper import REAPER_COUNTS_KEY
from hive_core.redis_client import redis_probe_client

logger = logging.getLogger(__name__)

# Seconds. Steps run from milliseconds (noop, ~2 ms here) to minutes (builds).
STEP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# Queue wait is the time from dispatch to claim: milliseconds when agents keep up.
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# What a step waits for, by its state and reason (coordination.flow): a ready step
# held back for an agent, a concurrency slot, a rate slot or its paused run; one
# waiting for an approval; a failed try waiting for its retry's backoff to pass.
_PENDING = Q(state=StepRun.State.PENDING)
STEPS_WAITING = {
    "agent": _PENDING & Q(waiting_reason__startswith=flow.WAIT_AGENT),
    "capacity": _PENDING & Q(waiting_reason__startswith=flow.WAIT_CAPACITY),
    "rate": _PENDING & Q(waiting_reason__startswith=flow.WAIT_RATE),
    "paused": _PENDING & Q(waiting_reason__startswith=flow.WAIT_PAUSED),
    "approval": Q(state=StepRun.State.WAITING),
    "retry": _PENDING & Q(waiting_reason="", next_attempt_at__isnull=False),
}
# Concurrency keys are templates rendered from params (`deploy:{{ params.env }}`, a
# key per customer or per model): there may be any number, and each key reported is a
# series Prometheus keeps in memory (and keeps as a stale series after it goes). So
# only the keys something holds or waits for are reported, the busiest this many of
# steps' and of runs', and hive_concurrency_keys says how many there are in all.
KEYS_SHOWN = 100
# Who counts against a key, and who waits in its line: steps (a slot while queued or
# running) and runs (a workflow's key, while started).
KEY_HOLDERS = {
    "step": (StepRun, Q(state__in=flow.HOLDING), _PENDING & Q(
        waiting_reason__startswith=flow.WAIT_CAPACITY)),
    "run": (Run, Q(state__in=Run.STARTED), Q(state=Run.State.PENDING)),
}  # fmt: skip
# The reaper's counts (coordination/reaper.py): steps sent again, runs past their
# deadline, and lines of concurrency keys moved on.
REAPER_REASONS = ("lost", "resent", "due", "woken", "expired", "lines")


# Seconds from one timestamp column to another, in SQL the database computes natively.
# SQLite keeps timestamps as text; julianday() is its C parser (to ~20 µs here).
_SECONDS_BETWEEN = {
    "postgresql": lambda start, end: f"EXTRACT(EPOCH FROM ({end} - {start}))",
    "sqlite": lambda start, end: f"((julianday({end}) - julianday({start})) * 86400.0)",
}


def websocket_clients() -> int:
    """Dashboard WebSocket clients connected to this web process."""
    # Imported here: the reaper imports this module, and agents need no Channels.
    from dashboard.consumers import connected_clients

    return connected_clients()


def _gauge_by(name: str, help_text: str, label: str, values, counts: dict) -> GaugeMetricFamily:
    """One series per value (zero when there are none), from `counts` by value."""
    gauge = GaugeMetricFamily(name, help_text, labels=[label])
    for value in values:
        gauge.add_metric([value], counts.get(value, 0))
    return gauge


def _counts_by_state(model) -> dict[str, int]:
    return dict(model.objects.values_list("state").annotate(n=Count("pk")).order_by())


class HiveCollector:
    """Every Hive series, computed at scrape time."""

    def collect(self) -> Iterator[Metric]:
        yield from self._agents()
        yield from self._runs()
        yield from self._steps()
        yield from self._concurrency()
        yield from self._step_histograms()
        yield from self._messages()
        yield from self._webhooks()
        yield from self._redis()
        clients = GaugeMetricFamily(
            "hive_websocket_clients", "Dashboard WebSocket clients connected to this web process."
        )
        clients.add_metric([], websocket_clients())
        yield clients

    def _agents(self) -> Iterator[Metric]:
        counts = agent_status_counts()
        yield _gauge_by("hive_agents", "Registered agents by status.", "status", counts, counts)

    def _runs(self) -> Iterator[Metric]:
        counts = _counts_by_state(Run)
        yield _gauge_by("hive_runs", "Runs by state.", "state", Run.State.values, counts)
        started = CounterMetricFamily("hive_runs_started", "Runs started.")
        started.add_metric([], sum(counts.values()))
        yield started
        finished = CounterMetricFamily(
            "hive_runs_finished", "Runs finished, by outcome.", labels=["state"]
        )
        for state in sorted(Run.TERMINAL):
            finished.add_metric([state], counts.get(state, 0))
        yield finished

    def _webhooks(self) -> Iterator[Metric]:
        rejected = CounterMetricFamily(
            "hive_webhook_rejected",
            "Deliveries to a webhook trigger refused for a missing or bad signature.",
            labels=["trigger"],
        )
        for name, count in Trigger.objects.values_list("name", "rejected_count"):
            rejected.add_metric([name], count)
        yield rejected

    def _steps(self) -> Iterator[Metric]:
        counts = _counts_by_state(StepRun)
        yield _gauge_by("hive_steps", "Steps by state.", "state", StepRun.State.values, counts)
        open_steps = StepRun.objects.filter(
            state__in=[StepRun.State.PENDING, StepRun.State.WAITING]
        )
        waiting = open_steps.aggregate(
            **{reason: Count("pk", filter=q) for reason, q in STEPS_WAITING.items()}
        )
        yield _gauge_by(
            "hive_steps_waiting",
            "Steps held back, by what for: an agent, a concurrency slot (capacity), a rate "
            "slot, their paused run, an approval, a retry's backoff.",
            "reason", STEPS_WAITING, waiting,
        )  # fmt: skip

    def _concurrency(self) -> Iterator[Metric]:
        """Per concurrency key, what holds a slot and what waits in its line; the
        busiest KEYS_SHOWN keys of steps and of runs (see KEYS_SHOWN)."""
        in_use = GaugeMetricFamily(
            "hive_concurrency_in_use",
            "Slots of a concurrency key held: steps queued or running, runs started "
            f"(the busiest {KEYS_SHOWN} keys of each).",
            labels=["key", "of"],
        )
        line = GaugeMetricFamily(
            "hive_concurrency_line",
            f"Steps or runs waiting for a slot of a concurrency key (the busiest {KEYS_SHOWN}).",
            labels=["key", "of"],
        )
        keys = GaugeMetricFamily(
            "hive_concurrency_keys",
            "Concurrency keys something holds or waits for, shown or not.",
            labels=["of"],
        )
        for of, (model, holding, waiting) in KEY_HOLDERS.items():
            keyed = model.objects.exclude(concurrency_key="").filter(holding | waiting)
            by_key = keyed.values("concurrency_key").order_by()
            keys.add_metric([of], by_key.distinct().count())
            busiest = by_key.annotate(
                held=Count("pk", filter=holding), waiting=Count("pk", filter=waiting)
            ).order_by((F("held") + F("waiting")).desc(), "concurrency_key")[:KEYS_SHOWN]
            for row in busiest:
                in_use.add_metric([row["concurrency_key"], of], row["held"])
                line.add_metric([row["concurrency_key"], of], row["waiting"])
        yield in_use
        yield line
        yield keys

    def _step_histograms(self) -> Iterator[Metric]:
        """Duration (claim to result) and queue wait (dispatch to claim) per skill, as
        cumulative buckets counted by one GROUP BY over the steps agents ran.

        Raw SQL with the database's own date arithmetic: Django's duration
        expressions call a Python function per row and aggregate on SQLite, and
        a scrape of 300,000 steps took 60 s that way; see `_SECONDS_BETWEEN`."""
        between = _SECONDS_BETWEEN[connection.vendor]
        columns = [
            "COUNT(*) AS n",
            "SUM(d) AS d_sum",
            # A retried step's queued_at is its last dispatch; count no negative waits.
            "SUM(CASE WHEN w >= 0 THEN 1 ELSE 0 END) AS w_n",
            "SUM(CASE WHEN w >= 0 THEN w ELSE 0 END) AS w_sum",
            *(
                f"SUM(CASE WHEN d <= {bound} THEN 1 ELSE 0 END) AS d{i}"
                for i, bound in enumerate(STEP_DURATION_BUCKETS)
            ),
            *(
                f"SUM(CASE WHEN w >= 0 AND w <= {bound} THEN 1 ELSE 0 END) AS w{i}"
                for i, bound in enumerate(QUEUE_WAIT_BUCKETS)
            ),
        ]
        table = connection.ops.quote_name(StepRun._meta.db_table)
        # Only the constant bounds above and the model's table are formatted in.
        # MATERIALIZED: each step's two intervals computed once, not once per bucket
        # (SQLite would inline them: 3 s instead of 0.3 s for 300,000 steps here).
        sql = (
            "WITH s AS MATERIALIZED ("  # noqa: S608
            f"SELECT skill, {between('started_at', 'finished_at')} AS d, "
            f"{between('queued_at', 'started_at')} AS w FROM {table} "
            # Foreach groups and skipped steps ran on no agent: they have no agent name.
            "WHERE started_at IS NOT NULL AND finished_at IS NOT NULL "
            "AND queued_at IS NOT NULL AND agent <> '') "
            f"SELECT skill, {', '.join(columns)} FROM s GROUP BY skill ORDER BY skill"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql)
            names = [c[0] for c in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        durations = HistogramMetricFamily(
            "hive_step_duration_seconds",
            "Time from claim to result of finished steps, per skill.",
            labels=["skill"],
        )
        waits = HistogramMetricFamily(
            "hive_step_queue_wait_seconds",
            "Time from dispatch to claim of finished steps, per skill.",
            labels=["skill"],
        )
        for row in rows:
            buckets = [(str(b), row[f"d{i}"]) for i, b in enumerate(STEP_DURATION_BUCKETS)]
            durations.add_metric(
                [row["skill"]], [*buckets, ("+Inf", row["n"])], float(row["d_sum"] or 0)
            )
            buckets = [(str(b), row[f"w{i}"]) for i, b in enumerate(QUEUE_WAIT_BUCKETS)]
            waits.add_metric(
                [row["skill"]], [*buckets, ("+Inf", row["w_n"])], float(row["w_sum"] or 0)
            )
        yield durations
        yield waits

    def _messages(self) -> Iterator[Metric]:
        counts = _counts_by_state(Message)
        for name, help_text, value in (
            ("hive_messages_sent", "Agent messages sent.", sum(counts.values())),
            ("hive_messages_handled", "Agent messages handled.", counts.get("handled", 0)),
            ("hive_messages_dead", "Agent messages dead-lettered.", counts.get("dead", 0)),
        ):
            counter = CounterMetricFamily(name, help_text)
            counter.add_metric([], value)
            yield counter

    def _redis(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("hive_redis_up", "1 if the scrape reached Redis.")
        agents = Agent.objects.exclude(status=Agent.Status.OFFLINE).values_list(
            "name", "role", "skills"
        )
        queues = {settings.CELERY_TASK_DEFAULT_QUEUE, settings.HIVE_COORDINATOR_QUEUE}
        for name, role, skills in agents:
            queues.update(agent_queues(name=name, role=role, skills=list(skills)))
        queues = sorted(queues)
        # A scrape during a Redis outage answers without the Redis series (and
        # hive_redis_up 0) instead of hanging for the scraper's timeout.
        client = redis_probe_client()
        try:
            # Every priority's list of each queue counted (coordination.dispatch).
            lengths = queue_lengths(client, queues)
            reaped = client.hgetall(REAPER_COUNTS_KEY)
        except (redis.RedisError, OSError) as exc:
            logger.warning("metrics: Redis unreachable: %s", exc.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        finally:
            client.close()
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily(
            "hive_queue_depth",
            "Messages waiting in each Celery queue of a live agent (not yet delivered).",
            labels=["queue"],
        )
        for queue in queues:
            depth.add_metric([queue], lengths[queue])
        yield depth
        redispatched = CounterMetricFamily(
            "hive_reaper_redispatched",
            "What the reaper moved on: steps sent again, lost (agent died or lease ran "
            "out), resent (the queue lost the message), due (retry backoff or rate slot "
            "passed, or an agent came back); woken (sleeps ended, waits for a signal "
            "timed out); expired (runs cancelled past their "
            "deadline); lines (steps or runs started from a concurrency key's line).",
            labels=["reason"],
        )
        for reason in REAPER_REASONS:
            redispatched.add_metric([reason], int(reaped.get(reason, 0)))
        yield redispatched


registry = CollectorRegistry(auto_describe=False)
registry.register(HiveCollector())
