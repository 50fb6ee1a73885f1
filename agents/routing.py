"""Where work goes: every agent consumes the queues of its name, its role and each
of its skills, so a step goes to `agent.<name>` if it names an agent, else to
`role.<role>` if it names a role, else to `skill.<skill>`."""

import time

from agents.models import Agent
from hive_core.errors import Unavailable

# Agents come and go over seconds (heartbeats, HIVE_AGENT_TIMEOUT); re-reading
# them for every step of a busy run is a query per step for nothing.
_AGENTS_TTL = 1.0
_agents_cache: tuple[float, list[Agent]] = (0.0, [])


class RoutingError(Unavailable):
    """No live agent can take the work; the message says what is missing."""


def agent_queue(name: str) -> str:
    return f"agent.{name}"


def role_queue(role: str) -> str:
    return f"role.{role}"


def skill_queue(skill: str) -> str:
    return f"skill.{skill}"


def agent_queues(*, name: str, role: str, skills: list[str]) -> list[str]:
    return [agent_queue(name), role_queue(role), *(skill_queue(s) for s in skills)]


def route(*, skill: str, agent: str = "", role: str = "") -> str:
    """The queue for work needing `skill`, or RoutingError if no live agent would take it.

    Refusing here, rather than queueing, keeps work from vanishing into a queue
    nobody reads.
    """
    candidates = [
        a
        for a in _online_agents()
        if (not agent or a.name == agent) and (not role or a.role == role)
    ]
    target = f"agent {agent!r}" if agent else f"role {role!r}" if role else "any agent"
    if not candidates:
        raise RoutingError(f"no online agent matches {target}")
    able = [a for a in candidates if skill in a.skills]
    if not able:
        raise RoutingError(f"{target} does not offer skill {skill!r}")
    if not any(a.accepts_work for a in able):
        raise RoutingError(f"every agent offering skill {skill!r} to {target} is draining")
    if agent:
        return agent_queue(agent)
    return role_queue(role) if role else skill_queue(skill)


def agent_accepts_work(name: str) -> bool:
    """Whether agent `name` is online and not draining, as routing last read it."""
    return any(a.name == name and a.accepts_work for a in _online_agents())


def _online_agents() -> list[Agent]:
    global _agents_cache
    read_at, agents = _agents_cache
    if time.monotonic() - read_at > _AGENTS_TTL:
        agents = list(
            Agent.objects.exclude(status=Agent.Status.OFFLINE).only(
                "name", "role", "skills", "status"
            )
        )
        _agents_cache = (time.monotonic(), agents)
    return agents
