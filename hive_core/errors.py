"""One error type for every refusal, so each door (the API, the CLI, the console, the
built-in commands, the admin) translates it once and a refusal reads the same
through all of them.

Services raise a kind below; they never return error strings. `code` is what the
API's body says (`{"error": {"code", "message", "fields"}}`) and defaults to the
kind's; `fields` names each bad field with its messages, as DRF's validation does.
"""


class HiveError(Exception):
    """A request Hive refused; nothing changed. The kind sets the HTTP status."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, fields: dict | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.fields = fields or {}


class Invalid(HiveError):
    """The request itself is wrong (a bad parameter, an unknown skill)."""


class Denied(HiveError):
    """The caller may not do this."""

    status = 403
    code = "permission_denied"


class NotFound(HiveError):
    status = 404
    code = "not_found"


class Conflict(HiveError):
    """Not in the present state of things (a finished run cannot be cancelled); what
    stands in the way may end."""

    status = 409
    code = "conflict"


class Unavailable(HiveError):
    """Something Hive needs is not there now (no live agent, Redis down)."""

    status = 503
    code = "unavailable"
