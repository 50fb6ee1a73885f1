"""Noticing run outcomes and delivering them, in the leading coordinator's pass.

The events are the record: the pass reads the `run.failed`, `run.succeeded` and
`step.waiting` (for approval) events after its cursor, creates one Delivery per
subscription, outcome, channel and recipient, and moves the cursor on, all in one
transaction; a process killed halfway leaves either both or neither, and the unique
constraint makes a second read of the same events create nothing. Then it sends what
is due, each try recorded, failures retried with exponential backoff.
"""

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from commands.models import Invocation
from coordination.models import Run
from coordination.selectors import run_visible_ids
from events.models import Event
from notifications.models import Cursor, Delivery, Subscription

logger = logging.getLogger(__name__)

EVENTS_PER_PASS = 500
DELIVERIES_PER_PASS = 100
WEBHOOK_TIMEOUT = 10.0
SIGNATURE_HEADER = "X-Hive-Signature-256"
# An event is read once this old: ids are taken before their transaction commits, so
# a younger one may still have a smaller id behind it, which the cursor would pass.
EVENT_LAG = timedelta(seconds=2)
_OUTCOME_OF = {"run.failed": "failed", "run.succeeded": "succeeded", "step.waiting": "waiting"}


def notifications_pass() -> None:
    """The leader's pass (registered in NotificationsConfig.ready)."""
    events_notice()
    deliveries_send()


def events_notice(*, limit: int = EVENTS_PER_PASS, lag: timedelta = EVENT_LAG) -> int:
    """Create the deliveries of the outcome events after the cursor (at most `limit`
    of them) and move the cursor past them; the number of deliveries created."""
    until = timezone.now() - lag
    with transaction.atomic():
        cursor, _ = Cursor.objects.select_for_update().get_or_create(name="events")
        newer = Event.objects.filter(pk__gt=cursor.last_event_id, created_at__lte=until)
        # The end first: an event committed between the two reads is left for the next.
        last = newer.aggregate(last=Max("pk"))["last"] or cursor.last_event_id
        outcomes = newer.filter(pk__lte=last, kind__in=_OUTCOME_OF)
        events = list(outcomes.order_by("pk")[:limit])
        # Past every event read, or (fewer than `limit` outcomes) every one up to `last`.
        cursor.last_event_id = events[-1].pk if len(events) == limit else last
        deliveries = _deliveries_of(events)
        Delivery.objects.bulk_create(deliveries, ignore_conflicts=True)
        cursor.save(update_fields=["last_event_id"])
    return len(deliveries)


def _outcome(event: Event) -> str | None:
    if event.kind == "step.waiting" and event.data.get("reason") != "approval":
        return None  # waiting for an agent, a slot or a rate: nobody's to act on
    return _OUTCOME_OF[event.kind]


def _deliveries_of(events: list[Event]) -> list[Delivery]:
    noticed = [(e, _outcome(e), int(e.subject.partition(":")[2])) for e in events]
    noticed = [(e, outcome, run_id) for e, outcome, run_id in noticed if outcome]
    if not noticed:
        return []
    subscriptions = list(
        Subscription.objects.filter(active=True).select_related("user", "group", "command")
    )
    if not subscriptions:
        return []
    runs = Run.objects.select_related("workflow").in_bulk({run_id for _, _, run_id in noticed})
    commands = dict(Invocation.objects.filter(run__in=runs).values_list("run_id", "command_id"))
    audience = _Audience()
    deliveries, now = [], timezone.now()
    for event, outcome, run_id in noticed:
        run = runs.get(run_id)
        if run is None:
            continue
        for subscription in subscriptions:
            command_id = commands.get(run.pk)
            if _follows(subscription, run=run, command_id=command_id, outcome=outcome,
                        at=event.created_at):  # fmt: skip
                deliveries += _subscription_deliveries(
                    subscription, run=run, outcome=outcome, event=event, now=now,
                    audience=audience,
                )  # fmt: skip
    return deliveries


