"""`shell.run`: run one of the argv templates the operator configured, never a shell.

HIVE_SHELL_COMMANDS maps a name to an argv list, or to a mapping with `argv`
and optionally `params` (a JSON Schema for the placeholders), `timeout` and
`cwd`:

    {"pytest": ["pytest", "-q", "{path}"],
     "deploy": {"argv": ["./deploy.sh", "{env}"], "timeout": 600,
                "params": {"properties": {"env": {"enum": ["staging", "prod"]}}}}}

Each `{name}` in the argv is replaced by the string argument of that name; the
result is passed to the program as one argument, whatever it contains.
"""

import re
import subprocess
from dataclasses import dataclass

from django.conf import settings
from jsonschema import Draft202012Validator

from agents.skills.registry import (
    SkillContext,
    SkillError,
    SkillInputError,
    schema_problem,
    skill,
)
from hive_core.jsondata import SchemaValidator

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Without a schema of the operator's, an argument is a bounded string that cannot
# be taken for an option (no leading '-') and carries no NUL.
DEFAULT_ARG_SCHEMA = {"type": "string", "maxLength": 4096, "pattern": "^[^-\\x00][^\\x00]*$|^$"}

PARAMS = {
    "type": "object",
    "properties": {
        "command": {"type": "string", "minLength": 1, "maxLength": 100},
        "args": {"type": "object", "additionalProperties": {"type": "string"}},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
        "check": {"type": "boolean"},
    },
    "required": ["command"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class ShellCommand:
    name: str
    argv: tuple[str, ...]
    placeholders: frozenset[str]
    validator: Draft202012Validator
    timeout: float
    cwd: str | None


def shell_command(name: str) -> ShellCommand:
    """The configured command `name`, with a validator for its placeholders."""
    configured = settings.HIVE_SHELL_COMMANDS
    if name not in configured:
        known = ", ".join(sorted(configured)) or "none"
        raise SkillInputError(
            f"shell.run: inputs.command: {name!r} is not configured in HIVE_SHELL_COMMANDS "
            f"(configured: {known})"
        )
    entry = configured[name]
    entry = {"argv": entry} if isinstance(entry, list) else entry
    argv = tuple(entry["argv"])
    placeholders = frozenset(p for arg in argv for p in _PLACEHOLDER.findall(arg))
    schema = {
        "type": "object",
        "properties": {p: DEFAULT_ARG_SCHEMA for p in placeholders},
        "required": sorted(placeholders),
        "additionalProperties": False,
    }
    schema["properties"].update(entry.get("params", {}).get("properties", {}))
    return ShellCommand(
        name=name,
        argv=argv,
        placeholders=placeholders,
        validator=SchemaValidator(schema),
        timeout=float(entry.get("timeout", settings.HIVE_SHELL_TIMEOUT)),
        cwd=entry.get("cwd"),
    )


@skill("shell.run", params=PARAMS)
def shell_run(
    ctx: SkillContext,
    *,
    command: str,
    args: dict | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> dict:
    """Run a configured command; return its exit code, stdout and stderr."""
    spec = shell_command(command)
    args = args or {}
    problem = schema_problem(spec.validator, args, at="inputs.args")
    if problem:
        raise SkillInputError(f"shell.run: {problem}")
    argv = [_PLACEHOLDER.sub(lambda m: args[m.group(1)], arg) for arg in spec.argv]
    limit = min(timeout or spec.timeout, spec.timeout)  # the operator's timeout is a ceiling
    try:
        done = subprocess.run(
            argv, cwd=spec.cwd, capture_output=True, timeout=limit, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise SkillError(f"shell.run: {command!r} timed out after {limit:g} s") from None
    except OSError as exc:
        raise SkillError(f"shell.run: {command!r} could not start: {exc.strerror}") from None
    result = {
        "exit_code": done.returncode,
        "stdout": _tail(done.stdout),
        "stderr": _tail(done.stderr),
    }
    if check and done.returncode != 0:
        last = result["stderr"].strip().splitlines()[-1:] or [""]
        raise SkillError(f"shell.run: {command!r} exited with {done.returncode}: {last[0]}")
    return result


def _tail(output: bytes) -> str:
    """Keep the end of long output: that is where the error usually is."""
    limit = settings.HIVE_SHELL_MAX_OUTPUT
    text = output.decode("utf-8", errors="replace")
    return (
        text
        if len(text) <= limit
        else f"[... {len(text) - limit} characters cut]\n" + text[-limit:]
    )
