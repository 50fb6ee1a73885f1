from django.apps import AppConfig


class CommandsConfig(AppConfig):
    name = "commands"

    def ready(self):
        from commands.services import command_run_check
        from coordination.services import RUN_ACTION_CHECKS

        if command_run_check not in RUN_ACTION_CHECKS:
            RUN_ACTION_CHECKS.append(command_run_check)
