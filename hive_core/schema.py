"""The OpenAPI schema (drf-spectacular), with the error responses of every operation."""

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

from hive_core.api import HasPerm


class _ErrorBody(serializers.Serializer):
    code = serializers.CharField(help_text="e.g. invalid, not_authenticated, not_found")
    message = serializers.CharField(help_text="What went wrong, naming the first bad field.")
    fields = serializers.DictField(help_text="Each bad field with its errors.")


class ErrorSerializer(serializers.Serializer):
    """The body of every 4xx."""

    error = _ErrorBody()


_ERRORS = {
    "400": "Bad input: `fields` names each bad field.",
    "401": "Not logged in.",
    "403": "Logged in without the permission this needs.",
    "404": "No such object, or one the user may not see.",
    "409": "Not possible in the object's present state; nothing changed.",
    "413": "The body is larger than the limit (DATA_UPLOAD_MAX_MEMORY_SIZE).",
    "415": "The body is not JSON.",
    "429": "Too many requests: wait the seconds the Retry-After header names.",
}


class HiveAutoSchema(AutoSchema):
    """drf-spectacular's schema, with the error responses each operation can give."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        writes = self.method in ("POST", "PUT", "PATCH")
        # Any request can be a 400 (a NUL in the URL: hive_core/middleware.py).
        codes = {"400", "401"}
        # Writes need a permission (HasPerm, or the command's own, checked inside).
        if writes or any(isinstance(p, HasPerm) for p in self.view.get_permissions()):
            codes.add("403")
        if "{" in self.path:
            codes.add("404")
        if writes:
            codes |= {"413", "415"}
        if writes and "{" in self.path:
            codes.add("409")
        if getattr(self.view, "throttle_classes", None):
            codes.add("429")
        for code in sorted(codes - responses.keys()):
            responses[code] = self._get_response_for_code(ErrorSerializer, code, None, direction)
            responses[code]["description"] = _ERRORS[code]
        return responses
