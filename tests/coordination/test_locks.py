"""The leader lock, two holders in one process on two connections: one wins, and the
other takes over when the winner's session ends (closed, terminated, or silent)."""

import pytest
from django.db import connection

from coordination.locks import FileLock, PostgresLock
from tests.processes import wait_for

pytestmark = pytest.mark.django_db
# Not the coordinators' key: a coordinator another test left running must not matter.
TEST_KEY = 0x7E57


@pytest.fixture
def pg_locks():
    if connection.vendor != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's; SQLite has the file lock")
    made = []

    def make(timeout: float = 5.0) -> PostgresLock:
        made.append(PostgresLock(key=TEST_KEY, timeout=timeout))
        return made[-1]

    yield make
    for lock in made:
        lock.release()


def test_of_two_holders_one_wins_and_the_other_takes_over_when_its_connection_closes(pg_locks):
    first, second = pg_locks(), pg_locks()

    assert (first.try_acquire(), second.try_acquire()) == (True, False)
    assert (first.held(), second.held()) == (True, False)
    assert first.backend_pid != second.backend_pid  # two sessions

    first.release()

    assert second.try_acquire() and second.held()
    assert not first.try_acquire()


def test_the_loser_takes_over_when_the_winners_session_is_terminated(pg_locks):
    first, second = pg_locks(), pg_locks()
    assert first.try_acquire() and not second.try_acquire()

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [first.backend_pid])

    # The backend exits a moment after it is told to.
    wait_for(second.try_acquire, timeout=10, what="the terminated session's lock to be free")
    assert not first.held()  # the deposed holder finds out when it next looks
    assert not first.try_acquire()  # and reconnects as a standby


def test_a_silent_holder_loses_the_lock_after_its_idle_timeout(pg_locks):
    """A hung leader (SIGSTOPed, deadlocked) keeps its session open: the server ends
    the session after `timeout` seconds without a look at the lock."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        if int(cursor.fetchone()[0]) < 140000:
            pytest.skip("idle_session_timeout needs PostgreSQL 14")
    silent, waiting = pg_locks(timeout=1), pg_locks()
    assert silent.try_acquire() and not waiting.try_acquire()

    wait_for(waiting.try_acquire, timeout=10, what="the silent holder's session to end")
    assert not silent.held()


def test_the_file_lock_is_held_by_one_open_file_at_a_time(tmp_path):
    first, second = FileLock(path=tmp_path / "c.lock"), FileLock(path=tmp_path / "c.lock")

    assert (first.try_acquire(), second.try_acquire()) == (True, False)
    assert (first.held(), second.held()) == (True, False)

    first.release()

    assert second.try_acquire() and second.held()
    second.release()
