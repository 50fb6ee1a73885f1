"""Endpoints for operators' machines: health checks and Prometheus metrics."""

import hmac

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rest_framework.exceptions import AuthenticationFailed

from coordination.leadership import coordinator_leader, coordinators_status
from hive_core.auth import ExpiringTokenAuthentication
from hive_core.redis_client import redis_probe_client
from ops.metrics import registry

# /healthz and /readyz answer anyone: load balancers, docker and kubelet probes
# carry no credentials. They say only "ok" or which dependency is unreachable,
# never an address, a version or an error text that could name one.


@never_cache
@require_GET
def healthz(request) -> JsonResponse:
    """The process is up and serving requests; it touches nothing else, so a
    database or Redis outage does not get healthy web processes restarted."""
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_redis() -> None:
    client = redis_probe_client()
    try:
        client.ping()
    finally:
        client.close()


@never_cache
@require_GET
def readyz(request) -> JsonResponse:
    """Ready to serve: the database and Redis answer. 503 naming what failed."""
    checks = {}
    for name, check in (("database", _check_database), ("redis", _check_redis)):
        try:
            check()
        except Exception:  # any failure means not ready; the log has the detail
            checks[name] = "unreachable"
        else:
            checks[name] = "ok"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {
            "status": "ok" if ready else "unavailable",
            "checks": checks,
            "coordinators": _coordinators() if checks["redis"] == "ok" else None,
        },
        status=200 if ready else 503,
    )


def _coordinators() -> dict | None:
    """Which coordinator leads (by the name it was given, never its host) and how many
    stand by. Not a readiness check: the web serves without one, and a 503 would get
    healthy web processes restarted for it."""
    try:
        records = [r for r in coordinators_status() if r["alive"]]
    except Exception:  # Redis went away since its check: say nothing rather than fail
        return None
    leader = coordinator_leader(records)
    return {
        "leader": leader["name"] if leader else None,
        "standby": sum(1 for r in records if r is not leader),
    }


def _metrics_allowed(request) -> bool | None:
    """True for the metrics token or a staff user (logged in, or by API token), False
    for another user, None for
    no credentials or a wrong token (a 401: try again with the right ones)."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        token = settings.HIVE_METRICS_TOKEN
        given = header.removeprefix("Bearer ").strip()
        return True if token and hmac.compare_digest(given.encode(), token.encode()) else None
    if header.startswith("Token "):
        # A staff user's API token, as the rest of the API takes it.
        try:
            found = ExpiringTokenAuthentication().authenticate(request)
        except AuthenticationFailed:
            return None
        return found[0].is_staff if found else None
    if request.user.is_authenticated:
        return request.user.is_staff
    return None


@never_cache
@require_GET
def metrics(request) -> HttpResponse:
    """Prometheus text format, for a scraper with `Authorization: Bearer
    $HIVE_METRICS_TOKEN` or a logged-in staff user."""
    allowed = _metrics_allowed(request)
    if allowed is None:
        response = HttpResponse("authentication required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="hive-metrics"'
        return response
    if not allowed:
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
