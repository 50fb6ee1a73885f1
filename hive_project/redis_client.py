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
