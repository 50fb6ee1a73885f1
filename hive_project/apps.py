from django.apps import AppConfig


class HiveProjectConfig(AppConfig):
    """The project package is an app too: it hosts the `hive` management command."""

    name = "hive_project"
    verbose_name = "Hive"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_login_failed

        from hive_project.proxies import login_failed_log

        user_login_failed.connect(login_failed_log, dispatch_uid="hive.login_failed_log")
