"""`hive` only dispatches: each app owns its actions, and a refusal any of them
raises is reported once, by the dispatcher, as the CLI always reported one."""

import pytest
from django.core.management import CommandError, call_command

from hive_core.cli import TokenAction
from hive_core.errors import Conflict, Denied
from hive_project.management.commands.hive import SUBCOMMANDS, Command


def test_hive_lists_every_action_once_in_the_order_of_its_help():
    parser = Command().create_parser("manage.py", "hive")

    assert [s.name for s in SUBCOMMANDS] == [
        "up", "setup", "web", "agent", "coordinator", "flower",
        "ping", "skill", "workflow", "load", "run", "token",
    ]  # fmt: skip
    assert parser.parse_args(["token", "ada", "--rotate"]).action == "token"


def test_a_refusal_an_action_raises_is_its_message_with_exit_code_1(monkeypatch):
    def refuse(self, options, out):
        raise Conflict("run 7 has finished; there is nothing to cancel")

    monkeypatch.setattr(TokenAction, "handle", refuse)

    with pytest.raises(CommandError) as refused:
        call_command("hive", "token", "anyone")

    assert str(refused.value) == "run 7 has finished; there is nothing to cancel"
    assert refused.value.returncode == 1


@pytest.mark.django_db
def test_hive_run_gives_a_refused_text_the_exit_code_of_its_kind(monkeypatch, admin_user):
    from commands import cli

    def refuse(**kwargs):
        raise Denied("/deploy needs commands.execute_deploy", code="denied")

    monkeypatch.setattr(cli, "command_execute", refuse)

    with pytest.raises(CommandError) as refused:
        call_command("hive", "run", "/deploy", "--user", admin_user.username)

    assert str(refused.value) == "/deploy needs commands.execute_deploy"
    assert refused.value.returncode == 3
