"""One Redis client per process for Hive's own keys and streams (not Celery's)."""

from functools import cache

import redis
from django.conf import settings


@cache
def redis_client() -> redis.Redis:
    # redis-py's pool notices a fork and reconnects, so prefork children can share this.
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10, decode_responses=True)
