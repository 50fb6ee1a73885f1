"""Settings for the test suite: Hive's own settings with test state kept apart.

The embedded Redis, SQLite files and beat schedule go under var/test/, so
`make test` never touches the data of a `make run` in the same checkout.
Agent processes the tests start use this module too.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def _worker_apart() -> None:
    """Under pytest-xdist (`make test` runs the suite on several workers) each worker
    has its own var/test/<worker>/ (embedded Redis, SQLite, beat schedule) and, on an
    external Redis, its own database number; pytest-django gives it its own test
    database. Done once, in the worker: the processes a test starts inherit the
    result, and keep a REDIS_URL the test gave them (a private redis-server's)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or os.environ.get("HIVE_TEST_WORKER"):
        return
    os.environ["HIVE_TEST_WORKER"] = worker
    # Under the directory the controller chose (it ran this module first).
    os.environ["HIVE_VAR_DIR"] = str(Path(os.environ.get("HIVE_VAR_DIR", VAR_TEST)) / worker)
    parts = urlsplit(os.environ.get("REDIS_URL", ""))
    if parts.scheme in ("redis", "rediss"):
        number = int(parts.path.strip("/") or 0) + 1 + int(worker.removeprefix("gw"))
        os.environ["REDIS_URL"] = urlunsplit(parts._replace(path=f"/{number}"))


VAR_TEST = Path(__file__).resolve().parent.parent / "var" / "test"
_worker_apart()
os.environ.setdefault("HIVE_VAR_DIR", str(VAR_TEST))
# Tests wait for the offline mark; keep the timings short but realistic.
os.environ.setdefault("HIVE_HEARTBEAT_INTERVAL", "1")
os.environ.setdefault("HIVE_AGENT_TIMEOUT", "4")
os.environ.setdefault("HIVE_DISPATCH_TIMEOUT", "3")
os.environ.setdefault("HIVE_STEP_LEASE", "4")
os.environ.setdefault("HIVE_REAPER_INTERVAL", "1")
# Tests send many commands as few users; the throttle has a test of its own.
os.environ.setdefault("HIVE_COMMAND_THROTTLE", "10000/min")
# Failed and orphaned messages are taken over after 1 s instead of 15.
os.environ.setdefault("HIVE_INBOX_CLAIM_IDLE", "1000")
# A user's own skill module, loaded as HIVE_SKILL_MODULES loads any.
os.environ.setdefault("HIVE_SKILL_MODULES", "tests.skills_extra")

from hive_project.settings import *  # noqa: E402, F403 - after the environment it reads

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
