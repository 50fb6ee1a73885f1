"""`hive up`'s supervisor: honcho's Manager, which stops everything when one process
exits, taught to restart that one process instead.

honcho keeps what it does well here: each process in a session of its own, its output
prefixed and multiplexed by a pump process, SIGTERM then SIGKILL to stop. What
changes is the loop's rule: an unexpected exit is restarted with backoff (ops/
restarts.py), the rest keep running, and each restart is one log line and a
`process.restarted` event; an exit that was asked for (`intended`) stays down.
circus and supervisor were the alternatives: both give up on a process that keeps
dying (circus's flapping plugin stops the watcher, supervisor's FATAL state), both
would be a second process manager beside honcho (which `hive up` already used and
whose output format the docs show), and neither can ask Hive's database whether an
exit was requested.
"""

import contextlib
import datetime
import functools
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from honcho.manager import SIGNALS, Manager
from honcho.process import Popen, Process

from ops.restarts import ProcessHistory, Restart, RestartPolicy

# A process gets this long to exit after SIGTERM before it is SIGKILLed: an agent's
# warm shutdown finishes its running steps (Docker gives a container 10 s as well;
# a step cut off is tried again by the reaper). A second Ctrl-C kills at once.
STOP_GRACE = 10.0
# After SIGKILL, how long to wait for the pumps to report the exits before leaving.
KILL_WAIT = 5.0
# How often the loop looks at due restarts when no output arrives.
TICK = 0.1


@dataclass(frozen=True)
class Exit:
    """One process's exit, as `intended` is asked about it."""

    name: str
    pid: int | None
    returncode: int
    started_at: datetime.datetime  # when the supervisor started it (aware, UTC)
    uptime: float

    @property
    def status(self) -> str:
        """`exit 1` or `killed by SIGKILL`."""
        if self.returncode < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-self.returncode).name}"
        return f"exit {self.returncode}"


