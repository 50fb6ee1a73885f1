"""Rotating one's own API token (the API's door; the dashboard has a page)."""

from datetime import timedelta

from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from hive_core.services import token_rotate


class TokenRotateView(APIView):
    """Replace the caller's API token with a new one; the old one stops working now."""

    @extend_schema(
        request=None,
        responses={
            201: inline_serializer(
                "RotatedToken",
                {"token": serializers.CharField(), "expires_at": serializers.DateTimeField()},
            )
        },
    )
    def post(self, request):
        token = token_rotate(user=request.user)
        return Response(token_body(token), status=201)


def token_body(token) -> dict:
    ttl = settings.HIVE_TOKEN_TTL
    return {
        "token": token.key,
        "expires_at": (token.created + timedelta(days=ttl)) if ttl else None,
    }
