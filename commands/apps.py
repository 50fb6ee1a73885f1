from django.apps import AppConfig
from django.apps import apps as global_apps
from django.db.models.signals import post_migrate


class CommandsConfig(AppConfig):
    name = "commands"

    def ready(self):
        from commands import builtins  # noqa: F401 - registers /hive:* in commands.registry
        from commands.executing import command_run_check, invocations_dequeue
        from coordination.leadership import leader_passes
        from coordination.services import RUN_ACTION_CHECKS

        if command_run_check not in RUN_ACTION_CHECKS:
            RUN_ACTION_CHECKS.append(command_run_check)
        post_migrate.connect(builtins_migrated, sender=self)
        # Commands with `overlap: queue` waiting for a run with their key to end.
        leader_passes.register("queued commands", invocations_dequeue)


def builtins_migrated(sender, *, apps=global_apps, **kwargs) -> None:
    """Every migrate (`hive setup`'s, a test database's) and flush (after a test that
    commits; it passes no `apps`) makes the built-ins rows, so they are listed and run
    on a database no definition was ever loaded into; reading them never writes."""
    from commands.loading import builtins_sync
    from commands.models import Command

    try:
        migrated = apps.get_model("commands", "Command")
    except LookupError:
        return  # migrated back below the commands app's first migration
    if {f.column for f in migrated._meta.fields} != {f.column for f in Command._meta.fields}:
        return  # migrated to an older Command table than the code's
    builtins_sync()