class HiveProcess(Process):
    """honcho's Process with two changes: no /bin/sh in between (the pid it reports is
    the Hive process's own: the agent's registered pid, the one a signal reaches), and
    the process has exited when its main process has, not when the last holder of its
    output pipe has. An agent SIGKILLed leaves its prefork pool behind holding the pipe;
    honcho would wait for that EOF forever, never seeing the exit."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._child_ctor = functools.partial(Popen, shell=False)

    def run(self, events=None, ignore_signals=False):
        self._events = events
        self._child = self._child_ctor(self.cmd, env=self.env, cwd=self.cwd)
        self._send_message({"pid": self._child.pid}, type="start")
        if ignore_signals:  # as honcho: the manager signals the child, not this pump
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        relay = threading.Thread(target=self._relay, daemon=True)
        relay.start()
        self._child.wait()
        # What the main process left in its session goes with it (systemd's
        # control-group rule): a restart never runs beside the last one's remnants.
        # The pid is still the group's id while any member lives, so it names no other.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._child.pid, signal.SIGKILL)
        relay.join(timeout=KILL_WAIT)
        self._send_message({"returncode": self._child.returncode}, type="stop")

    def _relay(self):
        for line in iter(self._child.stdout.readline, b""):
            if not self.quiet:
                self._send_message(line)
        self._child.stdout.close()


class Supervisor(Manager):
    """Run processes until SIGINT or SIGTERM, restarting each that exits unasked.

    `intended(exit)` says whether an exit was asked for (it then stays down);
    `record(kind, name, data)` stores an event (`process.<kind>`). Either may fail (the
    database is away): the process is restarted all the same, and the line says so.
    """

    def __init__(
        self,
        *,
        policy: RestartPolicy,
        intended: Callable[[Exit], bool],
        record: Callable[[str, str, dict], None],
        printer=None,
    ):
        super().__init__(printer=printer)
        self._process_ctor = HiveProcess
        self.policy = policy
        self._intended = intended
        self._record_hook = record
        self._history: dict[str, ProcessHistory] = {}
        self._started: dict[str, tuple[float, datetime.datetime]] = {}
        self._due: dict[str, tuple[float, Exit, Restart]] = {}
        self._stop_at: float | None = None
        self._leave_at: float | None = None

    def add_process(self, name, cmd, quiet=False, env=None, cwd=None):
        self._history[name] = ProcessHistory()
        return super().add_process(name, cmd, quiet=quiet, env=env, cwd=cwd)

    def loop(self):
        signal.signal(signal.SIGTERM, self._signalled)
        signal.signal(signal.SIGINT, self._signalled)
        for name in self._processes:
            self._spawn(name)
        while not (self._terminating and self._all_stopped()):
            try:
                message = self.events.get(timeout=TICK)
            except queue.Empty:
                message = None
            if message is not None:
                self._receive(message)
            if not self._terminating:
                self._restart_due()
                self._recovered()
            elif self._waited_enough():
                break
        if self.returncode is None:
            self.returncode = 0

    # --- stopping: everything, on a signal ---------------------------------------

    def _signalled(self, signum, frame):
        if self._terminating:  # the second Ctrl-C: no more waiting
            self._system_print(f"{SIGNALS[signum]['name']} again: killing\n")
            self.kill()
            return
        self._system_print(f"{SIGNALS[signum]['name']} received\n")
        self.returncode = SIGNALS[signum]["rc"]
        self._due.clear()  # a process waiting for its restart stays stopped
        self._stop_at = time.monotonic() + STOP_GRACE
        self.terminate()

    def _waited_enough(self) -> bool:
        now = time.monotonic()
        if self._leave_at is None and now > self._stop_at:
            self.kill()
            self._leave_at = now + KILL_WAIT
        return self._leave_at is not None and now > self._leave_at

    def _killall(self, force=False):
        """honcho's, for processes running now: a stopped one (waiting for its restart,
        or down on purpose) is skipped, one whose pid is not known yet is signalled as
        soon as it is (`_receive`)."""
        signame = "SIGKILL" if force else "SIGTERM"
        for name, p in self._processes.items():
            if "returncode" in p or p.get("pid") is None:
                continue
            self._system_print(f"sending {signame} to {name} (pid {p['pid']})\n")
            (self._procmgr.kill if force else self._procmgr.terminate)(p["pid"])

    # --- running and restarting ---------------------------------------------------

    def _spawn(self, name: str) -> None:
        p = self._processes[name]
        p.pop("pid", None)
        p.pop("returncode", None)
        p["process"] = multiprocessing.Process(
            name=name, target=p["obj"].run, args=(self.events, True)
        )
        p["process"].start()
        self._started[name] = (time.monotonic(), datetime.datetime.now(datetime.UTC))

    def _receive(self, message) -> None:
        p = self._processes.get(message.name)
        if message.type == "line" or p is None:
            self._printer.write(message)
        elif message.type == "start":
            p["pid"] = message.data["pid"]
            self._system_print(f"{message.name} started (pid={p['pid']})\n")
            if self._terminating:  # started just as everything was being stopped
                self._procmgr.terminate(p["pid"])
        elif message.type == "stop":
            p["returncode"] = message.data["returncode"]
            self._system_print(f"{message.name} stopped (rc={p['returncode']})\n")
            p["process"].join(timeout=KILL_WAIT)  # the pump exits right after this
            if not self._terminating:
                self._exited(message.name, p)

    def _exited(self, name: str, p: dict) -> None:
        started, started_at = self._started[name]
        exit_ = Exit(name=name, pid=p.get("pid"), returncode=p["returncode"],
                     started_at=started_at, uptime=time.monotonic() - started)  # fmt: skip
        if self._asked(exit_):
            self._system_print(f"{name} stopped on purpose ({exit_.status}); it stays down\n")
            self._record("stopped", name, {"status": exit_.returncode, "exit": exit_.status})
            return
        restart = self._history[name].exited(self.policy, uptime=exit_.uptime)
        if restart.began_flapping:
            self._system_print(
                f"{name} is flapping: {self._history[name].exits_in_a_row} exits in a row, "
                f"each within {self.policy.stable_after:g} s of its start; "
                f"restarted every {self.policy.delay_max:g} s from now on\n"
            )
            self._record("flapping", name, {"status": exit_.returncode, "exit": exit_.status,
                                            "restarts": restart.restarts,
                                            "delay": restart.delay})  # fmt: skip
        self._due[name] = (time.monotonic() + restart.delay, exit_, restart)

    def _asked(self, exit_: Exit) -> bool:
        try:
            return self._intended(exit_)
        except Exception as exc:  # a process running beats one left down
            self._system_print(f"{exit_.name}: could not tell whether its exit was asked "
                               f"for ({exc}); restarting it\n")  # fmt: skip
            return False

    def _restart_due(self) -> None:
        now = time.monotonic()
        for name, (at, exit_, restart) in list(self._due.items()):
            # A signal handled meanwhile may have cleared them: stopping wins.
            if at > now or self._terminating or self._due.pop(name, None) is None:
                continue
            self._spawn(name)
            flapping = ", flapping" if restart.flapping else ""
            self._system_print(
                f"{name} restarted after {exit_.status} "
                f"(restart {restart.restarts}, after {restart.delay:g} s{flapping})\n"
            )
            self._record("restarted", name, {
                "status": exit_.returncode, "exit": exit_.status, "restarts": restart.restarts,
                "delay": restart.delay, "flapping": restart.flapping,
            })  # fmt: skip

    def _recovered(self) -> None:
        """A flapping process that has run `stable_after` seconds is well again."""
        now = time.monotonic()
        for name, history in self._history.items():
            p = self._processes[name]
            if not history.flapping or "returncode" in p or p.get("pid") is None:
                continue
            if history.running_for(self.policy, now - self._started[name][0]):
                self._system_print(f"{name} has run {self.policy.stable_after:g} s: "
                                   "no longer flapping\n")  # fmt: skip
                self._record("recovered", name, {"restarts": history.restarts})

    def _record(self, kind: str, name: str, data: dict) -> None:
        try:
            self._record_hook(f"process.{kind}", name, data)
        except Exception as exc:  # the log line is the only record then
            self._system_print(f"{name}: process.{kind} event not recorded ({exc})\n")
