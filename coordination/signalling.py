"""Signals from agents: the `hive.signal` message kind (agents/handlers.py), handled in
every agent's inbox, and the `signal.send` skill, so an agent, or a person through an
agent's inbox, or a step, can end a step waiting for a signal. Each acts as a user
(the person who sent the message; the user who started the step's run) with the run
permission the API asks, on a run that user sees; an agent's own message acts as Hive.
"""

from django.contrib.auth import get_user_model

from agents.handlers import Envelope, HandlerContext, HandlerError, handler
from agents.skills.registry import SkillContext, SkillError, skill
from coordination.errors import RunError
from coordination.models import Run
from coordination.selectors import run_visible_list
from coordination.services import RUN_ACTION_PERMISSIONS, signal_send
from coordination.spec import SIGNAL_NAME

# A person's messages name them so (agents.mailbox.user_sender).
_USER_PREFIX = "user:"


class _Refused(Exception):
    """The signal was not sent: why, for the door to say in its own way."""


def _signal_as(user, *, run_id: object, name: object, payload: object, source: str) -> dict:
    """Send signal `name` to run `run_id` as `user` (None: Hive itself)."""
    if not isinstance(run_id, int) or isinstance(run_id, bool) or not isinstance(name, str):
        raise _Refused("needs run (a run's id) and name (the signal's)")
    runs = Run.objects.all()
    if user is not None:
        if not (user.is_active and user.has_perm(RUN_ACTION_PERMISSIONS["signal"])):
            raise _Refused(f"permission denied: {user.username} may not signal runs")
        runs = run_visible_list(user=user)
    run = runs.filter(pk=run_id).first()
    if run is None:
        raise _Refused(f"run: no run {run_id}")
    try:
        sent = signal_send(run=run, name=name, payload=payload, user=user, source=source)
    except RunError as exc:
        raise _Refused(str(exc)) from None
    return {"signal": sent.pk, "step": sent.step.key if sent.step else None}


@handler("hive.signal")
def signal_message(ctx: HandlerContext, message: Envelope) -> dict:
    """Send the signal `{"run", "name", "payload"}` to a run, as the person who sent
    the message (or as Hive, for an agent's)."""
    body = message.payload if isinstance(message.payload, dict) else {}
    user = None
    if message.sender.startswith(_USER_PREFIX):
        username = message.sender.removeprefix(_USER_PREFIX)
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise HandlerError(f"permission denied: no user {username}", retryable=False)
    try:
        return _signal_as(user, run_id=body.get("run"), name=body.get("name"),
                          payload=body.get("payload"), source="message")  # fmt: skip
    except _Refused as exc:
        raise HandlerError(f"payload: {exc}", retryable=False) from None


@skill(
    "signal.send",
    params={
        "type": "object",
        "properties": {"run": {"type": "integer", "minimum": 1}, "name": SIGNAL_NAME,
                       "payload": {}},
        "required": ["run", "name"],
        "additionalProperties": False,
    },
)  # fmt: skip
def signal_skill(ctx: SkillContext, *, run: int, name: str, payload: object = None) -> dict:
    """Send a signal to a run (ending a step waiting for it), as the user who started
    this step's run."""
    own = ctx.extra.get("run")
    if own is None:
        raise SkillError("signal.send runs only as a step of a run", retryable=False)
    user = Run.objects.select_related("created_by").get(pk=own).created_by
    try:
        return _signal_as(user, run_id=run, name=name, payload=payload, source="skill")
    except _Refused as exc:
        raise SkillError(str(exc), retryable=False) from None
