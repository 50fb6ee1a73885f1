"""The commands app's refusals."""

from commands.models import Invocation


class CommandFailure(Exception):
    """The command was not carried out. `code` is invalid, denied or failed; the
    Invocation recording the attempt is `invocation`; `pointed` shows the token."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        invocation: Invocation,
        pointed: str = "",
        param: str = "",
        conflict: bool = False,
    ):
        super().__init__(message)
        self.code, self.invocation, self.param = code, invocation, param
        self.pointed = pointed or message
        # Refused for the state of things, not the request: what stands in the way may
        # end (the API's 409).
        self.conflict = conflict


class ScheduleError(Exception):
    """The schedule cannot be made or changed; the message names the field."""


class ScheduleDenied(ScheduleError):
    """The user lacks the permission the action on schedules needs (the API's 403)."""


class BuiltinError(Exception):
    """The built-in could not do what was asked; the message says why. `denied`: the
    user may not do it (a 403 through the API, a `denied` invocation)."""

    def __init__(self, message: str, *, denied: bool = False):
        super().__init__(message)
        self.denied = denied


class BuiltinDenied(BuiltinError):
    """The user lacks the permission this action of the built-in needs (a `denied`
    invocation, as the API's 403)."""
