"""Skills: what agents can do. `from agents.skills import skill` to write one."""

from agents.skills.registry import (
    SkillContext,
    SkillError,
    SkillInputError,
    skill,
    skill_execute,
    skill_get,
    skill_names,
    skills_load,
)

__all__ = [
    "SkillContext",
    "SkillError",
    "SkillInputError",
    "skill",
    "skill_execute",
    "skill_get",
    "skill_names",
    "skills_load",
]
