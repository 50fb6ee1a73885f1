"""Settings for the test suite: Hive's own settings with test state kept apart.

The embedded Redis, SQLite files and beat schedule go under var/test/, so
`make test` never touches the data of a `make run` in the same checkout.
Agent processes the tests start use this module too.
"""

import os
from pathlib import Path

os.environ.setdefault("HIVE_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))
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

from hive_project.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
