"""Django admin lists every model for a superuser, and nobody else."""

import pytest
from django.urls import reverse

from agents.models import Agent
from coordination.services import run_start

pytestmark = pytest.mark.django_db

MODELS = ["agents_agent", "coordination_workflow", "coordination_run", "coordination_steprun",
          "dashboard_event"]  # fmt: skip


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
