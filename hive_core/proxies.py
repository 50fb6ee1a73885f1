"""Who the client is and which scheme it used, behind proxies Hive was told to trust.

daphne's --proxy-headers believed `X-Forwarded-For` and `X-Forwarded-Proto` from
anyone: a client sending `X-Forwarded-For: 1.2.3.4` was 1.2.3.4 to every limit keyed
by address, and `X-Forwarded-Proto: https` made plain HTTP look secure. daphne has no
list of trusted peers, so Hive reads the headers itself, only from HIVE_TRUSTED_PROXIES.
"""

import ipaddress
import logging

from django.conf import settings

logger = logging.getLogger("hive.auth")

_SCHEMES = {"http": {"http", "https"}, "websocket": {"ws", "wss"}}
_SECURE = {"http": "https", "websocket": "wss"}


def _address(text: str):
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def _trusted(address, networks) -> bool:
    return address is not None and any(address in network for network in networks)


def proxy_scope_resolve(scope: dict, *, networks: tuple) -> dict:
    """`scope` with the client and scheme the trusted proxies forwarded, else unchanged.

    The forwarded-for list is read from the right: each hop a trusted proxy appended
    is skipped, and the first address that is not a trusted proxy is the client (what
    a client wrote itself, further left, is never believed).
    """
    client = scope.get("client")
    if not networks or not client or not _trusted(_address(client[0]), networks):
        return scope
    headers = {}
    for name, value in scope.get("headers", []):
        headers.setdefault(name.lower(), []).append(value.decode("latin-1"))
    changes = {}
    hops = [hop for value in headers.get(b"x-forwarded-for", []) for hop in value.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage from further left: keep the last hop we could believe
        changes["client"] = [str(address), 0]
        if not _trusted(address, networks):
            break
    proto = [p.strip().lower() for v in headers.get(b"x-forwarded-proto", []) for p in v.split(",")]
    if proto and proto[-1] in {"https", "wss"}:
        changes["scheme"] = _SECURE[scope["type"]]
    elif proto and proto[-1] in {"http", "ws"}:
        changes["scheme"] = "http" if scope["type"] == "http" else "ws"
    return {**scope, **changes} if changes else scope


class TrustedProxyMiddleware:
    """ASGI middleware applying proxy_scope_resolve to HTTP and WebSocket scopes."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in _SCHEMES:
            scope = proxy_scope_resolve(scope, networks=settings.HIVE_TRUSTED_PROXIES)
        return await self.app(scope, receive, send)


def login_failed_log(sender, credentials: dict, request=None, **kwargs) -> None:
    """A failed login, with the address it came from (for fail2ban and the like).

    Connected to `user_login_failed`; the username is printed with repr so that a
    newline in it cannot forge a log line.
    """
    address = request.META.get("REMOTE_ADDR", "?") if request is not None else "?"
    logger.warning("login failed for %r from %s", credentials.get("username", ""), address)
