"""The commands API's lists run the same number of queries for 1 item as for 50."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from commands.models import Invocation
from commands.services import commands_load
from coordination.models import Run, StepRun
from coordination.services import run_start

pytestmark = pytest.mark.django_db


def queries(user, path: str) -> int:
    client = APIClient()
    client.force_authenticate(user)
    client.get(path)  # the first request warms the caches
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200, response.content
    return len(captured)


def invocation(user, workflow) -> None:
    run = run_start(workflow=workflow, params={}, user=user)
    Run.objects.filter(pk=run.pk).update(state="succeeded")
    StepRun.objects.filter(run=run).update(state="succeeded", output={"ok": True})
    Invocation.objects.create(
        user=user, source="api", text="/x", outcome="started", command_name="x", run=run
    )


def test_the_invocations_list_reads_a_page_of_runs_and_outputs_at_once(users, make_workflow):
    admin = users["admin"]
    workflow = make_workflow([{"id": "a", "skill": "noop"}, {"id": "b", "skill": "noop"}])
    invocation(admin, workflow)
    one = queries(admin, "/api/v1/commands/invocations/")
    for _ in range(49):
        invocation(admin, workflow)

    assert queries(admin, "/api/v1/commands/invocations/") == one


def test_the_commands_list_reads_every_command_at_once(users, definitions):
    admin = users["admin"]
    definitions("one.md", "---\ndescription: one\nworkflow: {steps: [{id: a, skill: noop}]}\n---\n")
    commands_load()
    one = queries(admin, "/api/v1/commands/")
    for i in range(50):
        definitions(f"ns/c{i}.md", "---\nworkflow: {steps: [{id: a, skill: noop}]}\n---\n")
    commands_load()

    assert queries(admin, "/api/v1/commands/?limit=100") == one
