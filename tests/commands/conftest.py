import textwrap
from pathlib import Path

import pytest

from agents.pool import agent_pool_load


@pytest.fixture
def definitions(tmp_path, settings):
    """A command folder of the test's own, on HIVE_COMMAND_DIRS; `write(path, text)`
    adds a definition file to it."""
    root = tmp_path / "commands"
    root.mkdir()
    settings.HIVE_COMMAND_DIRS = [root]

    def write(relative: str, text: str) -> Path:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    write.root = root
    return write


@pytest.fixture
def users(db):
    """admin (superuser), ada (may execute commands), bob (may not); each with a token."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from rest_framework.authtoken.models import Token

    User = get_user_model()
    admin = User.objects.create_superuser("admin", password="pw-admin")
    ada = User.objects.create_user("ada", password="pw-ada")
    ada.user_permissions.add(Permission.objects.get(codename="execute_command"))
    bob = User.objects.create_user("bob", password="pw-bob")
    for user in (admin, ada, bob):
        user.token = Token.objects.create(user=user).key
    return {"admin": admin, "ada": ada, "bob": bob}


@pytest.fixture
def demo_agents(start_agents, settings):
    """The demo pool of hive.agents.yaml (planner, builder, reviewer), read from the
    file itself so the tests prove the pool `make run` starts."""
    start_agents(*(
        {"name": agent.name, "role": agent.role, "skills": ",".join(agent.skills),
         "concurrency": agent.concurrency}
        for agent in agent_pool_load(settings.BASE_DIR / "hive.agents.yaml")
    ))  # fmt: skip
