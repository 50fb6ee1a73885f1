"""Parse and validate a workflow definition (YAML or JSON).

A definition is checked in full before anything is saved: its shape against a
JSON Schema, then the graph (unique ids, known `needs`, no cycles, known
skills) and every template's syntax. Errors name the source, line, step and
field: `release.yaml:14: step 'test': needs: unknown step 'biuld'`.
"""

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError

from agents.skills import skill_names
from agents.skills.registry import schema_problem, skill_get
from coordination.models import RATE_LIMIT_MAX, RATE_PER_MAX, Workflow
from coordination.templates import TemplateError, template_check, template_steps
from hive_core.jsondata import SchemaValidator
from hive_core.yamlfile import DefinitionError, LineDict, yaml_load

_SLUG = "^[a-z0-9][a-z0-9_-]*$"
# Flow control (coordination.flow). A key is a template, like the overlap key.
_KEY = {"type": "string", "minLength": 1, "maxLength": 200}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": RATE_LIMIT_MAX}
PRIORITY = {"type": "integer", "minimum": 0, "maximum": 9}
CONCURRENCY_SCHEMA = {
    "type": "object",
    "properties": {"key": _KEY, "limit": _LIMIT},
    "required": ["key", "limit"],
    "additionalProperties": False,
}
RATE_SCHEMA = {
    "type": "object",
    "properties": {
        "key": _KEY,
        "limit": _LIMIT,
        "per": {"type": "number", "exclusiveMinimum": 0, "maximum": RATE_PER_MAX},
    },
    "required": ["limit", "per"],
    "additionalProperties": False,
}
# A run's deadline, seconds from its start (a week at most).
RUN_TIMEOUT = {"type": "number", "exclusiveMinimum": 0, "maximum": 7 * 86400}
# Durable waits: a step that sleeps or waits for a signal instead of running a skill.
# A wait is 30 days at most; a template (a string) is checked when it renders.
WAIT_MAX = 30 * 86400
WAIT_KINDS = ("sleep", "sleep_until", "wait_for")
SIGNAL_NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.:-]*$", "maxLength": 100}
WORKFLOW_REF = "^[a-z0-9][a-z0-9_.:-]*(@[0-9]+)?$"
# Sub-workflows are followed this deep when a definition is checked for a cycle.
_REF_DEPTH = 20
STEP_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": "^[a-z][a-z0-9_-]*$", "maxLength": 64},
        "description": {"type": "string"},
        "skill": {"type": "string", "minLength": 1, "maxLength": 100},
        "agent": {"type": "string", "pattern": _SLUG, "maxLength": 64},
        "role": {"type": "string", "pattern": _SLUG, "maxLength": 64},
        "with": {"type": "object"},
        "needs": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            ]
        },
        "when": {"type": "string", "minLength": 1},
        "foreach": {"type": ["string", "array"]},
        "retries": {"type": "integer", "minimum": 0, "maximum": 25},
        "backoff": {"type": "number", "minimum": 0, "maximum": 3600},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
        "approval": {"type": "boolean"},
        "on_failure": {"enum": ["fail_run", "continue"]},
        "priority": PRIORITY,
        "concurrency": CONCURRENCY_SCHEMA,
        "rate": RATE_SCHEMA,
        # `minimum` and `maximum` hold for a number; a string is a template.
        "sleep": {"type": ["number", "string"], "minimum": 0, "maximum": WAIT_MAX, "minLength": 1},
        "sleep_until": {"type": "string", "minLength": 1},
        # A sub-workflow: `name@version`, or a name (its newest version when it starts).
        "workflow": {"type": "string", "pattern": WORKFLOW_REF, "maxLength": 112},
        "wait_for": {
            "type": "object",
            "properties": {
                "signal": SIGNAL_NAME,
                "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": WAIT_MAX},
            },
            "required": ["signal"],
            "additionalProperties": False,
        },
    },
    "required": ["id"],
    "additionalProperties": False,
}
SPEC_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.:-]*$", "maxLength": 100},
        "description": {"type": "string"},
        "params": {"type": "object"},
        "steps": {"type": "array", "minItems": 1, "maxItems": 1000, "items": STEP_SCHEMA},
        "priority": PRIORITY,
        "timeout": RUN_TIMEOUT,
        "concurrency": CONCURRENCY_SCHEMA,
    },
    "required": ["steps"],
    "additionalProperties": False,
}
_VALIDATOR = SchemaValidator(SPEC_SCHEMA)
STEP_DEFAULTS = {
    "agent": "",
    "role": "",
    "with": {},
    "needs": [],
    "when": "",
    "foreach": None,
    "retries": 0,
    "backoff": 1.0,
    "timeout": None,
    "approval": False,
    "on_failure": "fail_run",
}
# Flow control's step fields (priority, concurrency, rate) are kept only when given:
# the specs stored before them have none, and the digest of a definition that does not
# use them stays what it was (no new version of every workflow on upgrade).


