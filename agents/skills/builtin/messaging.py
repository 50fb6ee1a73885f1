"""`message.send` and `message.request`: workflow steps talk to agents (agents/mailbox.py)."""

from agents import mailbox
from agents.skills.registry import SkillContext, SkillError, SkillInputError, skill

_NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$", "maxLength": 64}
_MESSAGE = {
    "to": {**_NAME, "description": "The agent (its message waits in its inbox while down)."},
    "role": {**_NAME, "description": "Any one agent of this role."},
    "kind": {"type": "string", "minLength": 1, "maxLength": 100},
    "payload": {"description": "Any JSON, up to HIVE_MESSAGE_MAX_BYTES."},
}
_TARGET = [{"required": ["to"]}, {"required": ["role"]}]


def _mailbox(ctx: SkillContext, skill_name: str, call, **arguments):
    """`call` (mailbox.send or mailbox.request) as the step's agent; the mailbox's
    refusals become the skill's errors, named after it."""
    # A step's retry (or a redelivery of it) must not send the message twice.
    key = f"{ctx.idempotency_key}:{skill_name}" if ctx.idempotency_key else ""
    try:
        return call(sender=ctx.agent or "hive", idempotency_key=key, **arguments)
    except mailbox.RequestFailed as exc:
        raise SkillError(f"{skill_name}: {exc}", retryable=False) from None
    except mailbox.RequestTimeout as exc:
        # Tried again, the step waits for the same request's reply (same key).
        raise SkillError(f"{skill_name}: {exc}") from None
    except mailbox.MessageError as exc:
        raise SkillInputError(f"{skill_name}: {exc}") from None


@skill(
    "message.send",
    params={
        "type": "object",
        "properties": {**_MESSAGE, "correlation_id": {"type": "string", "maxLength": 64}},
        "required": ["kind"],
        "oneOf": _TARGET,
        "additionalProperties": False,
    },
)
def message_send(
    ctx: SkillContext, *, kind: str, to: str = "", role: str = "", payload=None,
    correlation_id: str = "",
) -> dict:  # fmt: skip
    """Send a message to an agent or a role; returns its id once it is in the inbox."""
    message = _mailbox(ctx, "message.send", mailbox.send, to=to, role=role, kind=kind,
                       payload=payload, correlation_id=correlation_id)  # fmt: skip
    return {"message": message.pk, "correlation_id": message.correlation_id}


@skill(
    "message.request",
    params={
        "type": "object",
        "properties": {**_MESSAGE, "timeout": {"type": "number", "minimum": 0.1, "maximum": 3600}},
        "required": ["kind"],
        "oneOf": _TARGET,
        "additionalProperties": False,
    },
)
def message_request(
    ctx: SkillContext, *, kind: str, to: str = "", role: str = "", payload=None,
    timeout: float = 30,
) -> dict:  # fmt: skip
    """Send a request to an agent or a role and return its handler's reply."""
    reply = _mailbox(ctx, "message.request", mailbox.request, to=to, role=role, kind=kind,
                     payload=payload, timeout=timeout)  # fmt: skip
    return {"reply": reply}
