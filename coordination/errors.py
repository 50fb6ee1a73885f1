"""What coordination's services refuse, as hive_core's kinds: each door (the API's
handler, the built-ins, the CLI, the admin) maps a HiveError once. Nothing changed
when one is raised."""

from hive_core.errors import Conflict, Denied, HiveError, Invalid


class RunError(HiveError):
    """The request cannot be carried out on this run or step. Every refusal of the
    engine's services is one; its kind (below) sets the API's status. `field` names
    what was wrong, for the API's error body and the CLI (default: params)."""

    def __init__(self, message: str, *, field: str = "", fields: dict | None = None):
        super().__init__(message, fields=fields)
        self.field = field


class RunConflict(RunError, Conflict):
    """Not in the run's or step's present state (a finished run cannot be cancelled)."""


class RunInvalid(RunError, Invalid):
    """The run may not start with these params (or of this workflow). The API's 400
    names the field, as DRF's validation of the request body does: the message is
    `<field>: <problem>`, params unless `field` says otherwise; str() is the problem as
    the CLI prints it."""

    def __init__(self, message: str, *, field: str = ""):
        shown = field or "params"
        problem = message.removeprefix(f"{field}: ") if field else message
        super().__init__(message, field=field, fields={shown: [problem]})
        self.message = f"{shown}: {problem}"


class RunDenied(RunError, Denied):
    """The user may not do this to this run (a check of RUN_ACTION_CHECKS refused it)."""


class RunForbidden(RunError, Denied):
    """The user may take this action on runs, but not on this one (approving a run they
    started while HIVE_ALLOW_SELF_APPROVAL is off)."""

    code = "self_approval"
