"""The bootstep that makes a Celery worker a Hive agent.

Imported by hive_project/celery.py before Django is set up, so model code is
imported inside the methods.
"""

import os
import socket

from celery import bootsteps


class AgentStep(bootsteps.StartStopStep):
    """Register on start, heartbeat while running, mark offline on clean shutdown.

    A consumer step, so the agent announces itself only once its queues are
    being consumed; `stop` runs on every broker reconnect and only pauses the
    heartbeat, `shutdown` runs once when the worker exits.
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, agent_name="", agent_role="", agent_skills="", **kwargs):
        super().__init__(parent, **kwargs)
        self.name = agent_name
        self.role = agent_role or agent_name
        self.skills = [s for s in agent_skills.split(",") if s]
        self.pid = os.getpid()
        self.heartbeat = None

    def include_if(self, parent) -> bool:
        return bool(self.name)

    def start(self, parent) -> None:
        from django.conf import settings

        from agents.services import agent_register
        from hive_project import __version__

        agent_register(
            name=self.name,
            role=self.role,
            skills=self.skills,
            concurrency=parent.controller.concurrency,
            host=socket.gethostname(),
            pid=self.pid,
            version=__version__,
        )
        self.heartbeat = parent.timer.call_repeatedly(
            settings.HIVE_HEARTBEAT_INTERVAL, self.beat, priority=10
        )

    def beat(self) -> None:
        from agents.services import agent_heartbeat

        agent_heartbeat(name=self.name, pid=self.pid)

    def stop(self, parent) -> None:
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            self.heartbeat = None

    def shutdown(self, parent) -> None:
        from agents.services import agent_mark_offline

        self.stop(parent)
        agent_mark_offline(name=self.name, pid=self.pid)
