"""How many PostgreSQL connections one process holds, sampled while it works.

A connection is the process's when its client socket is: the sockets a process owns
are its /proc/<pid>/fd links, and /proc/net/tcp names each socket's local port,
which PostgreSQL shows as pg_stat_activity.client_port. This counts the truth even
for a process that names its connections wrongly or not at all.
"""

import os
import threading
import time
from pathlib import Path

import psycopg2


def process_ports(pid: int) -> set[int]:
    """The local TCP ports of the sockets process `pid` holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed while we looked
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class ConnectionWatch:
    """Samples, every `interval` seconds until stopped, the connections process `pid`
    holds to `database` (`peak`) and the application names they carry (`names`)."""

    def __init__(self, *, pid: int, dsn: str, database: str, interval: float = 0.02):
        self.pid = pid
        self.dsn = dsn
        self.database = database
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.names: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connection-watch", daemon=True)

    def __enter__(self) -> "ConnectionWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        watcher = psycopg2.connect(self.dsn)
        watcher.autocommit = True
        try:
            with watcher.cursor() as cursor:
                while not self._stop.is_set():
                    cursor.execute(
                        "SELECT application_name FROM pg_stat_activity "
                        "WHERE client_port = ANY(%s) AND datname = %s",
                        [sorted(process_ports(self.pid)), self.database],
                    )
                    rows = cursor.fetchall()
                    self.peak = max(self.peak, len(rows))
                    self.names.update(name for (name,) in rows)
                    self.samples += 1
                    time.sleep(self.interval)
        finally:
            watcher.close()


def server_dsn(settings_dict: dict) -> str:
    """A libpq DSN for the server of `settings_dict` (its `postgres` database)."""
    parts = {
        "host": settings_dict["HOST"] or "127.0.0.1",
        "port": settings_dict["PORT"] or 5432,
        "user": settings_dict["USER"],
        "password": settings_dict["PASSWORD"],
        "dbname": "postgres",
        "application_name": "hive-connection-watch",
    }
    return " ".join(f"{key}='{value}'" for key, value in parts.items() if value)
