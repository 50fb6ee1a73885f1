"""Refuse, before any view runs, what no view could handle."""

from django.http import HttpResponseBadRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt


def api_error(status: int, code: str, message: str) -> JsonResponse:
    """A 4xx in the API's error shape, for answers given outside DRF."""
    return JsonResponse({"error": {"code": code, "message": message, "fields": {}}}, status=status)


class RejectNulMiddleware:
    """A NUL character in the path or the query string is a 400: PostgreSQL cannot hold
    one in a query, and every lookup or filter would fail with a 500 instead."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        values = [request.path, *(v for _, vs in request.GET.lists() for v in vs), *request.GET]
        if any("\x00" in value for value in values):
            message = "NUL characters are not allowed in the URL"
            if request.path.startswith("/api/"):
                return api_error(400, "invalid", message)
            return HttpResponseBadRequest(message)
        return self.get_response(request)


@csrf_exempt  # a POST to a wrong address is a 404 like a GET, not a CSRF failure
def api_not_found(request, *args, **kwargs) -> JsonResponse:
    """Unknown addresses under /api/ answer in the API's shape, not with an HTML page."""
    return api_error(404, "not_found", f"no API endpoint at {request.path}")


def client_address(request) -> str | None:
    """The client's address as the server saw it (daphne's, after its proxy rules): the
    key of login lockouts (django-axes), which must not read a forgeable header."""
    return request.META.get("REMOTE_ADDR")
