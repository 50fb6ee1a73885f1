"""`POST /hooks/<name>`: the door of webhook triggers (commands/triggers.py). It sits
outside the API's authentication: the signature of the body is the credential."""

from types import SimpleNamespace

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from commands.api.serializers import InvocationSerializer
from commands.errors import TriggerBodyTooLarge, TriggerThrottled
from commands.throttles import command_throttle_wait
from commands.triggers import (
    hive_error_body,
    trigger_deliver,
    trigger_find,
    trigger_fire,
    trigger_verify,
)
from hive_core.errors import HiveError
from hive_core.middleware import api_error

# Hive's own names first, then GitHub's, so GitHub can call a trigger directly.
SIGNATURE_HEADERS = ("X-Hive-Signature-256", "X-Hub-Signature-256")
DELIVERY_HEADERS = ("X-Hive-Delivery", "X-GitHub-Delivery")


def _header(request, names: tuple[str, ...]) -> str:
    return next((request.headers[n] for n in names if n in request.headers), "")


@csrf_exempt
def hook(request, name: str) -> JsonResponse:
    if request.method != "POST":
        response = api_error(405, "method_not_allowed", f"{request.method}: a trigger takes POST")
        response["Allow"] = "POST"
        return response
    try:
        trigger = trigger_find(name=name)
        body = _body(request)
        trigger_verify(trigger=trigger, body=body, signature=_header(request, SIGNATURE_HEADERS))
        status, answer = trigger_deliver(
            trigger=trigger,
            delivery_id=_header(request, DELIVERY_HEADERS),
            answer=lambda: _answer(request, trigger=trigger, body=body),
        )
    except HiveError as exc:
        status, answer = exc.status, hive_error_body(exc)
    return JsonResponse(answer, status=status)


def _body(request) -> bytes:
    limit = settings.HIVE_WEBHOOK_MAX_BYTES
    try:
        body = request.body
    except RequestDataTooBig:
        body = None
    if body is None or len(body) > limit:
        raise TriggerBodyTooLarge(
            f"body: larger than {limit} bytes (HIVE_WEBHOOK_MAX_BYTES)",
            fields={"body": [f"larger than {limit} bytes"]},
        )
    return body


def _answer(request, *, trigger, body: bytes) -> tuple[int, dict]:
    """The answer to keep for this delivery; a throttled one is raised, not kept, so a
    later retry of the same delivery runs."""
    # The trigger's user's bucket, shared with the API and the console.
    wait = command_throttle_wait(request=SimpleNamespace(user=trigger.user, META=request.META))
    if wait is not None:
        raise TriggerThrottled(
            f"too many commands for {trigger.user.username} "
            f"(at most {settings.HIVE_COMMAND_THROTTLE}); try again in {wait:.0f} s"
        )
    try:
        invocation = trigger_fire(trigger=trigger, body=body, headers=dict(request.headers))
    except HiveError as exc:
        return exc.status, hive_error_body(exc)
    data = InvocationSerializer(invocation).data
    return 201, {"invocation": data, "run": data["run"]}
