"""Message handlers: `@handler("kind")` registers what an agent does with a message.

A handler is called as `func(ctx, message)` inside the database transaction that
marks the message handled, so its database effects and that mark commit together
or not at all; the message is acknowledged in Redis only after the commit. What
it returns (JSON) is sent back when the message is a request. It raises
HandlerError (or anything) to fail; the message is tried again after
HIVE_INBOX_CLAIM_IDLE and dead-lettered after HIVE_MAX_DELIVERIES.

Handlers run in the agent's inbox thread, one message after another: keep them
short (start a workflow for long work). Effects outside the database may happen
more than once, as for skills: a batch in which one message fails is rolled back
and the others run again without it.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class HandlerError(Exception):
    """A handler failed. `retryable=False` dead-letters the message at once."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Envelope:
    """One message as its handler sees it."""

    id: int  # the Message row
    stream: str
    stream_id: str
    sender: str
    recipient: str
    kind: str
    payload: Any
    correlation_id: str = ""
    reply_to: str = ""
    deliveries: int = 1


@dataclass(frozen=True)
class HandlerContext:
    agent: str
    consumer: str  # AGENT:PID


@dataclass(frozen=True)
class Handler:
    kind: str
    func: Callable[[HandlerContext, Envelope], Any]
    description: str


_REGISTRY: dict[str, Handler] = {}


def handler(kind: str, *, description: str = ""):
    """Register the decorated function as the handler of messages of `kind`."""

    def register(func: Callable[[HandlerContext, Envelope], Any]):
        existing = _REGISTRY.get(kind)
        if existing and existing.func is not func:
            raise ValueError(
                f"message kind {kind!r} already has a handler in {existing.func.__module__}"
            )
        doc = description or (func.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[kind] = Handler(kind=kind, func=func, description=doc)
        return func

    return register


def handler_get(kind: str) -> Handler | None:
    return _REGISTRY.get(kind)


def handler_kinds() -> list[str]:
    return sorted(_REGISTRY)


# --- built-in handlers -------------------------------------------------------------


@handler("ping")
def ping(ctx: HandlerContext, message: Envelope) -> dict:
    """Answer with the agent's name and process: a round trip through the inbox."""
    return {"pong": ctx.agent, "pid": os.getpid()}


@handler("note")
def note(ctx: HandlerContext, message: Envelope) -> None:
    """Take note: the handled Message row, with its payload, is the record."""
    return None


@handler("handoff")
def handoff(ctx: HandlerContext, message: Envelope) -> dict:
    """Accept a step's context handed off by another agent (mailbox.handoff); the
    handled row carries it. Teams with work to do on it send their own kind."""
    return {
        "accepted": True,
        "run": message.payload.get("run"),
        "step": message.payload.get("step"),
    }
