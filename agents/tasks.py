import os

from celery import shared_task
from django.conf import settings

from agents.services import agents_reap


@shared_task(bind=True, name="agents.ping_task", acks_late=False)
def ping_task(self) -> dict:
    """Answer a ping from whichever worker consumed it; `hive ping` measures the round trip."""
    return {"hostname": self.request.hostname, "pid": os.getpid()}


@shared_task(name="agents.reap_agents_task", acks_late=False, ignore_result=True)
def reap_agents_task() -> list[str]:
    """Run by the coordinator's beat: mark agents offline that stopped heartbeating."""
    return agents_reap(timeout=settings.HIVE_AGENT_TIMEOUT)
