"""Read Hive's configuration from the environment, failing with one clear line.

Settings import this module; nothing here touches Django, so a bad variable is
reported before any app loads. `manage.py` turns `ConfigError` into a one-line
message naming the variable instead of a traceback.
"""

import hashlib
import ipaddress
import json
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

# Unix socket paths are limited to 108 bytes by the kernel (sun_path).
_MAX_SOCKET_PATH = 100


class ConfigError(ImproperlyConfigured):
    """A configuration variable is missing or malformed."""


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = env_str(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}: {value} is below the minimum {minimum}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name).lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}: {raw!r} is not a boolean (use true or false)")


def env_list(name: str, default: list[str]) -> list[str]:
    raw = env_str(name)
    if not raw:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def path_list(name: str) -> list[Path]:
    """A list of folders separated by the OS path separator (`:`), relative to BASE_DIR."""
    raw = env_str(name)
    return [(BASE_DIR / item).resolve() for item in raw.split(os.pathsep) if item.strip()]


def throttle_rate(name: str, default: str) -> str:
    """A DRF throttle rate, `N/period` with period s, m, h or d (`60/min` reads as minutes)."""
    raw = env_str(name, default)
    count, _, period = raw.partition("/")
    if not (count.isdigit() and period[:1] in {"s", "m", "h", "d"}):
        raise ConfigError(f"{name}: {raw!r} is not a rate like 60/min (N per s, min, h or day)")
    return raw


def env_json(name: str, default: object) -> object:
    raw = env_str(name)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: not valid JSON: {exc}") from None


def shell_commands(name: str) -> dict:
    """HIVE_SHELL_COMMANDS: names to argv templates (see agents/skills/builtin/shell.py)."""
    commands = env_json(name, {})
    if not isinstance(commands, dict):
        raise ConfigError(f"{name}: expected a JSON object of command names to argv lists")
    for command, entry in commands.items():
        argv = entry.get("argv") if isinstance(entry, dict) else entry
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            raise ConfigError(f"{name}: {command!r}: argv must be a non-empty list of strings")
        if isinstance(entry, dict) and set(entry) - {"argv", "params", "timeout", "cwd"}:
            unknown = sorted(set(entry) - {"argv", "params", "timeout", "cwd"})[0]
            raise ConfigError(f"{name}: {command!r}: unknown field {unknown!r}")
    return commands


def var_dir() -> Path:
    """Where the embedded defaults keep their state (SQLite, Redis, secret key)."""
    path = Path(env_str("HIVE_VAR_DIR") or BASE_DIR / "var").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_config(url: str, *, default_sqlite: Path) -> dict:
    """`DATABASE_URL` as a Django DATABASES entry; SQLite under var/ when unset."""
    if not url:
        url = f"sqlite:///{default_sqlite}"
    scheme = urlsplit(url).scheme
    if scheme not in {"sqlite", "postgres", "postgresql", "pgsql"}:
        raise ConfigError(
            f"DATABASE_URL: unsupported scheme {scheme!r} "
            "(use postgres://user@host:5432/name or sqlite:///path)"
        )
    try:
        config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    except ValueError as exc:
        raise ConfigError(f"DATABASE_URL: {exc}") from None
    if not config.get("NAME"):
        raise ConfigError("DATABASE_URL: no database name in the URL")
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Several agent processes write at once: WAL lets readers run beside the
        # writer, IMMEDIATE takes the write lock up front so two writers queue on
        # the busy timeout instead of failing with "database is locked".
        config["CONN_MAX_AGE"] = 0
        config["CONN_HEALTH_CHECKS"] = False
        config["OPTIONS"] = {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        config["TEST"] = {"NAME": str(Path(config["NAME"]).with_name("test.sqlite3"))}
    else:
        # pg_stat_activity names the process of each connection; the web, agent,
        # coordinator and Flower processes rename theirs (hive_core/db.py).
        config.setdefault("OPTIONS", {})["application_name"] = "hive"
    return config


def embedded_redis_socket(directory: Path) -> Path:
    """The socket of the embedded Redis for `directory`, short enough for the kernel."""
    path = directory / "redis.sock"
    if len(str(path)) > _MAX_SOCKET_PATH:
        digest = hashlib.sha256(str(directory).encode()).hexdigest()[:12]
        path = Path(tempfile.gettempdir()) / f"hive-redis-{digest}.sock"
    return path


def redis_url(raw: str, *, embedded_socket: Path) -> str:
    """`REDIS_URL`, or the embedded Redis's unix socket when unset."""
    if not raw:
        return f"unix://{embedded_socket}?db=0"
    parts = urlsplit(raw)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(
            f"REDIS_URL: unsupported scheme {parts.scheme!r} (use redis://host:6379/0)"
        )
    try:
        parts.port  # noqa: B018 - urlsplit only validates the port when asked
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL: {exc}") from None
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError("REDIS_URL: no host in the URL")
    db = parts.path.lstrip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise ConfigError(f"REDIS_URL: database {db!r} is not a number")
    return raw


def celery_url(url: str) -> str:
    """Kombu and Celery's result backend spell a unix socket `redis+socket://`."""
    parts = urlsplit(url)
    if parts.scheme != "unix":
        return url
    query = f"?virtual_host={parts.query.removeprefix('db=')}" if parts.query else ""
    return f"redis+socket://{parts.path}{query}"


def secret_key(*, production: bool, directory: Path) -> str:
    """`SECRET_KEY`; in development a random key kept under var/ so logins survive restarts."""
    key = env_str("SECRET_KEY")
    if production:
        if len(key) < 50 or key.startswith("django-insecure") or len(set(key)) < 5:
            raise ConfigError(
                "SECRET_KEY: production (HIVE_ENV=production) needs a random secret of "
                "at least 50 characters"
            )
        return key
    if key:
        return key
    path = directory / "secret_key"
    if not path.exists():
        from django.core.management.utils import get_random_secret_key

        # Not `replace`: processes starting together keep the first key written, so
        # no one's sessions are signed with a key that is then thrown away.
        private_file_write(path, get_random_secret_key(), replace=False)
    return path.read_text().strip()


def private_file_write(path: Path, text: str, *, replace: bool) -> bool:
    """Write a secret readable by its owner only, at every moment; return whether written.

    write_text-then-chmod leaves the file world-readable (umask 022) until the chmod.
    The text goes to a temporary file created with mode 600 (O_EXCL: never someone
    else's file or link), then takes the name in one step, so no reader ever sees the
    secret with other modes, nor half written. Without `replace` an existing file wins.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def ip_networks(name: str) -> tuple:
    """A list of addresses or CIDR networks (`10.0.0.0/8,127.0.0.1`), as ip_network objects."""
    networks = []
    for item in env_list(name, []):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an IP address or network") from None
    return tuple(networks)