class SpecError(DefinitionError):
    """The definition is invalid; nothing was saved."""


# The fields of a step that are templates.
TEMPLATE_FIELDS = ("with", "when", "foreach", "sleep", "sleep_until")


def step_wait(step: dict) -> str:
    """What a step waits for instead of running a skill (`sleep`, `sleep_until`,
    `wait_for`), or "" for a skill's step."""
    return next((kind for kind in WAIT_KINDS if kind in step), "")


def _check_kind(step: dict, at: str) -> None:
    """A step runs a skill, waits (a sleep, a signal) or runs a sub-workflow: one."""
    kinds = [k for k in ("skill", *WAIT_KINDS, "workflow") if k in step and step[k] != ""]
    if len(kinds) != 1:
        given = f"it gives {' and '.join(kinds)}" if kinds else "it gives none"
        raise SpecError(f"{at}give one of skill, sleep, sleep_until, wait_for or workflow: {given}")
    if kinds[0] != "skill":
        # A sub-workflow takes its params (`with`) and may run once per item.
        takes = ("with", "foreach") if kinds[0] == "workflow" else ()
        for field in ("with", "foreach", "agent", "role", "concurrency", "rate"):
            if field in takes:
                continue
            if step.get(field) not in (None, {}, "", STEP_DEFAULTS.get(field)):
                raise SpecError(
                    f"{at}{field}: a {kinds[0]} step runs no skill: it takes no {field}"
                )


def spec_load(path: Path) -> dict:
    """Read and validate a definition file."""
    return spec_validate(yaml_load(path), source=str(path), name=path.stem)


