"""When `hive up` restarts a process that exited: the backoff and flapping policy, apart
from processes and clocks so it is tested in milliseconds (tests/hive_project/
test_restarts.py). ops/supervisor.py asks it on every exit."""

from dataclasses import dataclass

# A process that ran this long before it exited was working: its earlier exits are
# forgiven and it is restarted at once again. A minute is long past any start-up here
# (an agent is online in 2-5 s on the 2-core test machine, under load up to ~15 s).
STABLE_AFTER = 60.0


@dataclass(frozen=True)
class RestartPolicy:
    """The first exit in a row is restarted at once, the next after `delay` seconds,
    each one after that after twice the last delay, up to `delay_max`. A process whose
    backoff has reached the cap keeps dying: it is flapping, and is retried at the
    cap's pace for as long as `hive up` runs (never given up on)."""

    delay: float = 1.0
    delay_max: float = 30.0
    stable_after: float = STABLE_AFTER

    def __post_init__(self):
        if self.delay <= 0 or self.delay_max < self.delay:
            raise ValueError("restart delays: need 0 < delay <= delay_max")

    def delay_for(self, exits_in_a_row: int) -> float:
        """Seconds to wait before restarting after the `exits_in_a_row`-th quick exit."""
        if exits_in_a_row <= 1:
            return 0.0
        return min(self.delay_max, self.delay * 2 ** (exits_in_a_row - 2))


@dataclass(frozen=True)
class Restart:
    """What to do about one exit: wait `delay` seconds, then start it again."""

    delay: float
    restarts: int  # this one included, since `hive up` started
    flapping: bool
    began_flapping: bool  # this exit is the one that made it flapping


@dataclass
class ProcessHistory:
    """One process's exits, as the policy counts them."""

    restarts: int = 0
    exits_in_a_row: int = 0
    flapping: bool = False

    def exited(self, policy: RestartPolicy, *, uptime: float) -> Restart:
        """Count an unexpected exit after `uptime` seconds of running."""
        if uptime >= policy.stable_after:
            self.exits_in_a_row = 0
            self.flapping = False
        self.exits_in_a_row += 1
        self.restarts += 1
        delay = policy.delay_for(self.exits_in_a_row)
        was_flapping = self.flapping
        self.flapping = self.exits_in_a_row > 1 and delay >= policy.delay_max
        return Restart(
            delay=delay,
            restarts=self.restarts,
            flapping=self.flapping,
            began_flapping=self.flapping and not was_flapping,
        )

    def running_for(self, policy: RestartPolicy, uptime: float) -> bool:
        """A flapping process that has now run `stable_after` seconds recovered: True
        once, the moment it does (its next exit is restarted at once again)."""
        if self.flapping and uptime >= policy.stable_after:
            self.flapping = False
            self.exits_in_a_row = 0
            return True
        return False
