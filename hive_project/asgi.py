"""ASGI entry point: the dashboard, API and admin over HTTP, live events over WebSockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hive_project.settings")

# Django first: the consumers import models, which need the app registry.
django_asgi = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from dashboard.routing import websocket_urlpatterns  # noqa: E402
from hive_project.proxies import TrustedProxyMiddleware  # noqa: E402

# Outermost: everything inside sees the client and scheme a trusted proxy forwarded,
# and only those (HIVE_TRUSTED_PROXIES; `hive web` runs daphne without --proxy-headers).
application = TrustedProxyMiddleware(
    ProtocolTypeRouter(
        {
            "http": django_asgi,
            # A page of another site must not open a socket with the user's session cookie:
            # the Origin must be one of ALLOWED_HOSTS (and a request without one is refused).
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
            ),
        }
    )
)
