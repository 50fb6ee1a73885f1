from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Running Hive: the process stack (`hive up`), health checks, Prometheus metrics
    and Flower's guard."""

    name = "ops"
    verbose_name = "Operations"