def spec_validate(data: object, *, source: str, name: str = "") -> dict:
    """Validate a parsed definition; return it normalized (every step field present).
    `name`: what it will be saved as, when not its own `name:` (a sub-workflow that
    leads back to it is a cycle)."""
    _check_shape(data, source)
    steps = data["steps"]
    nodes = {step["id"]: step for step in steps}

    def at(step_id: str, field: str) -> str:
        """`file:line: step 'id': `, on the line of the step's `field` when known."""
        return _where(source, nodes[step_id], field)

    seen: set[str] = set()
    for step in steps:
        if step["id"] in seen:
            raise SpecError(f"{_where(source, step, 'id')}id: duplicate step id {step['id']!r}")
        seen.add(step["id"])
    known_skills = set(skill_names())
    normalized = []
    for step in steps:
        step = {**STEP_DEFAULTS, "skill": "", **step}  # a wait's skill is "": it runs none
        step["needs"] = [step["needs"]] if isinstance(step["needs"], str) else list(step["needs"])
        sid = step["id"]
        _check_kind(step, at(sid, ""))
        if step["skill"] and step["skill"] not in known_skills:
            raise SpecError(f"{at(sid, 'skill')}skill: unknown skill {step['skill']!r}")
        if step["agent"] and step["role"]:
            raise SpecError(f"{at(sid, 'role')}role: give an agent or a role, not both")
        for need in step["needs"]:
            if need not in seen:
                raise SpecError(f"{at(sid, 'needs')}needs: unknown step {need!r}")
            if need == sid:
                raise SpecError(f"{at(sid, 'needs')}needs: a step cannot need itself")
        for field in TEMPLATE_FIELDS:
            try:
                template_check(step.get(field), condition=field == "when")
            except TemplateError as exc:
                raise SpecError(f"{at(sid, field)}{field}: template error: {exc}") from None
        for field in ("concurrency", "rate"):
            _check_key(step.get(field), at(sid, f"{field}.key"), field)
        if step["skill"]:
            _check_inputs(step, at(sid, "with"))
        if step.get("workflow"):
            _check_subworkflow(step["workflow"], data.get("name") or name, at(sid, "workflow"))
        normalized.append(step)
    _check_acyclic(normalized, at)
    _check_step_references(normalized, at)
    at_key = _where(source, data, "concurrency.key")
    _check_key(data.get("concurrency"), at_key, "concurrency")
    if template_steps(data.get("concurrency", {}).get("key", "")):
        raise SpecError(
            f"{at_key}concurrency.key: a run's key may read params only: no step has run "
            "when the run starts"
        )
    params = data.get("params", {})
    try:
        Draft202012Validator.check_schema(params)
    except SchemaError as exc:
        raise SpecError(
            f"{_where(source, params)}params: invalid JSON Schema: {exc.message}"
        ) from None
    return {
        "name": data.get("name", ""),
        "description": data.get("description", ""),
        "params": params,
        "steps": normalized,
        # Left out when not given, so the digest of a definition without them stays.
        **{f: data[f] for f in ("priority", "timeout", "concurrency") if f in data},
    }


def spec_digest(spec: dict) -> str:
    """A stable fingerprint: two definitions that mean the same have the same digest."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def spec_dependents(spec: dict) -> dict[str, list[str]]:
    """Each step id to the ids of the steps that need it."""
    dependents: dict[str, list[str]] = {step["id"]: [] for step in spec["steps"]}
    for step in spec["steps"]:
        for need in step["needs"]:
            dependents[need].append(step["id"])
    return dependents


def _where(source: str, node: object, field: str = "") -> str:
    """`file:line: step 'id': `, at the line of `field` (a dotted path, as
    `concurrency.limit`) when the file gives it."""
    line = ""
    if isinstance(node, LineDict):
        line = f":{_line(node, field.split('.') if field else [])}"
    step = f" step {node['id']!r}:" if isinstance(node, dict) and "id" in node else ""
    return f"{source}{line}:{step} "


def _line(node: LineDict, path: list[str]) -> int:
    """The line of the deepest key of `path` the file gives."""
    line = node.line
    for name in path:
        if not isinstance(node, LineDict):
            break
        line = (node.key_lines or {}).get(name, line)
        node = node.get(name)
    return line


def _check_shape(data: object, source: str) -> None:
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    error = errors[0]
    path = list(error.absolute_path)
    node, field = data, []
    if len(path) >= 2 and path[0] == "steps":
        node, field = data["steps"][path[1]], [str(p) for p in path[2:]]
        if isinstance(node, dict) and "id" not in node:
            field = [f"steps[{path[1]}]", *field]
    else:
        field = [str(p) for p in path]
    prefix = f"{'.'.join(field)}: " if field else ""
    raise SpecError(f"{_where(source, node, '.'.join(field))}{prefix}{error.message}")


def _check_inputs(step: dict, at: str) -> None:
    """What can be known of a step's inputs before it runs: the names its skill needs
    and takes, and the values that are not templates (the rest are checked when the
    step runs, rendered)."""
    inputs, skill = step["with"], skill_get(step["skill"])
    if not isinstance(inputs, dict):
        return
    properties = skill.params.get("properties", {})
    unknown = sorted(set(inputs) - set(properties))
    if unknown and skill.params.get("additionalProperties") is False:
        takes = ", ".join(sorted(properties)) or "no inputs"
        raise SpecError(f"{at}with: {skill.name} takes no {unknown[0]!r} (it takes {takes})")
    missing = [name for name in skill.params.get("required", []) if name not in inputs]
    if missing:
        raise SpecError(f"{at}with: {skill.name} needs {missing[0]!r}")
    for name in sorted(set(inputs) & set(properties)):
        if not _has_template(inputs[name]):
            validator = SchemaValidator(properties[name], format_checker=FormatChecker())
            problem = schema_problem(validator, inputs[name], at=f"with.{name}")
            if problem:
                raise SpecError(f"{at}{problem}")


def _check_key(flow: dict | None, at: str, field: str) -> None:
    """A flow key's template must parse (it renders when the step or run starts)."""
    if flow and "key" in flow:
        try:
            template_check(flow["key"])
        except TemplateError as exc:
            raise SpecError(f"{at}{field}.key: template error: {exc}") from None


