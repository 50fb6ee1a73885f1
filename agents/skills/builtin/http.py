"""`http.request`: call an HTTP API on an allowed host."""

import json
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from agents.skills.registry import SkillContext, SkillError, SkillInputError, skill

PARAMS = {
    "type": "object",
    "properties": {
        "method": {"enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]},
        "url": {"type": "string", "pattern": "^https?://", "maxLength": 4096},
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 8192},
            "maxProperties": 100,
        },
        "json": {},
        "body": {"type": "string"},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
        "raise_for_status": {"type": "boolean"},
    },
    "required": ["url"],
    "not": {"required": ["json", "body"]},
    "additionalProperties": False,
}


def host_allowed(url: str) -> bool:
    """Is the URL's host (or host:port) on HIVE_HTTP_ALLOWED_HOSTS?"""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    allowed = {entry.lower() for entry in settings.HIVE_HTTP_ALLOWED_HOSTS}
    return host in allowed or f"{host}:{parts.port}" in allowed


@skill("http.request", params=PARAMS)
def http_request(
    ctx: SkillContext,
    *,
    url: str,
    method: str = "GET",
    headers: dict | None = None,
    json: object = None,
    body: str | None = None,
    timeout: float = 30.0,
    raise_for_status: bool = True,
) -> dict:
    """Send one HTTP request and return status, headers and body (parsed when JSON).

    Redirects are not followed: an allowed host could otherwise send the request
    on to one that is not.
    """
    if not host_allowed(url):
        raise SkillInputError(
            f"http.request: inputs.url: host {urlsplit(url).hostname!r} is not in "
            "HIVE_HTTP_ALLOWED_HOSTS"
        )
    headers = dict(headers or {})
    if ctx.idempotency_key:
        headers.setdefault("Idempotency-Key", ctx.idempotency_key)
    limit = settings.HIVE_HTTP_MAX_RESPONSE_BYTES
    try:
        with httpx.stream(
            method, url, headers=headers, timeout=timeout, follow_redirects=False,
            **({"json": json} if json is not None else {"content": body}),
        ) as response:  # fmt: skip
            content = _read_limited(response, limit)
    except httpx.TimeoutException:
        raise SkillError(f"http.request: {method} {url} timed out after {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise SkillError(f"http.request: {method} {url} failed: {exc}") from None
    result = {
        "status": response.status_code,
        "headers": dict(response.headers),
        "body": _decode(content, response.headers.get("content-type", "")),
    }
    if raise_for_status and response.status_code >= 400:
        # Server trouble and rate limits may pass; other client errors will not.
        retryable = response.status_code >= 500 or response.status_code in {408, 429}
        raise SkillError(
            f"http.request: {method} {url} answered {response.status_code}", retryable=retryable
        )
    return result


def _read_limited(response: httpx.Response, limit: int) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise SkillError(
                f"http.request: the response is larger than HIVE_HTTP_MAX_RESPONSE_BYTES "
                f"({limit} bytes)",
                retryable=False,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(content: bytes, content_type: str) -> object:
    text = content.decode("utf-8", errors="replace")
    if "json" in content_type:
        try:
            return json.loads(text)
        except ValueError:
            pass  # a server that mislabels its body: hand back the text
    return text
