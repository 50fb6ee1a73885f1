"""Set-up writes used by `hive up`."""

import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction

from hive_core.config import private_file_write


@transaction.atomic
def admin_ensure(*, username: str, password: str, password_file: Path) -> tuple[str | None, bool]:
    """Make sure the admin superuser exists; return (its password if known, created).

    A password from the environment is applied on every start, so the variable is
    the truth. Otherwise one is generated on first start and kept in
    `password_file` (mode 600) so `make run` can print the login again.
    """
    User = get_user_model()
    user = User.objects.filter(username=username).first()
    created = user is None
    if created:
        user = User(username=username, is_staff=True, is_superuser=True)
    if not password and created:
        password = secrets.token_urlsafe(12)
        private_file_write(password_file, password, replace=True)
    if password and (created or not user.check_password(password)):
        # Only on a change: a new hash would log every open session out.
        user.set_password(password)
        user.save()
    elif password_file.exists():
        password = password_file.read_text().strip()
    return password or None, created


@transaction.atomic
def token_rotate(*, user):
    """Give `user` a new API token (its TTL starts now); the old key stops working."""
    from rest_framework.authtoken.models import Token

    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)