def workflow_ref(ref: str) -> tuple[str, int | None]:
    """`name@3` as ("name", 3); a bare name as (name, None): its newest version."""
    name, _, version = ref.partition("@")
    return name, int(version) if version else None


def _check_subworkflow(ref: str, name: str, at: str) -> None:
    """A sub-workflow must be stored (and may not be a command's), and may not lead
    back to the definition being checked: a workflow that starts itself never ends."""
    wanted, version = workflow_ref(ref)
    if wanted.startswith("cmd:"):
        raise SpecError(f"{at}workflow: {wanted} is a command's: it starts only as the command")
    frontier = [(wanted, version, [wanted])]
    while frontier:
        current, pinned, path = frontier.pop()
        if name and current == name:
            raise SpecError(f"{at}workflow: {' -> '.join([name, *path])} is a cycle")
        versions = Workflow.objects.filter(name=current).order_by("-version")
        found = versions.filter(version=pinned).first() if pinned else versions.first()
        if found is None:
            if current == wanted:
                what = f"no version {pinned} of" if pinned and versions.exists() else "no"
                raise SpecError(f"{at}workflow: {what} workflow {current!r}")
            continue  # a deeper reference that is gone fails when its step starts
        if len(path) < _REF_DEPTH:
            frontier += [
                (*workflow_ref(s["workflow"]), [*path, workflow_ref(s["workflow"])[0]])
                for s in found.spec["steps"]
                if s.get("workflow")
            ]


def _has_template(value: object) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_has_template(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_template(item) for item in value)
    return False


def _check_step_references(steps: list[dict], at: Callable[[str, str], str]) -> None:
    """A template may read `steps.<id>` only of a step this one needs, directly or
    not: any other step's output is not there yet when it runs."""
    needs = {step["id"]: step["needs"] for step in steps}
    for step in steps:
        upstream, frontier = set(), list(step["needs"])
        while frontier:
            if (need := frontier.pop()) not in upstream:
                upstream.add(need)
                frontier += needs[need]
        for field in TEMPLATE_FIELDS:
            for read in sorted(template_steps(step.get(field), condition=field == "when")):
                if read not in needs:
                    why = f"no step {read!r}"
                elif read not in upstream:
                    why = f"{read!r} is not among the steps this one needs"
                else:
                    continue
                raise SpecError(f"{at(step['id'], field)}{field}: steps.{read}: {why}")


def _check_acyclic(steps: list[dict], at: Callable[[str, str], str]) -> None:
    """Kahn's algorithm; on a cycle, name the steps in it."""
    remaining = {step["id"]: set(step["needs"]) for step in steps}
    while remaining:
        ready = [sid for sid, needs in remaining.items() if not needs]
        if not ready:
            # Every step left needs another one left: walk the needs until one repeats.
            path, node = [], min(remaining)
            while node not in path:
                path.append(node)
                node = min(remaining[node])
            cycle = path[path.index(node) :]
            cycle_text = " -> ".join([*cycle, node])
            raise SpecError(f"{at(cycle[0], 'needs')}needs: {cycle_text} is a cycle")
        for sid in ready:
            del remaining[sid]
        for needs in remaining.values():
            needs.difference_update(ready)
