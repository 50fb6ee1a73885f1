"""API tokens that expire (HIVE_TOKEN_TTL). Imported by DRF's settings: no views here."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed


class ExpiringTokenAuthentication(TokenAuthentication):
    """DRF's token, refused (401) once older than HIVE_TOKEN_TTL days."""

    def authenticate_credentials(self, key):
        user, token = super().authenticate_credentials(key)
        ttl = settings.HIVE_TOKEN_TTL
        if ttl and token.created < timezone.now() - timedelta(days=ttl):
            expired = (token.created + timedelta(days=ttl)).date().isoformat()
            raise AuthenticationFailed(
                f"API token expired on {expired} (HIVE_TOKEN_TTL is {ttl} days); get a new "
                f"one on the dashboard's token page or with: manage.py hive token "
                f"{user.get_username()} --rotate"
            )
        return user, token
