"""The agent pool file (hive.agents.yaml): which agents `hive up` starts."""

import re
from pathlib import Path

from agents.identity import AGENT_SLUG_PATTERN, AgentSpec, concurrency_problem
from hive_core.yamlfile import DefinitionError, LineDict, yaml_load

_SLUG = re.compile(AGENT_SLUG_PATTERN)
_SKILL = re.compile(r"^[a-z0-9][a-z0-9_.-]*\Z")


def agent_pool_load(path: Path) -> list[AgentSpec]:
    """Read and check the pool file; errors name the file, line and field."""
    data = yaml_load(path)
    entries = data.get("agents") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DefinitionError(f"{path}: expected a non-empty list under 'agents:'")
    specs: dict[str, AgentSpec] = {}
    for index, entry in enumerate(entries):
        line = f":{entry.line}" if isinstance(entry, LineDict) else ""
        where = f"{path}{line}: agents[{index}]"
        if not isinstance(entry, dict):
            raise DefinitionError(f"{where}: expected a mapping with name, role, skills")
        unknown = set(entry) - {"name", "role", "skills", "concurrency"}
        if unknown:
            raise DefinitionError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        spec = agent_spec(**entry, at=f"{where}.")
        if spec.name in specs:
            raise DefinitionError(f"{where}.name: duplicate agent name {spec.name!r}")
        specs[spec.name] = spec
    return list(specs.values())


def agent_spec(
    *, name: object, role: object = None, skills: object = (), concurrency: object = 1, at: str
) -> AgentSpec:
    """Check one agent's identity, for the pool file and `hive agent` alike; errors name
    the field after `at` (`hive.agents.yaml:4: agents[0].` or `--`)."""
    role = role or name
    for field, value in (("name", name), ("role", role)):
        if not isinstance(value, str) or not _SLUG.match(value):
            raise DefinitionError(f"{at}{field}: {value!r} is not a lowercase slug")
    if not isinstance(skills, list | tuple) or not all(
        isinstance(s, str) and _SKILL.match(s) for s in skills
    ):
        raise DefinitionError(f"{at}skills: expected a list of skill names")
    from agents.skills import skill_names  # the registry is loaded once Django is set up

    unknown = sorted(set(skills) - set(skill_names()))
    if unknown:
        raise DefinitionError(f"{at}skills: unknown skill {unknown[0]!r}")
    problem = concurrency_problem(concurrency)
    if problem:
        raise DefinitionError(f"{at}concurrency: {problem}")
    return AgentSpec(name=name, role=role, skills=tuple(skills), concurrency=concurrency)
