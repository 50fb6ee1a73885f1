"""Webhook triggers: `POST /hooks/<name>` with a body signed by the trigger's secret
runs the trigger's command, rendered from the body, through `command_execute` as the
trigger's user (source `webhook`), so permission, overlap, approval and the audit
apply as for anyone. A delivery id answered in the last REPLAY_WINDOW gets its first
answer again, and nothing runs twice."""

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from commands.errors import TriggerUnsigned
from commands.executing import Attempt, command_execute
from commands.models import Invocation, Trigger, TriggerDelivery
from commands.parser import quote
from coordination.templates import TemplateError, render_each, template_check
from hive_core.errors import Conflict, Denied, HiveError, Invalid, NotFound

REPLAY_WINDOW = timedelta(minutes=5)
# The headers a template may read (`headers['x-github-event']`): what says which event
# it is, never what authenticates it.
TEMPLATE_HEADERS = (
    "content-type",
    "user-agent",
    "x-github-event",
    "x-github-delivery",
    "x-hive-event",
    "x-hive-delivery",
)


def trigger_template_check(*, command: str) -> None:
    """Refuse a command template that does not compile, naming the field."""
    if not command.strip():
        raise Invalid("command: give the command text it runs", fields={"command": ["required"]})
    try:
        template_check(command)
    except TemplateError as exc:
        raise Invalid(f"command: {exc}", fields={"command": [str(exc)]}) from None


def trigger_find(*, name: str) -> Trigger:
    trigger = Trigger.objects.select_related("user").filter(name=name, enabled=True).first()
    if trigger is None:
        raise NotFound(f"no enabled trigger {name!r}", fields={"name": [f"no trigger {name!r}"]})
    return trigger


def trigger_verify(*, trigger: Trigger, body: bytes, signature: str) -> None:
    """Refuse (and count) a delivery whose signature is not `sha256=<hex HMAC-SHA256
    of the body>` under the trigger's secret, as GitHub signs."""
    expected = "sha256=" + hmac.new(trigger.secret.encode(), body, hashlib.sha256).hexdigest()
    if hmac.compare_digest(expected.encode(), signature.strip().encode()):
        return
    Trigger.objects.filter(pk=trigger.pk).update(rejected_count=F("rejected_count") + 1)
    raise TriggerUnsigned(
        "missing or bad X-Hive-Signature-256 (sha256=<hex HMAC-SHA256 of the body>)",
        fields={"X-Hive-Signature-256": ["does not match the body"]},
    )


def trigger_fire(*, trigger: Trigger, body: bytes, headers: dict) -> Invocation:
    """Render the trigger's command from the JSON `body` and execute it as its user.
    Raises HiveError (a CommandFailure when refused by the command's rules)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid(f"body: not JSON: {exc}", fields={"body": [f"not JSON: {exc}"]}) from None
    if not isinstance(data, dict):
        raise Invalid("body: must be a JSON object", fields={"body": ["must be a JSON object"]})
    context = {
        "body": data,
        "headers": {k: v for k, v in headers.items() if k.lower() in TEMPLATE_HEADERS},
    }
    try:
        # Each value from the body is one token: a `ref` of "v1 env=prod" is not two.
        text = render_each(trigger.command, context, each=quote)
    except TemplateError as exc:
        # Recorded as any refused attempt is; nothing starts.
        attempt = Attempt(text=trigger.command, user=trigger.user, source=Invocation.Source.WEBHOOK)
        raise attempt.refuse(
            Invocation.Outcome.INVALID, f"command: {exc}", param="command"
        ) from None
    return command_execute(text=str(text), user=trigger.user, source=Invocation.Source.WEBHOOK)


def trigger_deliver(
    *, trigger: Trigger, delivery_id: str, answer: Callable[[], tuple[int, dict]]
) -> tuple[int, dict]:
    """`answer()` once per delivery id of `trigger` within REPLAY_WINDOW: a replay gets
    the first (status, body). The id is claimed in its own transaction before the
    answer runs, so of two concurrent deliveries only one runs; the other is a 409
    until the first is answered."""
    if not delivery_id:
        return answer()
    TriggerDelivery.objects.filter(created_at__lt=timezone.now() - REPLAY_WINDOW).delete()
    try:
        with transaction.atomic():
            claim = TriggerDelivery.objects.create(trigger=trigger, delivery_id=delivery_id[:200])
    except IntegrityError:
        first = TriggerDelivery.objects.filter(
            trigger=trigger, delivery_id=delivery_id[:200]
        ).first()
        if first is None or first.status is None:
            raise Conflict(
                f"delivery {delivery_id!r} is being answered; try again",
                fields={"X-Hive-Delivery": ["being answered"]},
            ) from None
        return first.status, first.response
    try:
        status, response = answer()
    except BaseException:
        claim.delete()  # not answered: a retry may run it
        raise
    TriggerDelivery.objects.filter(pk=claim.pk).update(status=status, response=response)
    return status, response


def hive_error_body(exc: HiveError) -> dict:
    return {"error": {"code": exc.code, "message": exc.message, "fields": exc.fields}}


def trigger_visible_list(*, user) -> QuerySet[Trigger]:
    """The triggers `user` may see and change: those that run as them (a superuser: all),
    since changing a trigger's command runs that command as its user."""
    triggers = Trigger.objects.select_related("user")
    return triggers if user.is_superuser else triggers.filter(user=user)


def trigger_save(*, trigger: Trigger, by) -> Trigger:
    """Check and save `trigger` for `by`: its template compiles, and only a superuser
    makes a trigger run as someone else (anyone else could act as them through it)."""
    trigger_template_check(command=trigger.command)
    if trigger.user_id != by.pk and not by.is_superuser:
        raise Denied(
            f"user: only a superuser may make a trigger run as another user than {by.username}",
            fields={"user": ["must be you"]},
        )
    trigger.save()
    return trigger
