"""The `hive` command line's shared parts, and `hive token`.

Each app owns its subcommands (agents/cli.py, coordination/cli.py, commands/cli.py,
ops/cli.py, and `TokenAction` below); `hive_project`'s `hive` command builds the
parser from them and dispatches. A subcommand raises the services' refusals as they
come: the dispatcher catches `HiveError` once and hands it to the subcommand's
`refused`, which reports it as the CLI always has (its message, exit code 1).
"""

import json
from dataclasses import dataclass
from typing import NoReturn

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, OutputWrapper

from hive_core.services import token_rotate


@dataclass(frozen=True)
class Output:
    """Where a subcommand prints: its outcome on stdout, what went wrong on stderr."""

    stdout: OutputWrapper
    stderr: OutputWrapper

    def write(self, text: str) -> None:
        self.stdout.write(text)


class Subcommand:
    """One `hive` action: `hive <name> ...`, listed with `help` in `hive --help`."""

    name: str = ""
    help: str = ""
    # A long-running process: it starts the embedded Redis if it is not up yet, and
    # logs every event it publishes. A one-shot command prints only its outcome.
    process: bool = False
    # Stops the embedded Redis it started when it exits (`hive up`: Ctrl-C stops it too).
    owns_embedded_redis: bool = False

    def add_arguments(self, parser) -> None:
        """Add this action's options to its parser (none by default)."""

    def handle(self, options: dict, out: Output) -> None:
        raise NotImplementedError

    def refused(self, error: Exception, options: dict, out: Output) -> NoReturn:
        """Report a refusal a service raised: its message, exit code 1."""
        raise CommandError(str(error)) from None


def json_dumps(value: object) -> str:
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


class TokenAction(Subcommand):
    name = "token"
    help = "Print the API token of a user (created if needed)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("user", help="Username.")
        parser.add_argument(
            "--rotate", action="store_true", help="Replace it with a new one (the old one stops)."
        )

    def handle(self, options: dict, out: Output) -> None:
        from rest_framework.authtoken.models import Token

        user = options["user"]
        account = get_user_model().objects.filter(username=user).first()
        if account is None:
            raise CommandError(f"user: no user named {user!r}")
        if options["rotate"]:
            token = token_rotate(user=account)
        else:
            token, _ = Token.objects.get_or_create(user=account)
        out.write(token.key)
