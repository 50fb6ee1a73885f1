"""docker-compose.yml can't be run here (no Docker engine), so check what can be checked:
every Hive service runs a real `hive` action with options that action accepts."""

from pathlib import Path

import pytest
import yaml
from django.conf import settings

from hive_project.management.commands.hive import Command

COMPOSE = yaml.safe_load((Path(settings.BASE_DIR) / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
HIVE_SERVICES = {name: s for name, s in SERVICES.items() if s.get("image") == "hive:latest"}


def test_compose_runs_the_whole_stack():
    assert set(SERVICES) == {"postgres", "redis", "setup", "web", "agent", "coordinator", "flower"}


@pytest.mark.parametrize("name", sorted(HIVE_SERVICES))
def test_every_hive_service_runs_a_real_entry_point(name):
    command = HIVE_SERVICES[name]["command"]
    assert command[:3] == ["python", "manage.py", "hive"], command

    # The hive command's own parser: an unknown action or option exits with an error.
    options = Command().create_parser("manage.py", "hive").parse_args(command[3:])

    assert options.action == {"agent": "agent"}.get(name, name)


def test_the_image_builds_from_this_project():
    dockerfile = (Path(settings.BASE_DIR) / "Dockerfile").read_text()
    assert "requirements.txt" in dockerfile
    assert all(s["build"] == "." for s in HIVE_SERVICES.values())


def test_hive_services_use_the_real_database_and_redis():
    for service in HIVE_SERVICES.values():
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["HIVE_ENV"] == "production"


def test_redis_keeps_an_append_only_file():
    command = SERVICES["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"


def test_agents_scale_without_a_fixed_name():
    assert not any(arg.startswith("--name") for arg in SERVICES["agent"]["command"])


def test_two_coordinators_run_one_leading_one_in_standby():
    coordinator = SERVICES["coordinator"]
    assert coordinator["deploy"]["replicas"] == 2
    # No fixed --name: each replica is known by its container's hostname.
    assert not any(arg.startswith("--name") for arg in coordinator["command"])


def test_web_and_flower_health_checks_use_their_unauthenticated_probes():
    web = " ".join(SERVICES["web"]["healthcheck"]["test"])
    flower = " ".join(SERVICES["flower"]["healthcheck"]["test"])

    assert "http://127.0.0.1:8000/readyz" in web
    assert "http://127.0.0.1:5555/healthcheck" in flower


def test_agents_restart_on_failure_and_stay_down_when_shut_down_on_purpose():
    # A requested warm shutdown exits 0: `on-failure` leaves it down, restarts the rest.
    assert SERVICES["agent"]["restart"] == "on-failure"


@pytest.mark.parametrize("name", ["web", "flower"])
def test_web_and_flower_restart_whatever_their_exit(name):
    assert SERVICES[name]["restart"] == "unless-stopped"


def test_the_one_shot_setup_is_never_restarted():
    assert SERVICES["setup"]["restart"] == "no"
