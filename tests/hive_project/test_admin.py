"""Django admin lists every model for a superuser, and nobody else."""

import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils.text import capfirst

from agents.models import Agent
from coordination import flow
from coordination.models import FlowKey, Run, StepRun
from coordination.services import run_cancel, run_start

pytestmark = pytest.mark.django_db

MODELS = ["agents_agent", "coordination_workflow", "coordination_run", "coordination_steprun",
          "coordination_flowkey", "events_event"]  # fmt: skip


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


def staff(client, *codenames: str):
    """Log `client` in as a staff user holding only `codenames` (coordination's)."""
    user = get_user_model().objects.create_user("clerk", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="coordination", codename__in=codenames)
    )
    client.force_login(user)
    return client


def test_admin_actions_pause_and_resume_runs(admin_client, make_workflow):
    workflow = make_workflow([{"id": "s", "skill": "noop"}])
    run, done = run_start(workflow=workflow, params={}), run_start(workflow=workflow, params={})
    run_cancel(run=done)
    changelist = reverse("admin:coordination_run_changelist")

    def act(action: str, *runs: Run) -> str:
        response = admin_client.post(
            changelist, {"action": action, "_selected_action": [r.pk for r in runs]}, follow=True
        )
        return response.content.decode()

    paused = act("pause", run, done)
    assert Run.objects.get(pk=run.pk).state == "paused"
    assert capfirst(f"{run}: paused") in paused  # each outcome is a message
    assert f"run {done.pk} is already cancelled: cannot pause it" in paused
    resumed = act("resume", run)
    assert Run.objects.get(pk=run.pk).state != "paused"
    assert capfirst(f"run {run.pk} of {workflow} (paused): resumed") in resumed
    assert f"run {run.pk} is {Run.objects.get(pk=run.pk).state}, not paused" in act("resume", run)


def test_a_staff_user_without_change_run_is_offered_no_pause_or_resume(client, make_workflow):
    run = run_start(workflow=make_workflow([{"id": "s", "skill": "noop"}]), params={})
    state = run.state
    client = staff(client, "view_run")
    changelist = reverse("admin:coordination_run_changelist")

    page = client.get(changelist).content.decode()
    client.post(changelist, {"action": "pause", "_selected_action": [run.pk]}, follow=True)

    assert 'value="pause"' not in page and 'value="resume"' not in page
    assert Run.objects.get(pk=run.pk).state == state


def test_an_operator_sets_a_skills_rate_limit_in_the_admin(admin_client, monkeypatch):
    add = reverse("admin:coordination_flowkey_add")

    missing = admin_client.post(add, {"key": "skill:noop", "rate_limit": "10"})
    zero = admin_client.post(add, {"key": "skill:noop", "rate_limit": "0", "rate_per": "5"})
    negative = admin_client.post(add, {"key": "skill:noop", "rate_limit": "10", "rate_per": "-1"})
    saved = admin_client.post(add, {"key": "skill:noop", "rate_limit": "10", "rate_per": "5"})

    assert "Give both rate_limit and rate_per, or neither." in missing.content.decode()
    assert "From 1 to 10000." in zero.content.decode()
    assert "More than 0, at most 86400 s." in negative.content.decode()
    assert saved.status_code == 302
    key = FlowKey.objects.get()
    assert (key.key, key.rate_limit, key.rate_per) == ("skill:noop", 10, 5)
    # Agents take it up (within OPERATOR_RATES_TTL; here at once).
    monkeypatch.setattr(flow, "_operator_rates", (-flow.OPERATOR_RATES_TTL, {}))
    assert flow.operator_rates() == {"skill:noop": (10, 5.0)}

    now = time.time()
    FlowKey.objects.filter(pk=key.pk).update(starts=[now - 9, now - 2, now - 1])
    listed = admin_client.get(reverse("admin:coordination_flowkey_changelist")).content.decode()
    change = reverse("admin:coordination_flowkey_change", args=[key.pk])
    page = admin_client.get(change).content.decode()
    assert '<td class="field-recent_starts">2</td>' in listed  # two in the last 5 s
    assert 'name="key"' not in page and 'name="rate_limit"' in page and 'name="starts"' not in page
    admin_client.post(change, {"rate_limit": "20", "rate_per": "60", "key": "skill:other"})
    assert FlowKey.objects.values_list("key", "rate_limit", "rate_per").get() == (
        "skill:noop", 20, 60,
    )  # fmt: skip


def test_a_staff_user_who_may_only_view_flow_keys_changes_none(client):
    key = FlowKey.objects.create(key="skill:noop", rate_limit=10, rate_per=5)
    client = staff(client, "view_flowkey")

    change = reverse("admin:coordination_flowkey_change", args=[key.pk])
    page = client.get(change).content.decode()
    client.post(change, {"rate_limit": "1", "rate_per": "1"})

    assert 'name="rate_limit"' not in page
    assert client.post(reverse("admin:coordination_flowkey_add"), {"key": "x"}).status_code == 403
    assert FlowKey.objects.values_list("rate_limit", "rate_per").get() == (10, 5)