class _Audience:
    """Who a subscription reaches and which runs they may see, each asked of the
    database once a pass."""

    def __init__(self):
        self._groups: dict[int, list] = {}
        self._sees: dict[tuple[int, int], bool] = {}

    def members(self, subscription: Subscription) -> list:
        if subscription.user_id is not None:
            return [subscription.user] if subscription.user.is_active else []
        if subscription.group_id not in self._groups:
            self._groups[subscription.group_id] = list(
                subscription.group.user_set.filter(is_active=True)
            )
        return self._groups[subscription.group_id]

    def sees(self, user, run: Run) -> bool:
        key = (user.pk, run.pk)
        if key not in self._sees:
            self._sees[key] = bool(run_visible_ids(user=user, ids=[run.pk]))
        return self._sees[key]


def _follows(subscription: Subscription, *, run: Run, command_id, outcome: str, at) -> bool:
    # A subscription is told of outcomes from its creation on, not of the past's.
    if outcome not in subscription.outcomes or subscription.created_at > at:
        return False
    if subscription.command_id is not None:
        return subscription.command_id == command_id
    return not subscription.workflow or subscription.workflow == run.workflow.name


def _subscription_deliveries(
    subscription, *, run, outcome, event, now, audience: _Audience
) -> list[Delivery]:
    """Every door has the same lock: a member is told only of a run they may see, and a
    group's webhook only of a run every member may see."""
    members = audience.members(subscription)
    seeing = [user for user in members if audience.sees(user, run)]
    common = {"subscription": subscription, "run": run, "outcome": outcome, "event": event,
              "next_attempt_at": now}  # fmt: skip
    deliveries = []
    if subscription.email:
        deliveries += [
            Delivery(channel=Delivery.Channel.EMAIL, recipient=user.email, user=user, **common)
            for user in seeing
            if user.email
        ]
    if subscription.webhook_url and seeing and len(seeing) == len(members):
        deliveries.append(
            Delivery(
                channel=Delivery.Channel.WEBHOOK,
                recipient=subscription.webhook_url,
                user=subscription.user,
                **common,
            )
        )
    return deliveries


class WebhookRefused(Exception):
    """A webhook URL Hive will not call: tried again, it would be refused again."""


def deliveries_send(*, limit: int = DELIVERIES_PER_PASS) -> int:
    """Try the due deliveries (at most `limit`); the number tried."""
    now = timezone.now()
    due = Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
    tried = 0
    for delivery in due.select_related("run__workflow", "subscription").order_by(
        "next_attempt_at", "pk"
    )[:limit]:
        # Claimed by its try's number: a second sender (a deposed leader's last pass)
        # finds it taken and leaves it.
        retry_at = now + _backoff(delivery.attempts + 1)
        claimed = Delivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts).update(
            attempts=F("attempts") + 1, next_attempt_at=retry_at
        )
        if claimed:
            delivery.attempts, delivery.next_attempt_at = delivery.attempts + 1, retry_at
            delivery_attempt(delivery)
            tried += 1
    return tried


def _backoff(attempt: int) -> timedelta:
    return timedelta(seconds=min(settings.HIVE_NOTIFY_BACKOFF * 2 ** (attempt - 1), 3600))


def delivery_attempt(delivery: Delivery) -> None:
    """Send `delivery` once (its `attempts` already counts this try) and record how it
    went: sent, pending again (after its backoff) or, out of tries, failed."""
    now = timezone.now()
    status, error, final = None, "", False
    try:
        if delivery.channel == Delivery.Channel.EMAIL:
            _email_send(delivery)
        else:
            status = _webhook_post(delivery)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
    except WebhookRefused as exc:
        error, final = str(exc), True
    except Exception as exc:  # any failure of the channel is a failed try, retried
        error = f"{type(exc).__name__}: {exc}"[:1000]
    entry = {"at": now.isoformat(), "attempt": delivery.attempts, "status": status,
             "error": error}  # fmt: skip
    delivery.attempt_log = [*delivery.attempt_log, entry]
    delivery.response_status, delivery.last_error = status, error
    if not error:
        delivery.status, delivery.sent_at = Delivery.Status.SENT, now
        delivery.next_attempt_at = None
    elif final or delivery.attempts >= settings.HIVE_NOTIFY_MAX_ATTEMPTS:
        delivery.status, delivery.next_attempt_at = Delivery.Status.FAILED, None
        logger.warning("notification %s failed for good: %s", delivery.pk, error)
    delivery.save(update_fields=["attempt_log", "response_status", "last_error", "status",
                                 "sent_at", "next_attempt_at"])  # fmt: skip


