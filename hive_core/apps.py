from django.apps import AppConfig


class HiveCoreConfig(AppConfig):
    """What every app builds on: configuration, the database and Redis clients, JSON and
    YAML data, the API's error shape, authentication and the web process's bounds."""

    name = "hive_core"
    verbose_name = "Hive core"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_login_failed

        from hive_core.proxies import login_failed_log

        user_login_failed.connect(login_failed_log, dispatch_uid="hive.login_failed_log")
