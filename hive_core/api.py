"""What every API view shares: one error shape and permission checks by codename."""

import re

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied, ValidationError
from rest_framework.pagination import CursorPagination, LimitOffsetPagination
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import exception_handler

from hive_core.errors import HiveError


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
    if isinstance(exc, HiveError):
        body = {"code": exc.code, "message": exc.message, "fields": exc.fields}
        return Response({"error": body}, status=exc.status)
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
        # An exception may name its fields itself (a refused command points at a token).
        body = {"code": code, "message": str(detail), "fields": getattr(exc, "fields", {})}
    response.data = {"error": body}
    return response


# Row ids in URLs and filters: at most 18 digits, so every one fits the 64-bit integers
# of SQLite and PostgreSQL (a longer one made SQLite raise OverflowError: a 500).
ID_PATTERN = r"[0-9]{1,18}"
MAX_ID = 2**63 - 1


class IdConverter:
    """`<id:pk>` in a path: a row id that fits the database, as an int."""

    regex = ID_PATTERN

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


class HasPerm(BasePermission):
    """`permission_classes = [HasPerm("agents.change_agent")]`: the user needs that permission."""

    def __init__(self, perm: str):
        self.perm = perm

    def __call__(self):
        return self  # DRF instantiates permission classes; an instance stands in for one

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.has_perm(self.perm))


def needs(codename: str) -> list:
    """`permission_classes=needs("coordination.change_run")`: a login and that permission."""
    return [IsAuthenticated, HasPerm(codename)]


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


def query_params(request) -> dict[str, str]:
    """The query string as a plain dict for a filter serializer: a parameter given twice
    is a 400, and an empty value is a value (DRF reads `?state=` on a QueryDict as no
    filter at all)."""
    repeated = [name for name, values in request.query_params.lists() if len(values) > 1]
    if repeated:
        raise ValidationError({name: ["Given more than once."] for name in repeated})
    return request.query_params.dict()


def _page_param(request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    """A paging query parameter, or a 400 naming it (DRF would quietly use the default)."""
    raw = query_params(request).get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({name: ["A valid integer is required."]}) from None
    if not minimum <= value <= maximum:
        raise ValidationError({name: [f"Must be between {minimum} and {maximum}."]})
    return value


class HivePagination(LimitOffsetPagination):
    """`?limit=&offset=` pages; bad values are a 400 rather than silently ignored."""

    default_limit = 100
    max_limit = 1000

    def get_limit(self, request) -> int:
        return _page_param(
            request, "limit", default=self.default_limit, minimum=1, maximum=self.max_limit
        )

    def get_offset(self, request) -> int:
        return _page_param(request, "offset", default=0, minimum=0, maximum=2**31)

    def get_schema_operation_parameters(self, view):
        return _bounded(super().get_schema_operation_parameters(view), {
            "limit": (1, self.max_limit), "offset": (0, 2**31)
        })  # fmt: skip


class NewestFirstPagination(CursorPagination):
    """Cursor pages, newest first, for lists that grow while clients page through them;
    a bad `limit` or `cursor` is a 400."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 500

    def get_page_size(self, request) -> int:
        return _page_param(
            request, "limit", default=self.page_size, minimum=1, maximum=self.max_page_size
        )

    def get_schema_operation_parameters(self, view):
        return _bounded(
            super().get_schema_operation_parameters(view), {"limit": (1, self.max_page_size)}
        )

    def decode_cursor(self, request):
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise ValidationError({"cursor": ["Invalid cursor."]}) from None
        # DRF checks the offset and direction but passes the position (`p=`) to the
        # query as it came: `p=abc`, `p=1e5` or `p=%00` inside a crafted cursor was a
        # 500 from the database. The position is a row id, since the ordering is by id.
        position = cursor.position if cursor is not None else None
        if position is not None and not re.fullmatch(ID_PATTERN, position):
            raise ValidationError({"cursor": ["Invalid cursor."]})
        return cursor


def _bounded(parameters: list[dict], bounds: dict[str, tuple[int, int]]) -> list[dict]:
    """Paging parameters in the schema with the bounds the pagination enforces."""
    for parameter in parameters:
        if parameter["name"] in bounds:
            low, high = bounds[parameter["name"]]
            parameter["schema"] = {"type": "integer", "minimum": low, "maximum": high}
    return parameters
