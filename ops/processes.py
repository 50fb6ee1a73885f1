"""The command line of every Hive process, shared by `hive up` and docker-compose.yml."""

import sys

from django.conf import settings

from agents.pool import AgentSpec


def hive_argv(*args: str) -> list[str]:
    return [sys.executable, str(settings.BASE_DIR / "manage.py"), "hive", *args]


def agent_argv(spec: AgentSpec) -> list[str]:
    return hive_argv(
        "agent",
        f"--name={spec.name}",
        f"--role={spec.role}",
        f"--skills={','.join(spec.skills)}",
        f"--concurrency={spec.concurrency}",
    )


def stack_processes(pool: list[AgentSpec]) -> dict[str, list[str]]:
    """Every process of a full stack by name: web, coordinator, Flower, one per agent."""
    processes = {
        "web": hive_argv("web"),
        "coordinator": hive_argv("coordinator"),
        "flower": hive_argv("flower"),
    }
    processes.update({f"agent.{spec.name}": agent_argv(spec) for spec in pool})
    return processes
