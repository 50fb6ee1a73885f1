"""The commands app's refusals, each a kind of hive_core's HiveError: the API's
handler gives each its status and the one error body, and the other doors (the
console, the CLI, the admin, the built-ins) catch HiveError once each."""

from commands.models import Invocation
from hive_core.errors import Conflict, Denied, HiveError, Invalid


class CommandFailure(HiveError):
    """The command was not carried out. `code` is the recorded outcome (invalid,
    denied or failed) and the API's code; the Invocation recording the attempt is
    `invocation`; `pointed` shows the token, and `fields` names the argument
    (`param`) and points at the token in `text`. A `failed` one is a 400, as the API
    always answered; `command_refusal` picks the kind for the code."""

    def __init__(
        self, message: str, *, code: str, invocation: Invocation, pointed: str = "", param: str = ""
    ):
        self.pointed = pointed or message
        fields = {"text": [self.pointed]}
        if param:
            fields = {param: [message.removeprefix(f"{param}: ")], **fields}
        super().__init__(message, code=code, fields=fields)
        self.invocation, self.param = invocation, param


class CommandInvalid(CommandFailure, Invalid):
    """The text does not parse or bind, or names no enabled command (400)."""


class CommandDenied(CommandFailure, Denied):
    """The user lacks the permission (403)."""


class CommandConflict(CommandFailure, Conflict):
    """Refused for the state of things, not the request: what stands in the way may
    end (409)."""


def command_refusal(message: str, *, code: str, conflict: bool = False, **kwargs) -> CommandFailure:
    """The CommandFailure of the kind `code` (an Invocation outcome) calls for."""
    kinds = {Invocation.Outcome.INVALID: CommandInvalid, Invocation.Outcome.DENIED: CommandDenied}
    kind = CommandConflict if conflict else kinds.get(code, CommandFailure)
    return kind(message, code=code, **kwargs)


class ScheduleError(Invalid):
    """The schedule cannot be made or changed; the message starts with the field it
    names (`cron: ...`), and so do the API's `fields`."""

    FIELDS = ("text", "cron", "name", "every")

    def __init__(self, message: str):
        field, _, problem = message.partition(": ")
        super().__init__(message, fields={field: [problem]} if field in self.FIELDS else {})


class ScheduleDenied(Denied):
    """The user lacks the permission the action on schedules needs (the API's 403)."""


class TriggerUnsigned(HiveError):
    """A delivery to a trigger without a valid signature of its body (401)."""

    status = 401
    code = "bad_signature"


class TriggerBodyTooLarge(HiveError):
    status = 413
    code = "too_large"


class TriggerThrottled(HiveError):
    """The trigger's user has executed their commands' rate (HIVE_COMMAND_THROTTLE)."""

    status = 429
    code = "throttled"
