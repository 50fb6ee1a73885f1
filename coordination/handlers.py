"""The message kinds coordination handles in every agent's inbox (agents/handlers.py):
`hive.signal` sends a signal to a run, so an agent, or a person through an agent's
inbox, can end a step waiting for it."""

from django.contrib.auth import get_user_model

from agents.handlers import Envelope, HandlerContext, HandlerError, handler
from coordination.errors import RunError
from coordination.models import Run
from coordination.selectors import run_visible_list
from coordination.services import RUN_ACTION_PERMISSIONS, signal_send

# A person's messages name them so (agents.mailbox.user_sender).
_USER_PREFIX = "user:"


@handler("hive.signal")
def signal(ctx: HandlerContext, message: Envelope) -> dict:
    """Send the signal `{"run", "name", "payload"}` to a run. A message a person sent
    acts as them (the run permission, a run they see); an agent's, as Hive."""
    body = message.payload if isinstance(message.payload, dict) else {}
    run_id, name = body.get("run"), body.get("name")
    if not isinstance(run_id, int) or isinstance(run_id, bool) or not isinstance(name, str):
        raise HandlerError("payload: needs run (a run's id) and name (the signal's)",
                           retryable=False)  # fmt: skip
    user = None
    runs = Run.objects.all()
    if message.sender.startswith(_USER_PREFIX):
        username = message.sender.removeprefix(_USER_PREFIX)
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None or not user.has_perm(RUN_ACTION_PERMISSIONS["signal"]):
            raise HandlerError(f"permission denied: {username} may not signal runs",
                               retryable=False)  # fmt: skip
        runs = run_visible_list(user=user)
    run = runs.filter(pk=run_id).first()
    if run is None:
        raise HandlerError(f"run: no run {run_id}", retryable=False)
    try:
        sent = signal_send(run=run, name=name, payload=body.get("payload"), user=user,
                           source="message")  # fmt: skip
    except RunError as exc:
        raise HandlerError(str(exc), retryable=False) from None
    return {"signal": sent.pk, "step": sent.step.key if sent.step else None}
