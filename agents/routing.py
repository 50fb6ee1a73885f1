"""Queue names: every agent consumes the queues of its name, its role and each skill."""


def agent_queue(name: str) -> str:
    return f"agent.{name}"


def role_queue(role: str) -> str:
    return f"role.{role}"


def skill_queue(skill: str) -> str:
    return f"skill.{skill}"


def agent_queues(*, name: str, role: str, skills: list[str]) -> list[str]:
    return [agent_queue(name), role_queue(role), *(skill_queue(s) for s in skills)]
