"""ASGI entry point: the dashboard, API and admin over HTTP, live events over WebSockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hive_project.settings")

# Django first: the consumers import models, which need the app registry.
django_asgi = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from dashboard.routing import websocket_urlpatterns  # noqa: E402
from hive_core.db import connections_name  # noqa: E402
from hive_core.proxies import TrustedProxyMiddleware  # noqa: E402
from hive_core.web_bound import DatabaseBound  # noqa: E402
from hive_core.websocket_origin import SameOriginValidator  # noqa: E402

# Only the web process loads this module, whatever server runs it.
connections_name(name=f"hive-web:{os.getpid()}")

# Outermost: everything inside sees the client and scheme a trusted proxy forwarded,
# and only those (HIVE_TRUSTED_PROXIES; `hive web` runs daphne without --proxy-headers).
application = TrustedProxyMiddleware(
    ProtocolTypeRouter(
        {
            # HTTP requests share HIVE_WEB_DB_CONNECTIONS - 1 database threads; WebSocket
            # consumers use asgiref's one shared thread, the last connection of the bound.
            "http": DatabaseBound(
                django_asgi,
                threads=settings.HIVE_WEB_DB_CONNECTIONS - 1,
                wait=settings.HIVE_WEB_DB_WAIT_MS / 1000,
            ),
            # A page of another site must not open a socket with the user's session
            # cookie: the Origin must be the request's own (scheme, host and port) or
            # one of CSRF_TRUSTED_ORIGINS, and one without is refused.
            "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    )
)
