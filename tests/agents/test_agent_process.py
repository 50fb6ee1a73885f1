"""The walking skeleton: real `hive agent` worker processes on real Redis and the database."""

import signal

import pytest
from django.core.management import CommandError, call_command

from agents.models import Agent

pytestmark = pytest.mark.django_db(transaction=True)


def test_agent_registers_itself_with_its_identity(start_agent):
    process = start_agent("alpha", role="builder", skills="noop,http.request", concurrency=2)

    agent = Agent.objects.get(name="alpha")
    assert (agent.role, agent.skills, agent.concurrency) == ("builder", ["noop", "http.request"], 2)
    assert (agent.status, agent.pid) == ("idle", process.pid)
    assert agent.host and agent.version and agent.last_heartbeat


def test_ping_reaches_the_agent_through_redis_and_reports_the_round_trip(start_agent, capsys):
    start_agent("pinged")

    call_command("hive", "ping", "--agent=pinged")

    out = capsys.readouterr().out
    assert out.startswith("pong from pinged@"), out
    assert out.rstrip().endswith(" ms")


def test_ping_goes_only_to_the_named_agent(start_agent, capsys):
    start_agent("one")
    start_agent("two")

    for _ in range(5):
        call_command("hive", "ping", "--agent=two")

    replies = capsys.readouterr().out.splitlines()
    assert len(replies) == 5 and all(r.startswith("pong from two@") for r in replies)


def test_ping_of_an_unknown_agent_names_it():
    with pytest.raises(CommandError, match="--agent: no agent named 'ghost' is registered"):
        call_command("hive", "ping", "--agent=ghost")


def test_ping_of_a_stopped_agent_times_out_with_its_status(start_agent):
    process = start_agent("gone")
    process.stop()

    with pytest.raises(
        CommandError, match=r"no reply from agent 'gone' within 1 s \(status: offline\)"
    ):
        call_command("hive", "ping", "--agent=gone", "--timeout=1")


def test_clean_shutdown_marks_the_agent_offline(start_agent):
    process = start_agent("leaving")

    process.signal(signal.SIGTERM)
    process.proc.wait(timeout=30)

    assert Agent.objects.get(name="leaving").status == "offline"


def test_harness_cleans_up_a_sigkilled_agent_and_its_pool(start_agent):
    process = start_agent("doomed", concurrency=2)
    assert len(process.group_members_now()) >= 3  # the worker and its two pool processes

    process.signal(signal.SIGKILL)
    process.proc.wait(timeout=10)
    process.stop()

    assert process.group_members_now() == []
    # Killed without warning, it could not say goodbye; the coordinator's reaper must.
    assert Agent.objects.get(name="doomed").status == "idle"


def test_an_agent_restarted_under_the_same_name_takes_its_row_back(start_agent):
    first = start_agent("phoenix")
    row_id = Agent.objects.get(name="phoenix").pk
    first.signal(signal.SIGKILL)
    first.proc.wait(timeout=10)
    first.stop()

    second = start_agent("phoenix")

    agent = Agent.objects.get(name="phoenix")
    assert (agent.pk, agent.pid, agent.status) == (row_id, second.pid, "idle")
