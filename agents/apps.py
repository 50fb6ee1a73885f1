from django.apps import AppConfig
from django.conf import settings


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self) -> None:
        from agents import handlers  # noqa: F401 - registers the built-in message handlers
        from agents.skills import skills_load
        from hive_core.config import ConfigError

        # Every process knows every skill and message handler: agents run them, the web
        # and the CLI validate against them. Skill modules may register handlers too.
        try:
            skills_load(settings.HIVE_SKILL_MODULES)
        except ImportError as exc:
            raise ConfigError(f"HIVE_SKILL_MODULES: cannot import {exc.name!r}: {exc}") from None
