"""One Redis client per process for Hive's own keys and streams (not Celery's)."""

from functools import cache

import redis
from django.conf import settings


@cache
def redis_client() -> redis.Redis:
    # redis-py's pool notices a fork and reconnects, so prefork children can share this.
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10, decode_responses=True)


@cache
def redis_blocking_client() -> redis.Redis:
    # For blocking reads (XREAD BLOCK of a reply): redis-py's 5 s default socket
    # timeout, or the 10 s above, would cut a longer wait short (DESIGN.md, pitfalls).
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=None, decode_responses=True)


def redis_probe_client() -> redis.Redis:
    """A fresh connection with short timeouts, for health checks and metrics: a paused
    (SIGSTOPped) Redis would hold a pooled client for its full socket timeout, longer
    than a probe or a scraper waits. Close it after use."""
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2, decode_responses=True
    )
