"""Writes of the commands app, its public API; each concern is a module of its own:

- `loading`: definition files and the built-ins into the Command table (`hive load`);
- `executing`: `command_execute`, the one way a command runs, and queued invocations;
- `planning`: a dry run's plan, starting nothing;
- `schedules`: commands run on a schedule, as their owner.
"""

from commands.errors import CommandFailure, ScheduleDenied, ScheduleError
from commands.executing import (
    command_execute,
    command_resolve,
    command_run_check,
    invocations_dequeue,
    overlap_key,
)
from commands.loading import Change, builtins_sync, command_save, commands_load
from commands.planning import command_plan
from commands.schedules import (
    schedule_check,
    schedule_create,
    schedule_delete,
    schedule_saved,
    schedule_text_check,
    schedule_update,
    scheduled_execute,
)

__all__ = [
    "Change",
    "CommandFailure",
    "ScheduleDenied",
    "ScheduleError",
    "builtins_sync",
    "command_execute",
    "command_plan",
    "command_resolve",
    "command_run_check",
    "command_save",
    "commands_load",
    "invocations_dequeue",
    "overlap_key",
    "schedule_check",
    "schedule_create",
    "schedule_delete",
    "schedule_saved",
    "schedule_text_check",
    "schedule_update",
    "scheduled_execute",
]
