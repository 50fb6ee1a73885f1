"""Django admin lists every model for a superuser, and nobody else."""

import pytest
from django.urls import reverse

from agents.models import Agent
from coordination.models import Run, StepRun
from coordination.services import run_start

pytestmark = pytest.mark.django_db

MODELS = ["agents_agent", "coordination_workflow", "coordination_run", "coordination_steprun",
          "events_event"]  # fmt: skip


@pytest.mark.parametrize("model", MODELS)
def test_every_model_has_a_working_admin_page(admin_client, model, make_workflow):
    Agent.objects.create(name="a1", role="r", skills=["noop"], status="idle")
    run_start(workflow=make_workflow([{"id": "s", "skill": "noop"}]), params={})

    response = admin_client.get(reverse(f"admin:{model}_changelist"))

    assert response.status_code == 200


def test_admin_needs_a_staff_login(client):
    response = client.get(reverse("admin:agents_agent_changelist"))

    assert response.status_code == 302
    assert response.headers["location"].startswith("/admin/login/")


def test_admin_actions_cancel_runs_and_approve_steps(admin_client, make_workflow):
    gate = make_workflow([{"id": "gate", "skill": "noop", "approval": True}])
    waiting, doomed = run_start(workflow=gate, params={}), run_start(workflow=gate, params={})
    step = StepRun.objects.get(run=waiting)

    admin_client.post(
        reverse("admin:coordination_steprun_changelist"),
        {"action": "approve", "_selected_action": [step.pk]},
    )
    response = admin_client.post(
        reverse("admin:coordination_run_changelist"),
        {"action": "cancel", "_selected_action": [doomed.pk, doomed.pk]},
        follow=True,
    )

    assert StepRun.objects.get(pk=step.pk).history[0]["approved_by"] == "admin"
    assert Run.objects.get(pk=doomed.pk).state == "cancelled"
    assert f"run {doomed.pk} of {gate}" in response.content.decode()


def test_an_admin_action_that_cannot_apply_says_why(admin_client, make_workflow):
    run = run_start(workflow=make_workflow([{"id": "s", "skill": "noop"}]), params={})
    step = StepRun.objects.get(run=run)

    response = admin_client.post(
        reverse("admin:coordination_steprun_changelist"),
        {"action": "retry", "_selected_action": [step.pk]},
        follow=True,
    )

    assert "only a failed step can be retried" in response.content.decode()
