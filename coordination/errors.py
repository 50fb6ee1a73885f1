"""What coordination's services refuse; nothing changed when one is raised."""


class RunError(Exception):
    """The request cannot be carried out on this run or step; nothing changed.
    `field` names what was wrong, for the API's error body (default: params)."""

    def __init__(self, message: str, *, field: str = ""):
        super().__init__(message)
        self.field = field


class RunDenied(RunError):
    """The user may not do this to this run (the API's 403); nothing changed."""


class RunForbidden(RunError):
    """The user may take this action on runs, but not on this one; nothing changed."""
