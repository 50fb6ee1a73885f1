"""The built-in commands' registry. `commands.builtins` fills it when the app is ready
(`CommandsConfig.ready`); loading syncs it into the Command table and executing runs
a built-in from it, so neither imports the built-ins, which use the services."""

import json
from collections.abc import Callable
from dataclasses import dataclass

from django.core.serializers.json import DjangoJSONEncoder

from commands.models import ANY_OF, EXECUTE_PERMISSION


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    argument_hint: str
    params: dict
    permission: str
    handler: Callable[..., dict]

    @property
    def body(self) -> str:
        return (self.handler.__doc__ or "").strip()


BUILTINS: dict[str, Builtin] = {}


def builtin(
    name: str,
    *,
    hint: str = "",
    params: dict | None = None,
    required=(),
    permission: str | tuple[str, ...] = EXECUTE_PERMISSION,
    rules: dict | None = None,
):
    """Register `handler(*, user, **args) -> {"message": ..., ...}` as `/hive:<name>`;
    `rules` are JSON Schema keywords over all the arguments (`if`/`then`). A tuple of
    permissions lets a user holding any one of them execute it: the handler then checks
    the one its arguments call for (`/hive:resume` of a run or of an agent)."""
    if not isinstance(permission, str):
        permission = ANY_OF.join(permission)

    def register(handler):
        schema = {
            "type": "object",
            "properties": params or {},
            "required": list(required),
            "additionalProperties": False,
            **(rules or {}),
        }
        description = (handler.__doc__ or "").strip().splitlines()[0]
        BUILTINS[f"hive:{name}"] = Builtin(
            f"hive:{name}", description, hint, schema, permission, handler
        )
        return handler

    return register


def builtin_run(*, name: str, args: dict, user) -> dict:
    # As JSON data: the output is the invocation's record, and a handler's rows may
    # hold datetimes (a schedule's last run).
    output = BUILTINS[name].handler(user=user, **args)
    return json.loads(json.dumps(output, cls=DjangoJSONEncoder))