def notice_payload(delivery: Delivery) -> dict:
    run = delivery.run
    command = (
        Invocation.objects.filter(run=run).values_list("command_name", flat=True).first() or ""
    )
    event = delivery.event
    return {
        "event": f"run.{delivery.outcome}",
        "outcome": delivery.outcome,
        "run": run.pk,
        "workflow": run.workflow.name,
        "command": command.lstrip("/"),
        "state": run.state,
        "error": run.error,
        "step": (event.data.get("step", "") if event and delivery.outcome == "waiting" else ""),
        "url": f"{settings.HIVE_PUBLIC_URL}/runs/{run.pk}/",
    }


def _email_send(delivery: Delivery) -> None:
    notice = notice_payload(delivery)
    what = {"failed": "failed", "succeeded": "succeeded", "waiting": "waits for approval"}
    subject = f"[Hive] run {notice['run']} ({notice['workflow']}) {what[delivery.outcome]}"
    lines = [subject.removeprefix("[Hive] ") + ".", ""]
    if notice["command"]:
        lines.append(f"Command: /{notice['command']}")
    if notice["step"]:
        lines.append(f"Step: {notice['step']}")
    if notice["error"]:
        lines.append(f"Error: {notice['error']}")
    lines.append(f"See {notice['url']}")
    send_mail(subject, "\n".join(lines), settings.DEFAULT_FROM_EMAIL, [delivery.recipient])


def webhook_signature(*, secret: str, body: bytes) -> str:
    """`sha256=<hex>`, as GitHub signs: the receiver recomputes it with the secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _webhook_post(delivery: Delivery) -> int:
    """POST the notice; its HTTP status. Redirects are not followed (a 3xx is a failed
    try): the subscriber gave this URL, and a redirect could lead anywhere."""
    _webhook_check(delivery.recipient)
    body = json.dumps(notice_payload(delivery), sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "Hive-Notifications"}
    if delivery.subscription.webhook_secret:
        headers[SIGNATURE_HEADER] = webhook_signature(
            secret=delivery.subscription.webhook_secret, body=body
        )
    response = httpx.post(
        delivery.recipient, content=body, headers=headers, timeout=WEBHOOK_TIMEOUT,
        follow_redirects=False,
    )  # fmt: skip
    return response.status_code


def _webhook_check(url: str) -> None:
    """Any user may subscribe a webhook: one reaching the coordinator's own network
    (loopback, private, link-local: a cloud's metadata service) is refused unless its
    host (or host:port) is on HIVE_NOTIFY_WEBHOOK_ALLOWED_HOSTS. Checked before each
    try, as a name may resolve elsewhere by then."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    allowed = {entry.lower() for entry in settings.HIVE_NOTIFY_WEBHOOK_ALLOWED_HOSTS}
    if host in allowed or f"{host}:{parts.port}" in allowed:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, parts.port or 443)}
    except OSError as exc:
        raise ConnectionError(f"{host}: {exc}") from None  # DNS may come back: retried
    for address in addresses:
        if not ipaddress.ip_address(address.split("%")[0]).is_global:
            raise WebhookRefused(
                f"refused: {host} resolves to {address}, not a public address "
                "(HIVE_NOTIFY_WEBHOOK_ALLOWED_HOSTS)"
            )
