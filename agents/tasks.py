import os

from celery import shared_task

from agents import worker
from agents.skills import SkillContext, SkillError, SkillInputError, skill_execute


@shared_task(bind=True, name="agents.ping_task", acks_late=False)
def ping_task(self) -> dict:
    """Answer a ping from whichever worker consumed it; `hive ping` measures the round trip."""
    return {"hostname": self.request.hostname, "pid": os.getpid()}


# A skill's refusal is the caller's answer (`hive skill` prints it), not the agent's
# fault: `throws` logs it in one line instead of as an unexpected traceback.
@shared_task(name="agents.skill_run_task", throws=(SkillError,))
def skill_run_task(skill: str, inputs: dict, idempotency_key: str | None = None) -> dict:
    """Run one skill on this agent (`hive skill`); returns the agent's name and the output."""
    agent = worker.identity
    if agent is None or skill not in agent.skills:
        # Routing sends a skill only to agents offering it; anything else is a bug.
        raise SkillInputError(f"agent {getattr(agent, 'name', '?')} does not offer {skill!r}")
    context = SkillContext(agent=agent.name, idempotency_key=idempotency_key)
    return {"agent": agent.name, "output": skill_execute(skill, inputs, context=context)}
