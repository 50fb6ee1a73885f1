"""The restart policy of `hive up` (ops/restarts.py), in milliseconds: no processes."""

import datetime

import pytest

from ops.restarts import ProcessHistory, RestartPolicy
from ops.supervisor import Exit

POLICY = RestartPolicy(delay=1, delay_max=30, stable_after=60)


def _exits(history: ProcessHistory, uptimes: list[float]):
    return [history.exited(POLICY, uptime=uptime) for uptime in uptimes]


def test_the_first_exit_is_restarted_at_once_then_the_delay_doubles_up_to_the_cap():
    restarts = _exits(ProcessHistory(), [0.5] * 9)

    assert [r.delay for r in restarts] == [0, 1, 2, 4, 8, 16, 30, 30, 30]
    assert [r.restarts for r in restarts] == list(range(1, 10))


def test_a_process_whose_backoff_reached_the_cap_is_flapping_and_never_given_up():
    restarts = _exits(ProcessHistory(), [0.5] * 20)

    assert [r.flapping for r in restarts] == [False] * 6 + [True] * 14
    # Said once, when it begins; every later restart is at the cap's pace.
    assert [r.began_flapping for r in restarts].count(True) == 1
    assert restarts[6].began_flapping
    assert {r.delay for r in restarts[6:]} == {30}


def test_a_process_that_ran_long_enough_is_forgiven_its_earlier_exits():
    history = ProcessHistory()
    _exits(history, [0.5] * 7)
    assert history.flapping

    (after_a_good_run,) = _exits(history, [60.0])

    assert after_a_good_run.delay == 0
    assert not after_a_good_run.flapping
    assert after_a_good_run.restarts == 8  # the total still counts every restart


def test_a_flapping_process_that_runs_steadily_recovers_once():
    history = ProcessHistory()
    _exits(history, [0.5] * 7)

    assert not history.running_for(POLICY, 59.9)
    assert history.running_for(POLICY, 60.0)
    assert not history.running_for(POLICY, 61.0)  # said once
    assert history.exited(POLICY, uptime=1).delay == 0


def test_a_cap_equal_to_the_delay_flaps_on_the_second_quick_exit():
    policy = RestartPolicy(delay=2, delay_max=2)
    history = ProcessHistory()

    restarts = [history.exited(policy, uptime=0.1) for _ in range(3)]

    assert [(r.delay, r.flapping) for r in restarts] == [(0, False), (2, True), (2, True)]


@pytest.mark.parametrize(("delay", "delay_max"), [(0, 30), (-1, 30), (5, 4)])
def test_a_policy_that_would_spin_or_shrink_is_refused(delay, delay_max):
    with pytest.raises(ValueError, match="0 < delay <= delay_max"):
        RestartPolicy(delay=delay, delay_max=delay_max)


@pytest.mark.parametrize(
    ("returncode", "status"),
    [(1, "exit 1"), (0, "exit 0"), (-9, "killed by SIGKILL"), (-11, "killed by SIGSEGV")],
)
def test_an_exit_reads_as_its_status_or_signal(returncode, status):
    at = datetime.datetime.now(datetime.UTC)
    exit_ = Exit(name="web", pid=1, returncode=returncode, started_at=at, uptime=1)

    assert exit_.status == status
