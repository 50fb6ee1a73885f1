"""A private redis-server for tests that stop, restart or pause Redis: never the
suite's shared one, which other tests (and other checkouts) are using."""

import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import redis

from tests.processes import free_port, wait_for

REDIS_SERVER = shutil.which("redis-server")


class PrivateRedis:
    """One redis-server on its own port and folder; restart keeps the port."""

    def __init__(self, directory: Path, *, bind: str = "127.0.0.1", port: int = 0, aof=False):
        """`bind`: addresses separated by spaces; the URL uses the first."""
        self.directory = directory
        self.bind = bind.split()
        self.port = port or free_port()
        self.aof = aof
        self.proc: subprocess.Popen | None = None
        self.url = self.url_at(self.bind[0])

    def url_at(self, address: str) -> str:
        return f"redis://{address}:{self.port}/0"

    def start(self) -> None:
        argv = [
            REDIS_SERVER, "--bind", *self.bind, "--port", str(self.port), "--dir",
            str(self.directory), "--save", "", "--appendonly", "yes" if self.aof else "no",
            "--logfile", str(self.directory / "redis.log"), "--protected-mode", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.answers, timeout=10, what=f"redis-server on port {self.port}")

    def answers(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server cannot exit
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


def private_redis_server(directory: Path, **options) -> PrivateRedis:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (needed to stop and pause a Redis)")
    server = PrivateRedis(directory, **options)
    server.start()
    return server
