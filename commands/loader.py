"""Command definition files: markdown with YAML frontmatter, one command a file.

    ---
    description: Release a version to an environment
    argument-hint: <version> [env]
    params:
      version: {type: string, pattern: "^[0-9]+(\\.[0-9]+)*$"}
      env: {enum: [staging, prod], default: staging}
    workflow:                     # inline steps, or `name@version` of a stored workflow
      steps:
        - {id: build, skill: sleep, role: builder, with: {seconds: 1}}
    approval: params.env == 'prod'
    overlap: {policy: queue, key: "release:{{ params.env }}"}
    priority: 5                   # 0-9, over its workflow's; `timeout`: a run's seconds
    ---
    Releases $ARGUMENTS. This body is the help text, and `{{ prompt }}` in steps.

A file is checked whole before anything is saved; errors name the file, the line
and the field (`deploy.md:9: step 'build': skill: unknown skill 'nope'`), and a
broken file leaves the version already loaded active.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Permission
from jinja2.sandbox import SandboxedEnvironment
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from coordination.models import Workflow
from coordination.services import COMMAND_WORKFLOW_PREFIX, INTERNAL_PARAM_PREFIX
from coordination.spec import PRIORITY, RUN_TIMEOUT, STEP_DEFAULTS, spec_validate
from coordination.templates import TemplateError, template_check
from hive_core.jsondata import SchemaValidator
from hive_core.yamlfile import DefinitionError, LineDict, definition_text_read, yaml_parse

SHIPPED_DIR = Path(__file__).resolve().parent / "definitions"
NAME_PATTERN = "^[a-z0-9][a-z0-9_-]*(:[a-z0-9][a-z0-9_-]*)*$"
OVERLAP_POLICIES = ["allow", "skip", "queue", "cancel-running"]
# Run params carry the invocation's context under this key; `{{ prompt }}` in a
# step reads it (see _rewrite_prompt). The engine reserves every `_` name for Hive.
CONTEXT_KEY = f"{INTERNAL_PARAM_PREFIX}command"
RESERVED_PARAMS = {CONTEXT_KEY, "dry_run", "dry-run"}
# API paths under /api/v1/commands/ that a command name would shadow.
RESERVED_NAMES = {"execute", "invocations", "schedules"}
# A workflow's own flow control (coordination.spec), which an inline workflow may set
# and a command running a stored workflow keeps.
WORKFLOW_FLOW = ("priority", "timeout", "concurrency")
# Limits every argument gets unless its schema sets its own: a command is typed by
# people and scripts, and its arguments end up in run params, events and logs.
DEFAULT_MAX_LENGTH = 1000
DEFAULT_MAX_ITEMS = 100
# Only for lexing templates; its syntax is the engine's (Jinja's defaults).
_LEXER = SandboxedEnvironment()

FRONTMATTER_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 96},
        "description": {"type": "string", "maxLength": 1000},
        "argument-hint": {"type": "string", "maxLength": 500},
        "params": {"type": "object"},
        "workflow": {
            "oneOf": [
                {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.:-]*(@[0-9]+)?$"},
                {"type": "object"},
                {"type": "array"},
            ]
        },
        "permission": {"type": "string", "pattern": "^[a-z_][a-z0-9_]*\\.[a-z_][a-z0-9_]*$"},
        "approval": {"type": ["string", "boolean"]},
        "overlap": {
            "oneOf": [
                {"enum": OVERLAP_POLICIES},
                {
                    "type": "object",
                    "properties": {
                        "policy": {"enum": OVERLAP_POLICIES},
                        "key": {"type": "string", "minLength": 1, "maxLength": 400},
                    },
                    "required": ["policy"],
                    "additionalProperties": False,
                },
            ]
        },
        "enabled": {"type": "boolean"},
        # Its runs' priority and deadline (seconds), over its workflow's `priority`
        # and `timeout`.
        "priority": PRIORITY,
        "timeout": RUN_TIMEOUT,
    },
    "required": ["workflow"],
    "additionalProperties": False,
}
_FRONTMATTER = SchemaValidator(FRONTMATTER_SCHEMA)


@dataclass(frozen=True)
class Definition:
    """A validated command, ready to save: nothing here has touched the database yet."""

    name: str
    description: str
    argument_hint: str
    params: dict
    definition: dict  # the frontmatter's `workflow`, as written
    workflow_spec: dict  # the spec runs of the command start (see command_spec)
    permission: str
    approval: str
    overlap: str
    overlap_key: str
    priority: int | None
    timeout: float | None
    enabled: bool
    body: str
    source: str
    digest: str


def definition_read(path: Path, *, name: str) -> Definition:
    """Read and validate one definition file; `name` is the one its path gives."""
    source = _display(path)
    text = definition_text_read(path, source=source)
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise DefinitionError(
            f"{source}:1: no frontmatter: the file must start with a line '---', then YAML "
            "(at least `workflow:`), then '---'"
        )
    end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), None)
    if end is None:
        raise DefinitionError(f"{source}:1: the frontmatter opened here has no closing '---'")
    front = yaml_parse("".join(lines[1:end]), source=source, first_line=2)
    if front is None:
        front = LineDict()
    body = "".join(lines[end + 1 :]).strip()
    return definition_build(front, body=body, name=name, source=source, path=str(path.resolve()))


def definition_build(front: object, *, body: str, name: str, source: str, path: str) -> Definition:
    """Validate a command's frontmatter and body; `source` names it in errors."""
    _check_shape(front, source)
    name = front.get("name", name)
    if name in RESERVED_NAMES:
        raise DefinitionError(f"{_at(source, front, 'name')}name: {name!r} is reserved for the API")
    if name.split(":")[0] == "hive":
        raise DefinitionError(
            f"{_at(source, front, 'name')}name: the hive: namespace is for built-ins"
        )
    params = _params_schema(front.get("params"), source, front)
    hint = front.get("argument-hint", "")
    _check_hint(hint, params, source, front)
    permission = front.get("permission", "commands.execute_command")
    _check_permission(permission, source, front)
    approval = front.get("approval", "")
    approval = "true" if approval is True else "" if approval is False else approval
    overlap = front.get("overlap", "allow")
    policy, key = (
        (overlap, "") if isinstance(overlap, str) else (overlap["policy"], overlap.get("key", ""))
    )
    for field, template, condition in (("approval", approval, True), ("overlap.key", key, False)):
        try:
            template_check(template, condition=condition)
        except TemplateError as exc:
            at = _at(source, front, field.split(".")[0])
            raise DefinitionError(f"{at}{field}: template error: {exc}") from None
    written = front["workflow"]
    steps, flow, origin = _workflow_steps(written, params, source, front)
    spec = command_spec(
        name=name,
        params=params,
        steps=steps,
        approval=approval,
        description=front.get("description", "") or origin,
        source=source,
        flow=flow,
    )
    fields = {
        "name": name,
        "description": front.get("description", ""),
        "argument_hint": hint,
        "params": params,
        "definition": {"workflow": _plain(written)},
        "workflow_spec": spec,
        "permission": permission,
        "approval": approval,
        "overlap": policy,
        "overlap_key": key,
        "priority": front.get("priority"),
        "timeout": front.get("timeout"),
        "enabled": front.get("enabled", True),
        "body": body,
    }
    # Flow control left out when not given: the digest of a definition without it stays
    # what it was (no new version of every command on upgrade).
    digested = {
        k: v
        for k, v in fields.items()
        if k != "enabled" and not (k in ("priority", "timeout") and v is None)
    }
    digest = hashlib.sha256(json.dumps(digested, sort_keys=True).encode()).hexdigest()
    return Definition(**fields, source=path, digest=digest)


