"""The notifications API: a user manages their own subscriptions and reads their own
deliveries, staff every one; bad input is a 400 naming the field."""

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from notifications.models import Delivery, Subscription

pytestmark = pytest.mark.django_db

SUBSCRIPTIONS = "/api/v1/notifications/subscriptions/"


def client_of(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def ada():
    return User.objects.create_user("ada", email="ada@example.com")


@pytest.fixture
def bob():
    return User.objects.create_user("bob", email="bob@example.com")


def test_a_user_subscribes_themselves_and_sees_only_their_own(ada, bob):
    body = {"workflow": "release", "outcomes": ["failed", "waiting"], "email": True}
    answer = client_of(ada).post(SUBSCRIPTIONS, body, format="json")

    assert answer.status_code == 201, answer.json()
    assert answer.json()["user"] == "ada"
    Subscription.objects.create(user=bob, outcomes=["failed"], email=True)
    listed = client_of(ada).get(SUBSCRIPTIONS).json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [s["user"] for s in rows] == ["ada"]
    assert "webhook_secret" not in rows[0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"outcomes": ["exploded"], "email": True}, "outcomes"),
        ({"outcomes": [], "email": True}, "outcomes"),
        ({"outcomes": ["failed"], "webhook_url": "ftp://x.example/", "webhook_secret": "s"},
         "webhook_url"),
        ({"outcomes": ["failed"], "webhook_url": "https://x.example/"}, "webhook_secret"),
        ({"outcomes": ["failed"]}, "email"),
        ({"outcomes": ["failed"], "email": True, "user": "bob"}, "user"),
        ({"outcomes": ["failed"], "email": True, "group": "team"}, "user"),
        ({"outcomes": ["failed"], "email": True, "command": "no-such"}, "command"),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_naming_the_field(ada, bob, body, field):
    Group.objects.create(name="team")
    answer = client_of(ada).post(SUBSCRIPTIONS, body, format="json")

    assert answer.status_code == 400
    assert field in str(answer.json())
    assert not Subscription.objects.exists()


def test_staff_subscribe_a_group_which_its_members_read_but_cannot_change(ada):
    staff = User.objects.create_user("root", is_staff=True)
    team = Group.objects.create(name="team")
    team.user_set.add(ada)
    answer = client_of(staff).post(
        SUBSCRIPTIONS, {"group": "team", "outcomes": ["failed"], "email": True}, format="json"
    )
    assert answer.status_code == 201, answer.json()
    pk = answer.json()["id"]

    assert client_of(ada).get(f"{SUBSCRIPTIONS}{pk}/").json()["group"] == "team"
    assert client_of(ada).delete(f"{SUBSCRIPTIONS}{pk}/").status_code == 404
    assert Subscription.objects.filter(pk=pk).exists()


def test_a_user_reads_only_their_own_deliveries(ada, bob, make_workflow):
    from coordination.models import Run

    workflow = make_workflow([{"id": "a", "skill": "noop"}])
    run = Run.objects.create(workflow=workflow, params={}, created_by=ada)
    for user in (ada, bob):
        subscription = Subscription.objects.create(user=user, outcomes=["failed"], email=True)
        Delivery.objects.create(subscription=subscription, run=run, outcome="failed",
                                channel="email", recipient=user.email, user=user)  # fmt: skip

    listed = client_of(ada).get("/api/v1/notifications/deliveries/").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [d["recipient"] for d in rows] == ["ada@example.com"]
    assert client_of(ada).post("/api/v1/notifications/deliveries/", {}).status_code == 405


def test_the_dashboard_page_lists_the_users_deliveries_only(ada, bob, make_workflow, client):
    from coordination.models import Run

    workflow = make_workflow([{"id": "a", "skill": "noop"}], name="shipit")
    run = Run.objects.create(workflow=workflow, params={}, created_by=ada)
    for user, status in ((ada, "sent"), (bob, "failed")):
        subscription = Subscription.objects.create(user=user, outcomes=["failed"], email=True)
        Delivery.objects.create(subscription=subscription, run=run, outcome="failed",
                                channel="email", recipient=user.email, user=user,
                                status=status)  # fmt: skip

    client.force_login(ada)
    page = client.get("/notifications/").content.decode()

    assert 'data-status="sent"' in page and "ada@example.com" in page
    assert "bob@example.com" not in page
    assert client.get("/").content.decode().count('href="/notifications/"') == 1
