"""The dashboard's pages as the server renders them: login, the hooks the browser
tests and scripts rely on, 404s for runs a user may not see, the live parts alone."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from agents.models import Agent
from coordination.models import Run, StepRun
from dashboard.dag import dag_layout
from events.models import Event
from events.services import event_emit

pytestmark = pytest.mark.django_db

PAGES = ["/", "/agents/", "/runs/", "/messages/", "/console/"]


@pytest.fixture
def run(make_workflow, admin_user):
    workflow = make_workflow(
        [
            {"id": "plan", "skill": "noop"},
            {"id": "build", "skill": "noop", "needs": ["plan"]},
            {"id": "test", "skill": "noop", "needs": ["plan"]},
            {"id": "ship", "skill": "noop", "needs": ["build", "test"], "approval": True},
        ]
    )
    run = Run.objects.create(workflow=workflow, state="running", created_by=admin_user)
    StepRun.objects.create(run=run, step_id="plan", key="plan", skill="noop", state="succeeded",
                           agent="a1", tries=1, output={"ok": True})  # fmt: skip
    StepRun.objects.create(run=run, step_id="build", key="build", skill="noop", state="failed",
                           error="build: boom", tries=2)  # fmt: skip
    StepRun.objects.create(run=run, step_id="test", key="test", skill="noop", state="running")
    StepRun.objects.create(run=run, step_id="ship", key="ship", skill="noop", state="waiting",
                           waiting_reason="approval")  # fmt: skip
    return run


@pytest.mark.parametrize("page", [*PAGES, "/runs/1/"])
def test_every_page_needs_a_login(client, page):
    response = client.get(page)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_its_live_script(admin_client, page):
    body = admin_client.get(page).content.decode()
    assert "dashboard/live.js" in body and 'name="csrf-token"' in body


def test_the_old_console_address_redirects(admin_client):
    assert admin_client.get("/commands/").headers["Location"] == "/console/"
    assert admin_client.get("/commands/deploy/").headers["Location"] == "/console/deploy/"


def test_the_run_page_draws_each_step_with_its_state_and_actions(admin_client, run):
    body = admin_client.get(f"/runs/{run.pk}/").content.decode()
    assert 'data-run-state="running"' in body
    for key, state in [("plan", "succeeded"), ("build", "failed"), ("test", "running"),
                       ("ship", "waiting")]:  # fmt: skip
        assert f'data-step-id="{key}" data-state="{state}"' in body
    assert "build: boom" in body
    assert f'data-url="/api/v1/runs/{run.pk}/steps/build/retry/"' in body
    assert f'data-url="/api/v1/runs/{run.pk}/steps/ship/approve/"' in body
    assert f'data-url="/api/v1/runs/{run.pk}/cancel/"' in body


def test_the_live_part_comes_alone(admin_client, run):
    body = admin_client.get(f"/runs/{run.pk}/?partial=1").content.decode()
    assert 'data-step-id="plan"' in body and "<html" not in body


def test_a_run_page_is_a_404_when_missing_or_not_the_users(client, run):
    bob = get_user_model().objects.create_user("bob", password="pw")
    client.force_login(bob)
    assert client.get(f"/runs/{run.pk}/").status_code == 404
    assert client.get("/runs/999999/").status_code == 404
    assert client.get("/runs/" + "9" * 30 + "/").status_code == 404
    assert f'data-run-id="{run.pk}"' not in client.get("/runs/").content.decode()


def test_the_runs_list_filters_and_ignores_bad_filters(admin_client, run):
    assert f'data-run-id="{run.pk}"' in admin_client.get("/runs/?state=running").content.decode()
    assert f'data-run-id="{run.pk}"' not in admin_client.get("/runs/?state=failed").content.decode()
    bad = admin_client.get("/runs/?state=bogus")
    assert bad.status_code == 200 and "Ignored: state" in bad.content.decode()


def test_agent_cards_carry_status_and_controls(admin_client):
    Agent.objects.create(name="a1", role="builder", skills=["noop"], status="idle")
    Agent.objects.create(name="a2", role="builder", skills=["noop"], status="draining")
    body = admin_client.get("/agents/").content.decode()
    assert 'data-agent="a1" data-status="idle"' in body
    assert 'data-url="/api/v1/agents/a1/drain/"' in body
    assert 'data-url="/api/v1/agents/a2/resume/"' in body


def test_the_dag_is_laid_out_in_layers(run):
    steps = list(run.steps.all())
    layout = dag_layout(run.workflow.spec["steps"], steps)
    layers = {node.id: node.layer for node in layout.nodes}
    assert layers == {"plan": 0, "build": 1, "test": 1, "ship": 2}
    assert {(e.source.id, e.target.id) for e in layout.edges} == {
        ("plan", "build"),
        ("plan", "test"),
        ("build", "ship"),
        ("test", "ship"),
    }
    assert len({(n.x, n.y) for n in layout.nodes}) == 4  # no two nodes on one place


def test_every_link_of_the_menu_leads_to_a_page(admin_client):
    menu = admin_client.get("/").content.decode().split("<nav>")[1].split("</nav>")[0]
    links = re.findall(r'href="(/[^"]*)"', menu)

    assert "/api/docs/" in links
    for link in links:
        assert admin_client.get(link).status_code == 200, link


def test_throughput_counts_every_recent_step_and_times_the_newest(run, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from coordination import selectors

    now = timezone.now()
    for seconds in (1, 2, 30):  # each took `seconds`; the 30 s one finished first
        finished = now - timedelta(seconds=2 * seconds)
        StepRun.objects.create(run=run, step_id="x", key=f"x{seconds}", skill="noop",
                               state="succeeded", finished_at=finished,
                               queued_at=finished - timedelta(seconds=seconds))  # fmt: skip
    monkeypatch.setattr(selectors, "THROUGHPUT_SAMPLE", 2)

    figures = selectors.step_throughput(minutes=5)

    assert (figures["finished"], figures["per_minute"]) == (3, 0.6)
    assert (figures["p50"], figures["p95"]) == (2.0, 2.0)


def test_the_overview_shows_each_restarted_process_by_its_last_word(admin_client):
    def restarted(name, restarts, flapping):
        event_emit(kind="process.restarted", subject=f"process:{name}",
                   data={"process": name, "status": 1, "exit": "exit 1", "restarts": restarts,
                         "delay": 2, "flapping": flapping})  # fmt: skip

    restarted("flower", 3, False)
    restarted("flower", 4, True)
    restarted("web", 1, False)
    event_emit(kind="process.stopped", subject="process:agent.spare",
               data={"process": "agent.spare", "status": 0, "exit": "exit 0"})  # fmt: skip
    restarted("coordinator", 1, False)
    Event.objects.filter(subject="process:coordinator").update(
        created_at=timezone.now() - timedelta(hours=2)
    )

    body = admin_client.get("/?partial=1").content.decode()

    shown = dict(re.findall(r'data-process="([^"]+)" data-process-state="([^"]+)"', body))
    # An hour-old restart is history, not news: the coordinator is not listed.
    assert shown == {"agent.spare": "stopped", "flower": "flapping", "web": "restarted"}
    assert "4 restarts · last exit 1" in body


def test_the_run_page_shows_flow_control_and_why_each_step_waits(admin_client, run):
    deadline = timezone.now() + timedelta(hours=1)
    Run.objects.filter(pk=run.pk).update(
        priority=7, deadline=deadline, concurrency_key="release:prod"
    )
    StepRun.objects.filter(run=run, key="test").update(
        state="pending", concurrency_key="deploy:prod", rate_key="llm:big",
        waiting_reason="waiting for capacity: deploy:prod 1/1",
    )  # fmt: skip

    body = admin_client.get(f"/runs/{run.pk}/").content.decode()

    assert "<b data-run-priority>7</b>" in body
    assert f'datetime="{deadline.isoformat()}"' in body
    assert "<code data-run-concurrency-key>release:prod</code>" in body
    assert '<small data-step-waiting="test">waiting for capacity: deploy:prod 1/1</small>' in body
    assert 'data-step-id="test" data-state="pending" data-waiting' in body
    assert "concurrency <code>deploy:prod</code>" in body and "rate <code>llm:big</code>" in body
    assert f'data-url="/api/v1/runs/{run.pk}/pause/"' in body
    assert "/resume/" not in body and "data-run-waiting" not in body


def test_a_paused_run_offers_resume_and_says_who_paused_it(admin_client, run):
    Run.objects.filter(pk=run.pk).update(state="paused", waiting_reason="paused by admin")

    body = admin_client.get(f"/runs/{run.pk}/").content.decode()

    assert 'data-run-state="paused"' in body and '<span class="state paused"' in body
    assert '<p class="waiting" data-run-waiting>paused by admin</p>' in body
    assert f'data-url="/api/v1/runs/{run.pk}/resume/"' in body
    assert "/pause/" not in body


@pytest.mark.parametrize(
    ("permissions", "actions"),
    [
        ([], set()),
        (["change_run"], {"pause", "cancel"}),
        (["change_steprun", "approve_steprun"], {"retry", "approve", "reject"}),
    ],
)
def test_the_run_page_offers_only_the_actions_the_user_may_take(client, run, permissions, actions):
    from django.contrib.auth.models import Permission

    bob = get_user_model().objects.create_user("bob", password="pw")
    bob.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    Run.objects.filter(pk=run.pk).update(created_by=bob)  # so bob sees it
    client.force_login(bob)

    body = client.get(f"/runs/{run.pk}/").content.decode()

    assert set(re.findall(r'data-action="(\w+)"', body)) == actions
