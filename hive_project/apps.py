from django.apps import AppConfig


class HiveProjectConfig(AppConfig):
    """The project package is an app too: it hosts the `hive` management command."""

    name = "hive_project"
    verbose_name = "Hive"
