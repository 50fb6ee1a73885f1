"""The dashboard's command console: a text box for any command, and a form per
command generated from its params schema. Both go through `command_execute` with
source `dashboard`, so they are checked and audited like the API."""

import math

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render

from commands.models import Invocation
from commands.parser import hint_names
from commands.selectors import command_list, invocation_list
from commands.services import CommandFailure, command_execute
from commands.throttles import command_throttle_wait


def _execute(request, text: str, *, dry_run: bool = False) -> dict:
    wait = command_throttle_wait(request=request)
    if wait is not None:
        # The API's answer (429, nothing created, not audited), in the page's words.
        return {"error": f"too many commands (at most {settings.HIVE_COMMAND_THROTTLE} "
                         f"per user); try again in {math.ceil(wait)} s",
                "code": "throttled", "status": 429}  # fmt: skip
    try:
        invocation = command_execute(
            text=text, user=request.user, source=Invocation.Source.DASHBOARD, dry_run=dry_run
        )
    except CommandFailure as exc:
        return {"error": exc.pointed, "code": exc.code}
    return {"invocation": invocation}


@login_required
def console(request):
    result, text = {}, ""
    if request.method == "POST":
        text = request.POST.get("text", "")
        result = _execute(request, text, dry_run=bool(request.POST.get("dry_run")))
    return render(request, "commands/console.html", {
        "commands": command_list(), "text": text, "result": result,
        "recent": invocation_list(user=request.user)[:20],
    }, status=result.get("status", 200))  # fmt: skip


@login_required
def command_form(request, name: str):
    command = command_list().filter(name=name).first()
    if command is None:
        raise Http404(f"no command /{name}")
    props = command.params.get("properties", {})
    # The hint's order first, then by name: jsonb (PostgreSQL) does not keep key order.
    hinted = [n for n in hint_names(command.argument_hint) if n in props]
    order = hinted + sorted(n for n in props if n not in hinted)
    required = command.params.get("required", [])
    fields = [_field(key, props[key], key in required) for key in order]
    result, text = {}, ""
    if request.method == "POST":
        for field in fields:
            field["value"] = request.POST.get(field["name"], "")
        text = form_text(command.name, fields)
        result = _execute(request, text, dry_run=bool(request.POST.get("dry_run")))
    context = {"command": command, "fields": fields, "text": text, "result": result}
    return render(request, "commands/command.html", context, status=result.get("status", 200))


def _field(name: str, prop: dict, required: bool) -> dict:
    kind = prop.get("type", "string")
    kind = kind if isinstance(kind, str) else next((k for k in kind if k != "null"), "string")
    widget = ("select" if "enum" in prop else "checkbox" if kind == "boolean"
              else "number" if kind in ("integer", "number") else "text")  # fmt: skip
    default = prop.get("default", "")
    if isinstance(default, list):
        default = ",".join(str(v) for v in default)
    return {"name": name, "widget": widget, "choices": prop.get("enum", []), "required": required,
            "step": "1" if kind == "integer" else "any", "value": default,
            "help": prop.get("description", ""), "array": kind == "array"}  # fmt: skip


def form_text(name: str, fields: list[dict]) -> str:
    """The command text a filled form stands for: `/name key="value" ...`; values are
    quoted so whatever was typed stays one value."""
    words = [f"/{name}"]
    for field in fields:
        value = field["value"]
        if field["widget"] == "checkbox":
            words.append(f"--{field['name']}" if value else f"--no-{field['name']}")
        elif value != "":
            escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
            words.append(f'{field["name"]}="{escaped}"')
    return " ".join(words)
