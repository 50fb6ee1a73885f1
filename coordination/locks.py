"""The coordinators' leader lock: whoever holds it leads (coordination.leadership).

On PostgreSQL a session-level advisory lock, held on a connection of its own: the
server releases it the moment that session ends (the process died, its connection was
cut, or pg_terminate_backend), so no lease has to run out before a standby takes over.
On SQLite (one host) an flock on a file under VAR_DIR, which the kernel releases when
the process dies. Both answer the same three calls.
"""

import contextlib
import copy
import fcntl
import logging
import os
import threading
from pathlib import Path

from django.conf import settings
from django.db import connections
from django.db.utils import load_backend

logger = logging.getLogger(__name__)

# "HIVE" in ASCII. Advisory lock keys are per database, so two Hives on one server
# (the tests' databases, other checkouts) never contend for it.
LOCK_KEY = 0x48495645


class PostgresLock:
    """pg_try_advisory_lock on a dedicated connection (never one of Django's, which
    Django closes between tasks and so would drop the lock)."""

    def __init__(self, *, key: int = LOCK_KEY, alias: str = "default", timeout: float = 6.0):
        self.key = key
        self.alias = alias
        # How long the server keeps a silent holder: its session is ended after
        # `timeout` s idle (the leader checks in every fraction of it), so a hung or
        # SIGSTOPed leader loses the lock too, not only a dead one. The same bound on
        # unanswered TCP, both ways, for a leader cut off from the server.
        self.timeout = timeout
        self._wrapper = None
        # The leadership check and the passes' fencing ask from two threads.
        self._mutex = threading.RLock()

    @property
    def backend_pid(self) -> int | None:
        """The server process of the lock's session (what pg_terminate_backend takes)."""
        return self._wrapper.connection.info.backend_pid if self._connected() else None

    def try_acquire(self) -> bool:
        with self._mutex:
            return self._try_acquire()

    def _try_acquire(self) -> bool:
        try:
            if not self._connected():
                self._connect()
            return bool(self._query("SELECT pg_try_advisory_lock(%s)", [self.key]))
        except Exception as exc:  # the server is away: not leading, try again later
            logger.warning("leader lock: could not try it: %s", exc)
            self.release()
            return False

    def held(self) -> bool:
        """Whether this session still holds the lock: asks the server, so a session it
        ended (terminated, timed out) answers False here and not at the next write."""
        with self._mutex:
            return self._held()

    def _held(self) -> bool:
        if not self._connected():
            return False
        try:
            found = self._query(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND pid = pg_backend_pid() AND classid = 0 AND objid = %s AND objsubid = 1",
                [self.key],
            )
        except Exception as exc:
            logger.warning("leader lock: lost its connection: %s", exc)
            self.release()
            return False
        return bool(found)

    def release(self) -> None:
        """Close the session: the server releases the lock with it."""
        with self._mutex:
            wrapper, self._wrapper = self._wrapper, None
        if wrapper is not None and wrapper.connection is not None:
            with contextlib.suppress(Exception):  # already gone
                wrapper.connection.close()

    def _connected(self) -> bool:
        return (
            self._wrapper is not None
            and self._wrapper.connection is not None
            and not (self._wrapper.connection.closed)
        )

    def _connect(self) -> None:
        db = copy.deepcopy(connections[self.alias].settings_dict)
        seconds = max(1, int(self.timeout))
        db["OPTIONS"] = {
            **db.get("OPTIONS", {}),
            "application_name": "hive-coordinator-lock",
            "connect_timeout": seconds,
            "keepalives": 1,
            "keepalives_idle": max(1, seconds // 3),
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": seconds * 1000,
        }
        wrapper = load_backend(db["ENGINE"]).DatabaseWrapper(db, self.alias)
        wrapper.ensure_connection()
        raw = wrapper.connection
        raw.autocommit = True
        with raw.cursor() as cursor:
            # PostgreSQL 14+; an older server keeps a hung leader's lock until its
            # session dies (the README says so).
            try:
                cursor.execute("SET idle_session_timeout = %s", [seconds * 1000])
            except Exception:
                logger.warning("leader lock: no idle_session_timeout (PostgreSQL < 14)")
        self._wrapper = wrapper

    def _query(self, sql: str, params: list):
        with self._wrapper.connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()[0]


class FileLock:
    """flock on VAR_DIR/coordinator.lock: the one-host lock for SQLite, which has no
    advisory locks. The kernel drops it when the process dies, as PostgreSQL does."""

    def __init__(self, *, path: Path | None = None):
        self.path = Path(path or settings.VAR_DIR / "coordinator.lock")
        self._fd: int | None = None
        self._locked = False

    backend_pid = None

    def try_acquire(self) -> bool:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._locked = True
        return True

    def held(self) -> bool:
        # A held flock cannot be taken from a live process.
        return self._locked

    def release(self) -> None:
        fd, self._fd, self._locked = self._fd, None, False
        if fd is not None:
            os.close(fd)  # closing the file releases the lock


def leader_lock(*, timeout: float) -> PostgresLock | FileLock:
    """The lock for this database: advisory on PostgreSQL, a file on SQLite."""
    if connections["default"].vendor == "postgresql":
        return PostgresLock(timeout=timeout)
    return FileLock()
