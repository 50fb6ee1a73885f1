"""Configuration comes from the environment; a bad value stops start-up with one line."""

import os
import subprocess
import sys

import pytest
from django.conf import settings

from hive_core.config import ConfigError, celery_url, database_config, redis_url

SQLITE = settings.VAR_DIR / "x.sqlite3"


def test_no_database_url_means_sqlite_in_wal_mode_under_var():
    db = database_config("", default_sqlite=SQLITE)
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(SQLITE)
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_a_postgres_url_means_postgres():
    db = database_config("postgres://postgres@127.0.0.1:5432/hive", default_sqlite=SQLITE)
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["HOST"], db["PORT"]) == ("hive", "127.0.0.1", 5432)


@pytest.mark.parametrize(
    "url, message",
    [
        ("mysql://root@localhost/hive", "DATABASE_URL: unsupported scheme 'mysql'"),
        ("postgres://u@host:port/hive", "DATABASE_URL: "),
        ("postgres://u@host:5432/", "DATABASE_URL: no database name in the URL"),
    ],
)
def test_malformed_database_urls_are_refused(url, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        database_config(url, default_sqlite=SQLITE)


def test_no_redis_url_means_the_embedded_socket(tmp_path):
    url = redis_url("", embedded_socket=tmp_path / "redis.sock")
    assert url == f"unix://{tmp_path}/redis.sock?db=0"
    assert celery_url(url) == f"redis+socket://{tmp_path}/redis.sock?virtual_host=0"


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://localhost:6379", "REDIS_URL: unsupported scheme 'http'"),
        ("redis://localhost:99999/0", "REDIS_URL: Port out of range"),
        ("redis://localhost:6379/zero", "REDIS_URL: database 'zero' is not a number"),
        ("redis:///0", "REDIS_URL: no host in the URL"),
    ],
)
def test_malformed_redis_urls_are_refused(url, message, tmp_path):
    with pytest.raises(ConfigError, match=f"^{message}"):
        redis_url(url, embedded_socket=tmp_path / "s")


def test_a_real_redis_url_is_used_as_is():
    assert (
        redis_url("redis://127.0.0.1:6379/1", embedded_socket=SQLITE) == "redis://127.0.0.1:6379/1"
    )
    assert celery_url("redis://127.0.0.1:6379/1") == "redis://127.0.0.1:6379/1"


def _manage(*args, **env):
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env={**clean, "DJANGO_SETTINGS_MODULE": "hive_project.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"DATABASE_URL": "mysql://root@localhost/hive"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgres://u@host:port/x"}, "DATABASE_URL"),
        ({"REDIS_URL": "redis://localhost:99999/0"}, "REDIS_URL"),
        ({"HIVE_ENV": "production", "SECRET_KEY": ""}, "SECRET_KEY"),
        ({"HIVE_ENV": "production", "SECRET_KEY": "django-insecure-" + "x" * 50}, "SECRET_KEY"),
        ({"HIVE_ENV": "staging"}, "HIVE_ENV"),
        ({"HIVE_PORT": "eighty"}, "HIVE_PORT"),
    ],
)
def test_bad_configuration_stops_start_up_with_one_line_naming_it(env, variable, tmp_path):
    result = _manage("hive", "up", HIVE_VAR_DIR=str(tmp_path), **env)

    assert result.returncode == 1
    assert result.stderr.startswith(f"hive: configuration error: {variable}: "), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "hive.sqlite3").exists()  # nothing was started or created


def test_production_with_a_real_secret_passes_the_deploy_checks(tmp_path):
    result = _manage(
        "check",
        "--deploy",
        "--fail-level=WARNING",
        HIVE_VAR_DIR=str(tmp_path),
        HIVE_ENV="production",
        SECRET_KEY="k7#Qm2$vX9pL!wR4tY8uI0oP3aS6dF1gH5jK-zN_cB+eM^xV&q8Wr5Ty1Ui",
        ALLOWED_HOSTS="hive.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
