from django.apps import AppConfig
from django.conf import settings


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self) -> None:
        from agents.skills import skills_load
        from hive_project.config import ConfigError

        # Every process knows every skill: agents run them, the web and the CLI
        # validate against them.
        try:
            skills_load(settings.HIVE_SKILL_MODULES)
        except ImportError as exc:
            raise ConfigError(f"HIVE_SKILL_MODULES: cannot import {exc.name!r}: {exc}") from None
