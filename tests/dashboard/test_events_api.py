"""GET /api/v1/events/?after=<seq>: what a client that reconnects catches up from."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from commands.models import Invocation
from commands.services import schedule_create, schedule_delete, schedule_update
from coordination.services import run_start
from dashboard.selectors import event_subjects_visible
from events.models import Event
from events.services import event_emit

pytestmark = pytest.mark.django_db

User = get_user_model()


def get(user, query: str = ""):
    client = APIClient()
    client.force_authenticate(user)
    return client.get(f"/api/v1/events/{query}")


def test_events_after_a_sequence_number_in_pages_that_say_if_there_is_more():
    boss = User.objects.create_user("boss", is_staff=True)
    events = [event_emit(kind="agent.online", subject=f"agent:a{i}") for i in range(5)]

    first = get(boss, f"?after={events[0].pk}&limit=2").json()
    rest = get(boss, f"?after={first['last']}").json()

    assert [e["seq"] for e in first["results"]] == [events[1].pk, events[2].pk]
    assert first["more"] is True
    assert [e["subject"] for e in rest["results"]] == ["agent:a3", "agent:a4"]
    assert (rest["more"], rest["last"]) == (False, events[4].pk)
    assert get(boss, f"?after={events[4].pk}").json() == {
        "results": [],
        "last": events[4].pk,
        "more": False,
    }


def test_an_event_carries_its_kind_subject_data_and_time():
    boss = User.objects.create_user("boss", is_staff=True)
    event = event_emit(kind="agent.offline", subject="agent:b", data={"reason": "silent"})

    (body,) = get(boss).json()["results"]

    assert body == {
        "seq": event.pk,
        "kind": "agent.offline",
        "subject": "agent:b",
        "data": {"reason": "silent"},
        "at": event.created_at.isoformat().replace("+00:00", "Z"),
    }


def test_users_get_the_events_of_their_own_runs_and_commands_and_of_agents(make_workflow):
    ada, bob = User.objects.create_user("ada"), User.objects.create_user("bob")
    workflow = make_workflow([{"id": "a", "skill": "noop"}])
    mine = run_start(workflow=workflow, params={}, user=ada)
    theirs = run_start(workflow=workflow, params={}, user=bob)
    event_emit(kind="agent.online", subject="agent:x")
    typed = {
        user: Invocation.objects.create(user=user, source="api", text="/x", outcome="invalid")
        for user in (ada, bob)
    }
    for invocation in typed.values():
        event_emit(kind="command.invalid", subject=f"invocation:{invocation.pk}")

    subjects = {e["subject"] for e in get(ada).json()["results"]}

    assert f"run:{mine.pk}" in subjects
    assert f"run:{theirs.pk}" not in subjects
    assert f"invocation:{typed[ada].pk}" in subjects
    assert f"invocation:{typed[bob].pk}" not in subjects
    assert "agent:x" in subjects
    assert Event.objects.filter(subject=f"run:{theirs.pk}").exists()


def test_a_schedules_events_go_to_its_owner_and_to_those_who_see_all():
    ada, bob = User.objects.create_user("ada"), User.objects.create_user("bob")
    boss = User.objects.create_user("boss", is_staff=True)
    ada.user_permissions.add(Permission.objects.get(codename="execute_command"))
    ada.user_permissions.add(
        *Permission.objects.filter(codename__in=["add_periodictask", "change_periodictask",
                                                 "delete_periodictask"])
    )  # fmt: skip
    made = schedule_create(text="/hive:status", user=ada, every=60)  # the text is ada's
    schedule_update(schedule_id=made.pk, enabled=False, user=ada)
    schedule_delete(schedule_id=made.pk, user=ada)
    subject = f"schedule:{made.pk}"

    def schedule_kinds(user):
        return [e["kind"] for e in get(user).json()["results"] if e["subject"] == subject]

    everything = ["schedule.created", "schedule.disabled", "schedule.removed"]
    assert schedule_kinds(ada) == everything
    assert schedule_kinds(boss) == everything
    assert schedule_kinds(bob) == []
    # The live feed asks the same rule of the events it relays.
    assert event_subjects_visible(user=ada, subjects={subject}) == {subject}
    assert event_subjects_visible(user=bob, subjects={subject}) == set()
    created = Event.objects.get(kind="schedule.created", subject=subject)
    assert created.data == {"text": "/hive:status", "by": "ada", "owner": ada.pk}


@pytest.mark.parametrize(
    "query, field", [("?after=-1", "after"), ("?after=x", "after"), ("?limit=0", "limit")]
)
def test_a_bad_after_or_limit_is_a_400_naming_it(query, field):
    response = get(User.objects.create_user("ada"), query)

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]
