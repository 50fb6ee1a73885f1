"""The users of the adversarial review (issue 15), each with an API token and a
password, so every test attacks through a real door as a real user."""

import pytest


def _user(username: str, *permissions: str, staff: bool = False):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_user(
        username, password=f"pw-{username}-long", is_staff=staff
    )
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    user.password_plain = f"pw-{username}-long"
    user.token = Token.objects.create(user=user).key
    return user


@pytest.fixture
def attackers(db):
    """admin (superuser); nobody (no permission); runner (may start, change and
    approve runs); executor (may only execute commands); scheduler (staff with only
    the periodic-task permissions)."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    admin = get_user_model().objects.create_superuser("admin", password="pw-admin-long")
    admin.password_plain = "pw-admin-long"
    admin.token = Token.objects.create(user=admin).key
    return {
        "admin": admin,
        "nobody": _user("nobody"),
        "runner": _user(
            "runner",
            "coordination.add_run",
            "coordination.change_run",
            "coordination.view_run",
            "coordination.change_steprun",
            "coordination.approve_steprun",
        ),
        "executor": _user("executor", "commands.execute_command"),
        "scheduler": _user(
            "scheduler",
            "django_celery_beat.add_periodictask",
            "django_celery_beat.change_periodictask",
            "django_celery_beat.delete_periodictask",
            "django_celery_beat.view_periodictask",
            "django_celery_beat.add_intervalschedule",
            "django_celery_beat.add_crontabschedule",
            "django_celery_beat.view_intervalschedule",
            "django_celery_beat.view_crontabschedule",
            staff=True,
        ),
    }


def auth(user) -> dict:
    """The header an API client of `user` sends."""
    return {"Authorization": f"Token {user.token}"}
