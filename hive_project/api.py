"""What every API view shares: one error shape and permission checks by codename."""

from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.views import exception_handler


def api_exception_handler(exc, context):
    """Every 4xx as `{"error": {"code", "message", "fields"}}`; `fields` names each bad field."""
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


class HasPerm(BasePermission):
    """`permission_classes = [HasPerm("agents.change_agent")]`: the user needs that permission."""

    def __init__(self, perm: str):
        self.perm = perm

    def __call__(self):
        return self  # DRF instantiates permission classes; an instance stands in for one

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.has_perm(self.perm))
