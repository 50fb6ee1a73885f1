"""Structured logs: one JSON line per state change, naming run, step, agent and
attempt, so a run can be followed across the processes that worked on it."""

import json
import logging

import pytest

from coordination.services import run_start
from hive_core.logs import JsonFormatter
from tests.processes import wait_for
from tests.runs import wait_run


def json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            lines.append(entry)
    return lines


def test_the_json_formatter_writes_one_object_with_the_extra_fields():
    record = logging.makeLogRecord(
        {"name": "hive.events", "levelname": "INFO", "levelno": 20, "msg": "step.running %s",
         "args": ("run=3",), "run": 3, "step": "build", "agent": "a1", "attempt": 2}
    )  # fmt: skip

    line = JsonFormatter().format(record)

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "step.running run=3"
    assert {k: entry[k] for k in ("level", "logger", "run", "step", "agent", "attempt")} == {
        "level": "INFO", "logger": "hive.events", "run": 3, "step": "build", "agent": "a1",
        "attempt": 2,
    }  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_a_run_can_be_followed_across_agents_in_json_logs(start_agents, make_workflow):
    first, second = start_agents(
        {"name": "logger-a", "skills": "sleep", "HIVE_LOG_FORMAT": "json"},
        {"name": "logger-b", "skills": "noop", "HIVE_LOG_FORMAT": "json"},
    )
    workflow = make_workflow(
        [
            {"id": "wait", "skill": "sleep", "with": {"seconds": 0.1}},
            {"id": "done", "skill": "noop", "needs": "wait"},
        ]
    )

    run = wait_run(run_start(workflow=workflow, params={}))
    assert run.state == "succeeded"

    def events_of_run():
        logs = json_lines(first.log()) + json_lines(second.log())
        found = [e for e in logs if e.get("logger") == "hive.events" and e.get("run") == run.pk]
        return found if len(found) >= 5 else None

    events = wait_for(events_of_run, timeout=10, what="the run's events in the agents' logs")
    seen = {(e["event"], e.get("step"), e.get("agent"), e.get("attempt")) for e in events}
    assert {
        ("step.running", "wait", "logger-a", 1),
        ("step.succeeded", "wait", "logger-a", 1),
        ("step.running", "done", "logger-b", 1),
        ("step.succeeded", "done", "logger-b", 1),
        ("run.succeeded", None, None, None),  # written by the agent that finished it
    } <= seen
    for entry in events:
        assert entry["level"] == "INFO" and isinstance(entry["seq"], int)
    # Celery's own lines go through the same formatter, not its text format.
    assert any(e["logger"].startswith("celery") for e in json_lines(first.log()))
