"""Which pages may open a WebSocket with the user's session cookie: the site's own.

A browser sends the session cookie with a WebSocket handshake from any page, so the
Origin header is the only thing telling Hive's own dashboard from another site.
channels' AllowedHostsOriginValidator compared the Origin's host name with
ALLOWED_HOSTS and nothing else: a page of another local app (http://127.0.0.1:9999),
or a plain-http page when Hive is served over https, opened /ws/events/ as the user.
Here the Origin must be the request's own origin (scheme, host and port, as Django's
CSRF check demands of a form POST) or one of CSRF_TRUSTED_ORIGINS.
"""

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import is_same_domain, split_domain_port, validate_host

# The page's scheme for the socket's (ASGI's default is "ws"; TrustedProxyMiddleware
# sets "wss" when a trusted proxy says the client used https).
_PAGE_SCHEME = {"ws": "http", "wss": "https"}
_DEFAULT_PORT = {"http": 80, "https": 443}


def _origin(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the scheme's default port, or None if malformed."""
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port or _DEFAULT_PORT.get(parts.scheme)
    except ValueError:  # a port out of range or not a number
        return None
    if not parts.hostname or port is None:
        return None
    return parts.scheme, parts.hostname, port


def _allowed_hosts() -> list[str]:
    # What Django's HttpRequest.get_host() allows: ALLOWED_HOSTS, or localhost in DEBUG.
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        return [".localhost", "127.0.0.1", "[::1]"]
    return settings.ALLOWED_HOSTS


def _trusted(origin: str) -> bool:
    """Whether `origin` is one of CSRF_TRUSTED_ORIGINS (`https://*.example.com` too),
    matched as Django's CsrfViewMiddleware matches them."""
    parsed = urlsplit(origin)
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if "*" not in trusted:
            if origin == trusted:
                return True
            continue
        wildcard = urlsplit(trusted)
        domain = wildcard.netloc.removeprefix("*")
        if parsed.scheme == wildcard.scheme and is_same_domain(parsed.netloc, domain):
            return True
    return False


def websocket_origin_allowed(scope: dict) -> bool:
    """Whether the handshake in `scope` comes from a page of this site.

    The Host must be one of ALLOWED_HOSTS (else a DNS-rebinding page, whose Origin
    and Host are both the attacker's name, would be "same origin"); the Origin must
    then equal the request's own origin or be trusted. No Origin is refused: browsers
    always send one, and other clients have API tokens.
    """
    headers = dict(scope.get("headers", []))
    origin = headers.get(b"origin", b"").decode("latin-1").strip()
    host = headers.get(b"host", b"").decode("latin-1").strip()
    domain, _ = split_domain_port(host)
    if not origin or not domain or not validate_host(domain, _allowed_hosts()):
        return False
    if _trusted(origin):
        return True
    page_scheme = _PAGE_SCHEME.get(scope.get("scheme", "ws"))
    own = page_scheme and _origin(page_scheme, host)
    parsed = urlsplit(origin)
    # An origin is scheme://host[:port] and nothing more (no user, path or query).
    bare = parsed.netloc and "@" not in parsed.netloc and not (parsed.path or parsed.query)
    claimed = bare and parsed.scheme in _DEFAULT_PORT and _origin(parsed.scheme, parsed.netloc)
    return bool(own) and claimed == own


class SameOriginValidator:
    """ASGI middleware for WebSocket scopes: a handshake from another origin is closed
    with 403 (as channels' OriginValidator does) before any consumer runs."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if websocket_origin_allowed(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
