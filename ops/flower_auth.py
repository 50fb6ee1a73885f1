"""Flower's own exemptions from its basic auth, closed before `hive flower` serves."""

import tornado.web
from flower.views import monitor


def flower_metrics_protect() -> None:
    """Put Flower's `/metrics` behind the same basic auth as every other page.

    Flower 2.2 decorates each page and API handler with `tornado.web.authenticated`
    but not `Metrics`, so anyone reaching the port read ~200 Prometheus series naming
    every worker's host and every task. `/healthcheck` stays open for probes: it
    answers "OK" and nothing else.
    """
    get = monitor.Metrics.get
    if not hasattr(get, "__wrapped__"):  # idempotent: tests and `hive up` may call twice
        monitor.Metrics.get = tornado.web.authenticated(get)
