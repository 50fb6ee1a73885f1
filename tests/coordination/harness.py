"""The engine without agent processes: dispatches are captured at the seam
(`coordination.dispatch.transport`) and the step task runs in this process.

What runs is Hive's own code against the test database, committing as an agent
would: `run_start` and every result commit, the engine's `on_commit` hands the
queued steps to `send` below, and `drain` runs `execute_step_task`'s body for each
one (`.run`: no Celery, no eager mode) as the agent the step's queue reaches.
Between steps it runs the reaper's pass when a retry's backoff is due, as the
coordinator would. Only the processes are missing: an agent here is a row (online,
its skills) and a live heartbeat key, and a step's time limit is a signal to the
main thread, as Celery's pool sends one to the process running the step.

A DAG rule runs in milliseconds this way; what needs a real process (the pool's
concurrency, a revoke terminating a step, the Continuation, hard limits) is
tested on real agents.
"""

import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone

from agents import routing
from agents.liveness import live_key
from agents.models import Agent
from agents.routing import agent_queues
from coordination.dispatch import Outgoing
from coordination.models import Run, StepRun
from coordination.reaper import steps_reap
from coordination.tasks import execute_step_task
from hive_core.redis_client import redis_client


class Harness:
    """The dispatch seam's transport for a test, and the agents that take its steps."""

    def __init__(self):
        self.outgoing: list[Outgoing] = []  # sent, not yet run: the harness's queues
        self.sent: list[Outgoing] = []  # everything ever sent, in order
        self.revoked: list[str] = []  # task ids the engine asked to stop
        self.ran: list[tuple[Outgoing, str]] = []  # (what ran, on which agent)
        self._agents: dict[str, Agent] = {}
        # Pool processes beside the main thread: threads, each with its connection.
        self._pool: ThreadPoolExecutor | None = None
        self._connections: list = []

    # the transport (coordination.dispatch)

    def send(self, outgoing: list[Outgoing]) -> None:
        self.outgoing += outgoing
        self.sent += outgoing

    def revoke(self, task_ids: list[str]) -> None:
        self.revoked += task_ids
        # A revoked task that has not started never runs (Celery drops it on delivery).
        self.outgoing = [out for out in self.outgoing if out.task_id not in task_ids]

    # agents

    def agent(
        self, name: str, *, skills: str = "noop", role: str = "", concurrency: int = 1
    ) -> Agent:
        """An online agent as routing sees one: its row (idle, beating now) and its live
        heartbeat key. As `hive agent`: `skills` comma-separated, the role the name's."""
        now = timezone.now()
        agent, _ = Agent.objects.update_or_create(
            name=name,
            defaults={
                "role": role or name, "skills": skills.split(","), "concurrency": concurrency,
                "status": Agent.Status.IDLE, "node": f"{name}@harness", "load": 0.0,
                "started_at": now, "last_heartbeat": now,
            },
        )  # fmt: skip
        state = {"status": "idle", "running": 0, "concurrency": concurrency, "load": 0.0,
                 "at": now.isoformat()}  # fmt: skip
        redis_client().set(live_key(name), json.dumps(state), ex=settings.HIVE_AGENT_TIMEOUT)
        self._agents[name] = agent
        routing_forget()
        return agent

    def _consuming(self) -> list[tuple[Agent, set[str]]]:
        """The agents that take work now (their rows, as a test may have changed them),
        each with the queues `hive agent` subscribes it to."""
        agents = Agent.objects.filter(name__in=self._agents).order_by("name")
        return [
            (agent, set(agent_queues(name=agent.name, role=agent.role, skills=agent.skills)))
            for agent in agents
            if agent.accepts_work
        ]

    # running steps

    def settle(self, run: Run) -> Run:
        """`drain`, then `run` as the database has it now."""
        self.drain()
        return Run.objects.get(pk=run.pk)

    def drain(self, *, limit: int = 1000) -> list[tuple[Outgoing, str]]:
        """Run what is sent until nothing is left to run: each step on an agent
        consuming its queue (as many at once as the agents' concurrency), and the
        reaper's pass when a retry's backoff comes due. Returns what ran."""
        ran_before = len(self.ran)
        for _ in range(limit):
            wave = self._wave()
            if wave:
                self._run_wave(wave)
            elif not self._reap():
                return self.ran[ran_before:]
        raise AssertionError(f"the runs did not settle in {limit} rounds: {self.outgoing}")

    def run_sent(self) -> list[tuple[Outgoing, str]]:
        """Run what is sent now, wave after wave, without the reaper's pass (a step left
        waiting for a time stays so). Returns what ran."""
        ran_before = len(self.ran)
        while wave := self._wave():
            self._run_wave(wave)
        return self.ran[ran_before:]

    def _wave(self) -> list[tuple[Outgoing, str]]:
        """The next steps to run side by side: each on a consuming agent with a free
        slot, at most one with a time limit (limits are signals to the main thread)."""
        slots: dict[str, int] = {}
        wave, timed = [], False
        consuming = self._consuming() if self.outgoing else []
        for out in self.outgoing:
            if out.timeout and timed:
                continue
            for agent, queues in consuming:
                if out.queue not in queues:
                    continue
                used = slots.get(agent.name, 0)
                if used < agent.concurrency:
                    slots[agent.name] = used + 1
                    wave.append((out, agent.name))
                    timed = timed or bool(out.timeout)
                    break
        taken = {id(out) for out, _ in wave}
        self.outgoing = [out for out in self.outgoing if id(out) not in taken]
        # The step with a time limit runs in the main thread, the rest beside it.
        return sorted(wave, key=lambda job: not job[0].timeout)

    def _run_wave(self, wave: list[tuple[Outgoing, str]]) -> None:
        first, *others = wave
        if others and self._pool is None:
            self._pool = ThreadPoolExecutor(initializer=self._thread_start)
        beside = [self._pool.submit(self._execute, *job) for job in others]
        self._execute(*first)
        for future in beside:
            future.result()  # an error of the engine's fails the test

    def _thread_start(self) -> None:
        # The thread's connection (not the proxy: it resolves per thread) is closed by
        # `close`, from the main thread.
        opened = connections[DEFAULT_DB_ALIAS]
        opened.inc_thread_sharing()
        self._connections.append(opened)

    def close(self) -> None:
        """Stop the threads and close their connections (before the test's flush)."""
        if self._pool is not None:
            self._pool.shutdown()
        for opened in self._connections:
            opened.close()

    def _execute(self, out: Outgoing, agent: str) -> None:
        """What an agent's pool process does with the message: `execute_step_task`."""
        hard = out.timeout + settings.HIVE_HARD_TIMEOUT_GRACE if out.timeout else None
        # The request a worker would give the task: its id, its host (the agent's name
        # outside an agent process) and its (hard, soft) time limits.
        execute_step_task.push_request(
            id=out.task_id, hostname=agent, timelimit=(hard, out.timeout),
            delivery_info={"routing_key": out.queue},
        )  # fmt: skip
        try:
            with soft_time_limit(out.timeout):
                execute_step_task.run(out.step_run_id, out.attempt, out.rates)
        finally:
            execute_step_task.pop_request()
        self.ran.append((out, agent))

    def _reap(self) -> bool:
        """The coordinator's pass, once a pending retry's backoff is due (waiting for
        it); False if the pass sent nothing."""
        due = (
            StepRun.objects.filter(state=StepRun.State.PENDING, pending_deps=0)
            .exclude(next_attempt_at=None)
            .exclude(run__state__in=Run.TERMINAL)
            .order_by("next_attempt_at")
            .values_list("next_attempt_at", flat=True)
            .first()
        )
        if due is not None:
            time.sleep(max(0.0, (due - timezone.now()).total_seconds()))
        sent = len(self.sent)
        self.reap()
        return len(self.sent) > sent

    def reap(self) -> dict[str, int]:
        """One pass of the reaper over the steps (coordination.reaper.reap_pass), with
        the harness's queues as the queues Redis would hold."""
        routing_forget()
        return steps_reap(queue_lengths=self._queue_lengths)

    def _queue_lengths(self, queues: list[str]) -> dict[str, int]:
        return {q: sum(out.queue == q for out in self.outgoing) for q in queues}


def routing_forget() -> None:
    """Make routing read the agents again now (it keeps them for a second)."""
    routing._agents_cache = (0.0, [])


@contextmanager
def soft_time_limit(seconds: float | None) -> Iterator[None]:
    """Raise SoftTimeLimitExceeded in the main thread after `seconds`, as Celery's pool
    signals the process running a task (SIGUSR1). SIGALRM is pytest-timeout's."""
    if not seconds:
        yield
        return
    armed = threading.Event()
    armed.set()

    def expire(signum, frame):
        if armed.is_set():
            armed.clear()
            raise SoftTimeLimitExceeded(seconds)

    previous = signal.signal(signal.SIGUSR1, expire)
    main = threading.main_thread().ident
    timer = threading.Timer(
        seconds, lambda: armed.is_set() and signal.pthread_kill(main, signal.SIGUSR1)
    )
    timer.start()
    try:
        yield
    finally:
        armed.clear()
        timer.cancel()
        timer.join()  # a signal on its way now finds the handler, disarmed
        signal.signal(signal.SIGUSR1, previous)
