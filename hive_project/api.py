"""What every API view shares: one error shape and permission checks by codename."""

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied, ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.views import exception_handler


def api_exception_handler(exc, context):
    """Every 4xx as `{"error": {"code", "message", "fields"}}`; `fields` names each bad field."""
    # DRF turns Django's own 404 and 403 into its exceptions only inside its handler;
    # do it first so their codes come out as not_found and permission_denied.
    if isinstance(exc, Http404):
        exc = NotFound()
    elif isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = BodyTooLarge(f"the request body is larger than {limit} bytes")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ValidationError):
        fields = (
            response.data
            if isinstance(response.data, dict)
            else {"non_field_errors": response.data}
        )
        first = next(iter(fields.items()), ("", [""]))
        message = f"{first[0]}: {first[1][0] if isinstance(first[1], list) else first[1]}"
        body = {"code": "invalid", "message": message, "fields": fields}
    else:
        detail = getattr(exc, "detail", str(exc))
        code = detail.code if hasattr(detail, "code") else getattr(exc, "default_code", "error")
        body = {"code": code, "message": str(detail), "fields": {}}
    response.data = {"error": body}
    return response


class HasPerm(BasePermission):
    """`permission_classes = [HasPerm("agents.change_agent")]`: the user needs that permission."""

    def __init__(self, perm: str):
        self.perm = perm

    def __call__(self):
        return self  # DRF instantiates permission classes; an instance stands in for one

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.has_perm(self.perm))


class Conflict(APIException):
    """The request cannot be carried out in the object's present state (a finished run
    cannot be cancelled); nothing changed."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