def command_spec(
    *,
    name: str,
    params: dict,
    steps: list[dict],
    approval: str,
    description: str,
    source: str,
    flow: dict | None = None,
) -> dict:
    """The workflow a command's runs start: its steps, with `{{ prompt }}` wired to the
    invocation, behind an approval gate when the command has an approval rule, under
    the workflow's own flow control (`flow`: WORKFLOW_FLOW's fields).

    The gate is a `noop` step with `approval: true` and `when:` the rule, which every
    step that needs nothing else needs: when the rule holds the run waits for an
    approver before any work starts; otherwise the gate is skipped, and a skipped
    step counts as done for the steps after it.
    """
    steps = [
        {
            **step,
            **{
                f: _rewrite_prompt(step[f], condition=f == "when")
                for f in ("with", "when", "foreach")
                if f in step
            },
        }
        for step in steps
    ]
    if approval:
        ids = {step["id"] for step in steps}
        gate = next(
            g for g in ("approval", *(f"approval-{i}" for i in range(1, 100))) if g not in ids
        )
        rule = _rewrite_prompt(approval, condition=True)
        steps = [
            {
                "id": gate,
                "skill": "noop",
                "approval": True,
                "with": {"rule": approval},
                **({"when": rule} if approval != "true" else {}),
            },
            *({**step, "needs": step.get("needs") or [gate]} for step in steps),
        ]
    run_params = json.loads(json.dumps(params))
    run_params.setdefault("properties", {})[CONTEXT_KEY] = {"type": "object"}
    return spec_validate(
        {
            "name": f"{COMMAND_WORKFLOW_PREFIX}{name}",
            "description": description,
            "params": run_params,
            "steps": steps,
            **(flow or {}),
        },
        source=source,
    )


