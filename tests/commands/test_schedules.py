"""Schedules: the coordinator's beat (django-celery-beat's DatabaseScheduler) fires a
command every second as its owner, each firing audited as `schedule`, and disabling
the schedule stops it."""

import time

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from rest_framework.test import APIClient

from commands.models import Invocation
from commands.services import CommandFailure, command_execute, commands_load
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tick(definitions):
    definitions(
        "tick.md",
        """
        ---
        params: {n: {type: integer}}
        workflow: {steps: [{id: tock, skill: noop, with: {n: "{{ params.n }}"}}]}
        ---
    """,
    )
    commands_load(paths=[definitions.root])


def test_a_schedule_every_second_starts_audited_runs_until_disabled(
    tick, users, start_agent, coordinator
):
    start_agent("ticker", skills="noop")
    added = command_execute(
        text='/hive:schedule add "/tick n=7" every=1 name=ticking', user=users["admin"],
        source="cli",
    )  # fmt: skip
    schedule = added.output["schedule"]
    assert added.output["message"] == f"schedule {schedule}: /tick n=7 every 1 s"

    scheduled = Invocation.objects.filter(source="schedule", schedule="ticking")
    wait_for(lambda: scheduled.filter(run__state="succeeded").count() >= 3, timeout=60,
             what="three scheduled runs to succeed")  # fmt: skip
    first = scheduled.order_by("id").first()
    assert (first.text, first.user.username, first.outcome, first.schedule) == (
        "/tick n=7",
        "admin",
        "started",
        "ticking",
    )
    assert first.run.params["n"] == 7

    command_execute(text=f"/hive:schedule disable {schedule}", user=users["admin"], source="cli")
    # The beat re-reads the schedules it was told changed within 5 s, and first writes
    # the firings it counted to their rows (django-celery-beat's sync): from then on
    # it fires this one no more. The last firing may still be on its way.
    fired = wait_for(
        lambda: PeriodicTask.objects.get(pk=schedule).total_run_count, timeout=30,
        what="the beat to reload the schedules",
    )  # fmt: skip
    wait_for(lambda: scheduled.count() >= fired, timeout=30, what=f"{fired} scheduled runs")
    settled = scheduled.count()
    time.sleep(4)
    assert scheduled.count() == settled


def test_schedules_through_the_api_are_checked_as_the_creator(tick, users):
    client = APIClient()
    client.force_authenticate(users["admin"])

    bad = client.post("/api/v1/commands/schedules/", {"text": "/tick n=x", "every": 60},
                      format="json")  # fmt: skip
    neither = client.post("/api/v1/commands/schedules/", {"text": "/tick n=1"}, format="json")
    made = client.post("/api/v1/commands/schedules/",
                       {"text": "/tick n=1", "cron": "*/5 * * * 1-5"}, format="json")  # fmt: skip

    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == "text: n: 'x' is not of type 'integer'"
    assert neither.json()["error"]["message"] == (
        "non_field_errors: give every=<seconds> or cron=<minute hour day month weekday>, one"
    )
    assert made.status_code == 201, made.content
    row = made.json()
    assert (row["text"], row["when"], row["enabled"]) == ("/tick n=1", "cron */5 * * * 1-5", True)
    patched = client.patch(f"/api/v1/commands/schedules/{row['id']}/", {"enabled": False},
                           format="json")  # fmt: skip
    assert patched.json()["enabled"] is False
    assert [s["id"] for s in client.get("/api/v1/commands/schedules/").json()] == [row["id"]]
    assert client.delete(f"/api/v1/commands/schedules/{row['id']}/").status_code == 204
    assert client.get("/api/v1/commands/schedules/").json() == []
    # Only users who may manage periodic tasks may schedule.
    client.force_authenticate(users["ada"])
    assert client.post("/api/v1/commands/schedules/", {"text": "/tick n=1", "every": 5},
                       format="json").status_code == 403  # fmt: skip
    assert not Invocation.objects.exists()  # checking a schedule's text is no invocation


@pytest.mark.parametrize("typed", ["²", "{arabic_indic}", "1" * 19])
def test_a_schedule_id_that_is_not_ascii_digits_is_a_400_pointing_at_it(tick, users, typed):
    client = APIClient()
    client.force_authenticate(users["admin"])
    made = client.post("/api/v1/commands/schedules/", {"text": "/tick n=1", "every": 60},
                       format="json").json()  # fmt: skip
    # The schedule's own id in other digits: str.isdigit() took them, int() read them.
    typed = typed.format(arabic_indic=str(made["id"]).translate(str.maketrans("0123456789",
                                                                "٠١٢٣٤٥٦٧٨٩")))  # fmt: skip
    text = f"/hive:schedule remove {typed}"

    response = client.post("/api/v1/commands/execute", {"text": text}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["message"] == f"target: '{typed}' does not match '^[0-9]{{1,18}}$'"
    assert error["fields"]["text"] == [
        f"{text}\n{' ' * text.index(typed)}{'^' * len(typed)} {error['message']}"
    ]
    assert list(error["fields"]) == ["target", "text"]
    assert client.get(f"/api/v1/commands/schedules/{made['id']}/").json()["enabled"] is True


def test_a_schedule_name_taken_is_a_400_naming_the_field_and_makes_nothing(tick, users):
    client = APIClient()
    client.force_authenticate(users["admin"])
    body = {"text": "/tick n=1", "every": 60, "name": "dup"}
    first = client.post("/api/v1/commands/schedules/", body, format="json")

    again = client.post("/api/v1/commands/schedules/", {**body, "every": 61}, format="json")
    with pytest.raises(CommandFailure) as typed:
        command_execute(text="/hive:schedule add '/tick n=2' every=62 name=dup",
                        user=users["admin"], source="cli")  # fmt: skip

    assert first.status_code == 201
    assert again.status_code == 400
    assert again.json()["error"]["fields"] == {"name": ["a schedule named 'dup' exists already"]}
    assert (typed.value.code, str(typed.value)) == (
        "failed", "name: a schedule named 'dup' exists already"
    )  # fmt: skip
    assert [s["id"] for s in client.get("/api/v1/commands/schedules/").json()] == [
        first.json()["id"]
    ]
    assert not IntervalSchedule.objects.filter(every__in=[61, 62]).exists()


def test_the_schedule_list_shows_when_each_last_ran(tick, users):
    admin = users["admin"]
    command_execute(text="/hive:schedule add '/tick n=1' every=60 name=ran", user=admin,
                    source="cli")  # fmt: skip
    PeriodicTask.objects.filter(name="ran").update(last_run_at=timezone.now())

    listed = command_execute(text="/hive:schedule list", user=admin, source="cli")

    (row,) = listed.output["schedules"]
    assert (row["name"], row["last_run_at"][:4]) == ("ran", str(timezone.now().year))
