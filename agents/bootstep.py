"""The bootstep that makes a Celery worker a Hive agent (the agent is worker.identity).

Imported by hive_project/celery.py before Django is set up, so Django code is
imported inside the methods.
"""

import logging
import os

from celery import bootsteps
from celery.worker import state as worker_state

from agents import worker

logger = logging.getLogger(__name__)


class AgentStep(bootsteps.StartStopStep):
    """Online once consuming, heartbeat while running, offline on clean shutdown.

    A consumer step, so the agent announces itself only once its queues are
    being consumed; `stop` runs on every broker reconnect and only pauses the
    heartbeat, `shutdown` runs once when the worker exits.
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.pid = os.getpid()
        self.timer = None
        self.heartbeat = None
        self.inbox = None

    def include_if(self, parent) -> bool:
        return worker.identity is not None

    def start(self, consumer) -> None:
        from django.conf import settings

        from agents.heartbeat import Heartbeat
        from agents.services import agent_ready

        self.consumer = consumer
        self.heartbeat = Heartbeat(name=worker.identity.name, pid=self.pid)
        agent_ready(name=worker.identity.name, pid=self.pid, node=consumer.hostname)
        self.beat()
        self.timer = consumer.timer.call_repeatedly(
            settings.HIVE_HEARTBEAT_INTERVAL, self.beat, priority=10
        )
        self._start_inbox()

    def _start_inbox(self) -> None:
        """The agent's inbox consumer runs beside the worker for the process's whole life:
        `start` runs again on every broker reconnect, the inbox keeps going (it has its
        own Redis connection and recovers from Redis restarts by itself)."""
        from agents.inbox import Inbox

        if self.inbox is None or not self.inbox.alive():
            identity = worker.identity
            self.inbox = Inbox(agent=identity.name, role=identity.role, pid=self.pid)
            self.inbox.start()

    def beat(self) -> None:
        from django.db import close_old_connections, connection

        from agents.models import Agent

        running = len(worker_state.active_requests)
        # After a drain the agent consumes none of its queues: that is its state.
        if not self.consumer.task_consumer.queues:
            status = Agent.Status.DRAINING
        else:
            status = Agent.Status.BUSY if running else Agent.Status.IDLE
        # This process runs no tasks, so nothing else retires its database connection:
        # do it here, as Django does per request, or a restarted database would leave
        # the agent beating into a dead connection forever.
        close_old_connections()
        try:
            self.heartbeat.beat(
                status=status, running=running, concurrency=self.consumer.pool.num_processes
            )
            self._renew_leases()
        except Exception:
            # A missed beat is not fatal (Redis or the database may be back next time);
            # the timer must keep running, on a fresh connection.
            logger.exception("agent %s: heartbeat failed", worker.identity.name)
            connection.close()

    def _renew_leases(self) -> None:
        """Steps still in the pool keep their leases; one whose pool process died
        stops being renewed, and the reaper tries it again when the lease runs out.
        Which tasks run steps is coordination's to know (agents/hooks.py): it is
        given every running task, and an id no step holds matches nothing."""
        from agents.hooks import lease_renewers

        running = [request.id for request in list(worker_state.active_requests)]
        if running:
            lease_renewers(agent=worker.identity.name, task_ids=running)

    def stop(self, consumer) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def shutdown(self, consumer) -> None:
        from agents.services import agent_mark_offline

        self.stop(consumer)
        if self.inbox is not None:
            self.inbox.stop()  # finishes the batch in hand; the rest stays in the inbox
        agent_mark_offline(name=worker.identity.name, pid=self.pid, reason="shut down")