def _rewrite_prompt(value: object, *, condition: bool = False) -> object:
    """`prompt` in a template is the invocation's prompt, which a run carries in its
    params: rewrite the bare name to `params._command.prompt` with Jinja's own lexer,
    so only the name is touched, never a string or an attribute that says `prompt`."""
    if isinstance(value, dict):
        return {k: _rewrite_prompt(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite_prompt(v) for v in value]
    if not isinstance(value, str) or "prompt" not in value:
        return value
    if condition and "{{" not in value:
        value = "{{ " + value + " }}"
    out, previous = [], ""
    for _, kind, text in _LEXER.lex(value):
        if kind == "name" and text == "prompt" and previous != ".":
            text = f"params.{CONTEXT_KEY}.prompt"
        if kind != "whitespace":
            previous = text
        out.append(text)
    return "".join(out)


def _workflow_steps(
    written, params: dict, source: str, front: dict
) -> tuple[list[dict], dict, str]:
    """The steps a command runs, as written (inline, or those of a stored workflow), and
    the workflow's flow control (WORKFLOW_FLOW)."""
    if isinstance(written, str):
        workflow_name, _, version = written.partition("@")
        versions = Workflow.objects.filter(name=workflow_name).order_by("-version")
        workflow = versions.filter(version=int(version)).first() if version else versions.first()
        if workflow is None:
            known = ", ".join(str(v) for v in versions.values_list("version", flat=True))
            raise DefinitionError(
                f"{_at(source, front, 'workflow')}workflow: no workflow {written!r}"
                + (f" (versions: {known})" if known else "; load it first with hive workflow load")
            )
        steps = [_unnormalized(step) for step in workflow.spec["steps"]]
        return steps, _flow_of(workflow.spec), f"runs {workflow}"
    if not isinstance(written, dict):
        written = LineDict(steps=written)
    extra = sorted(set(written) - {"steps", "description", *WORKFLOW_FLOW})
    if extra:
        raise DefinitionError(
            f"{_at(source, written, extra[0])}workflow: unknown field {extra[0]!r} "
            "(an inline workflow has steps, a description, priority, timeout and "
            "concurrency; its params are the command's)"
        )
    # The user's workflow is checked on its own first, so errors name its lines.
    checked = LineDict({**written, "params": params})
    checked.line = getattr(written, "line", 0)  # an admin's edit is plain JSON
    checked.key_lines = getattr(written, "key_lines", None)
    spec_validate(checked, source=source)
    return [dict(step) for step in written["steps"]], _flow_of(written), ""


def _flow_of(workflow: dict) -> dict:
    return _plain({field: workflow[field] for field in WORKFLOW_FLOW if field in workflow})


def _unnormalized(step: dict) -> dict:
    """A stored, normalized step without its defaults, as a definition would say it."""
    return {k: v for k, v in step.items() if k in ("id", "skill") or v != STEP_DEFAULTS.get(k)}


def _params_schema(params, source: str, front: dict) -> dict:
    """The arguments' JSON Schema: a full schema, or just its properties; closed
    (`additionalProperties: false`) and length-limited unless it says otherwise."""
    params = params or {}
    if "properties" in params or params.get("type") == "object":
        schema = json.loads(json.dumps(params))
    else:
        schema = {"properties": json.loads(json.dumps(params))}
    schema.setdefault("type", "object")
    schema.setdefault("additionalProperties", False)
    at = _at(source, front.get("params") or front)
    for name, prop in schema.get("properties", {}).items():
        if name in RESERVED_PARAMS or name.startswith(INTERNAL_PARAM_PREFIX):
            raise DefinitionError(f"{at}params: {name!r} is reserved")
        if isinstance(prop, dict):
            _limit(prop)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise DefinitionError(
            f"{at}params: invalid JSON Schema{' at ' + path if path else ''}: {exc.message}"
        ) from None
    return schema


def _limit(prop: dict) -> None:
    kinds = prop.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if "string" in kinds and "enum" not in prop:
        prop.setdefault("maxLength", DEFAULT_MAX_LENGTH)
    if "array" in kinds:
        prop.setdefault("maxItems", DEFAULT_MAX_ITEMS)
        if isinstance(prop.get("items"), dict):
            _limit(prop["items"])


def _check_hint(hint: str, params: dict, source: str, front: dict) -> None:
    from commands.parser import hint_names

    props = params.get("properties", {})
    for name in hint_names(hint):
        if name not in props and name.replace("-", "_") not in props:
            known = ", ".join(props) or "none"
            raise DefinitionError(
                f"{_at(source, front, 'argument-hint')}argument-hint: {name!r} is not a "
                f"parameter (params: {known})"
            )


def _check_permission(permission: str, source: str, front: dict) -> None:
    app_label, codename = permission.split(".", 1)
    if not Permission.objects.filter(content_type__app_label=app_label, codename=codename).exists():
        raise DefinitionError(
            f"{_at(source, front, 'permission')}permission: no permission {permission!r} exists "
            "(the default is commands.execute_command)"
        )


def _check_shape(front: object, source: str) -> None:
    if not isinstance(front, dict):
        raise DefinitionError(f"{source}:2: the frontmatter must be a mapping of fields")
    errors = sorted(_FRONTMATTER.iter_errors(front), key=lambda e: [str(p) for p in e.path])
    if not errors:
        return
    error = errors[0]
    path = list(error.absolute_path)
    # The deepest mapping on the path knows the line of its key on the path.
    node, key, walked = front, "", front
    for part in path:
        if isinstance(walked, LineDict):
            node, key = walked, str(part)
        walked = walked[part] if isinstance(walked, dict | list) else None
    field = ".".join(str(p) for p in path)
    if error.validator == "additionalProperties" and not path:
        unknown = sorted(set(front) - set(FRONTMATTER_SCHEMA["properties"]))[0]
        known = ", ".join(FRONTMATTER_SCHEMA["properties"])
        raise DefinitionError(
            f"{_at(source, front, unknown)}unknown field {unknown!r} (fields: {known})"
        )
    message = error.message
    if error.validator == "oneOf" and field == "workflow":
        message = "give inline steps ({steps: [...]}) or a stored workflow as name@version"
    elif error.validator == "oneOf" and field == "overlap":
        message = f"one of {', '.join(OVERLAP_POLICIES)}, or {{policy: ..., key: '...'}}"
    raise DefinitionError(f"{_at(source, node, key)}{field + ': ' if field else ''}{message}")


def _at(source: str, node: object, key: str = "") -> str:
    """`file:line: `, on the line of `node`'s `key` when the file gives it."""
    if not (isinstance(node, LineDict) and node.line):
        return f"{source}: "
    return f"{source}:{(node.key_lines or {}).get(key, node.line)}: "


def _plain(value: object) -> object:
    return json.loads(json.dumps(value))


def _display(path: Path) -> str:
    """A path as the user would write it: relative to the project when inside it."""
    try:
        return str(path.resolve().relative_to(settings.BASE_DIR))
    except ValueError:
        return str(path)


# --- finding files ------------------------------------------------------------------


def command_roots() -> list[Path]:
    """The folders definitions are loaded from: the shipped ones and HIVE_COMMAND_DIRS."""
    return [SHIPPED_DIR, *settings.HIVE_COMMAND_DIRS]


def definition_files(root: Path) -> list[tuple[Path, str]]:
    """Every definition under `root` with the name its path gives (`ops/deploy.md` is
    `ops:deploy`); README.md and files starting with `_` are not commands."""
    found = []
    for path in sorted(root.rglob("*.md")):
        relative = path.relative_to(root)
        if path.name == "README.md" or any(part.startswith(("_", ".")) for part in relative.parts):
            continue
        found.append((path, ":".join(relative.with_suffix("").parts).lower()))
    return found


def name_of(path: Path) -> str:
    """The name a file's path gives: relative to the command folder it is in, if any."""
    resolved = path.resolve()
    for root in command_roots():
        try:
            relative = resolved.relative_to(root.resolve())
        except ValueError:
            continue
        return ":".join(relative.with_suffix("").parts).lower()
    return path.stem.lower()
