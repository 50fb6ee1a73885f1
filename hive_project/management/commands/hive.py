"""`manage.py hive ...`: every Hive process and operator command has one entry point here.

Each app owns its actions (its `cli.py`); this command only builds the parser from
them, in the order `hive --help` lists them, and dispatches.
"""

import logging

from django.conf import settings
from django.core.management.base import BaseCommand

from agents.cli import AgentAction, PingAction, SkillAction
from agents.skills import SkillError
from commands.cli import LoadAction, RunAction
from coordination.cli import CoordinatorAction, WorkflowAction
from hive_core.cli import Output, Subcommand, TokenAction
from hive_core.embedded_redis import embedded_redis_ensure, embedded_redis_stop
from hive_core.errors import HiveError
from ops.cli import FlowerAction, SetupAction, UpAction, WebAction

SUBCOMMANDS: list[Subcommand] = [
    # The processes.
    UpAction(),
    SetupAction(),
    WebAction(),
    AgentAction(),
    CoordinatorAction(),
    FlowerAction(),
    # The operator's tools.
    PingAction(),
    SkillAction(),
    WorkflowAction(),
    LoadAction(),
    RunAction(),
    TokenAction(),
]

# `hive skill` runs a skill in this process: its SkillError is the skill's failure, not
# a refusal of the request, but it is reported the same way (the message, exit 1).
REPORTED_FAILURES = (SkillError,)


class Command(BaseCommand):
    help = "Run and operate Hive; each action is described in the README (Command line)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        for subcommand in SUBCOMMANDS:
            subcommand.add_arguments(actions.add_parser(subcommand.name, help=subcommand.help))

    def handle(self, *args, action: str, **options):
        subcommand = next(s for s in SUBCOMMANDS if s.name == action)
        out = Output(stdout=self.stdout, stderr=self.stderr)
        if not subcommand.process:
            # A one-shot command prints its outcome; the events it causes are on the
            # dashboard and in the services' logs, not interleaved with its output.
            logging.getLogger("hive.events").setLevel(logging.WARNING)
        started_redis = False
        if subcommand.process and settings.REDIS_EMBEDDED:
            started_redis = embedded_redis_ensure(
                directory=settings.VAR_DIR, socket_path=settings.REDIS_EMBEDDED_SOCKET
            )
        try:
            subcommand.handle(options, out)
        except (HiveError, *REPORTED_FAILURES) as error:
            subcommand.refused(error, options, out)
        finally:
            if started_redis and subcommand.owns_embedded_redis:
                embedded_redis_stop(socket_path=settings.REDIS_EMBEDDED_SOCKET)
