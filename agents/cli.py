"""The agents' `hive` actions: `agent` (the process), `ping` and `skill` (operator tools)."""

import json
import os
import re
import socket
import time

import redis
from celery import current_app
from celery.exceptions import TimeoutError as CeleryTimeoutError
from django.conf import settings
from django.core.management.base import CommandError

from agents import worker
from agents.models import Agent
from agents.pool import agent_spec
from agents.routing import agent_queue, agent_queues, route
from agents.services import agent_register
from agents.skills import skill_get
from hive_core import __version__
from hive_core.cli import Output, Subcommand
from hive_core.db import connections_name


def _slug_of(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "host"


class AgentAction(Subcommand):
    name = "agent"
    help = "Run one agent: a Celery worker with an identity."
    process = True

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--name",
            default=os.environ.get("HIVE_AGENT_NAME") or None,
            help="Unique agent name (default: HIVE_AGENT_NAME, else ROLE-HOSTNAME, "
            "so replicas of one container get names of their own).",
        )
        parser.add_argument("--role", help="Role (default: the name).")
        parser.add_argument(
            "--skills", default="", help="Comma-separated skills, e.g. noop,http.request."
        )
        parser.add_argument("--concurrency", type=int, default=1, help="Parallel steps.")

    def handle(self, options: dict, out: Output) -> None:
        name = options["name"]
        role = options["role"] or name or "agent"
        spec = agent_spec(
            name=name or f"{role}-{_slug_of(socket.gethostname())}",
            role=role,
            skills=[s for s in options["skills"].split(",") if s],
            concurrency=options["concurrency"],
            at="--",
        )
        # Its pool processes, forked later, keep the name: one connection each.
        connections_name(name=f"hive-agent:{spec.name}")
        # The bootstep and the pool processes (forked later) read who they are here.
        worker.identity = spec
        agent_register(
            name=spec.name,
            role=spec.role,
            skills=list(spec.skills),
            concurrency=spec.concurrency,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
        )
        queues = agent_queues(name=spec.name, role=spec.role, skills=list(spec.skills))
        # hive_project's Celery app, current since Django started (hive_project/__init__).
        current_app.worker_main(
            [
                "worker",
                f"--hostname={spec.name}@%h",
                f"--queues={','.join(queues)}",
                f"--concurrency={spec.concurrency}",
                "--pool=prefork",
                f"--loglevel={settings.HIVE_LOG_LEVEL}",
                # Agents find each other through the database, not worker gossip;
                # skipping mingle and gossip makes start-up faster and quieter.
                "--without-mingle",
                "--without-gossip",
            ]
        )


class PingAction(Subcommand):
    name = "ping"
    help = "Round-trip a message to an agent through Redis."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--agent", required=True, help="Agent name.")
        parser.add_argument("--timeout", type=float, default=10.0, help="Seconds to wait.")

    def handle(self, options: dict, out: Output) -> None:
        from agents.tasks import ping_task

        agent, timeout = options["agent"], options["timeout"]
        row = Agent.objects.filter(name=agent).first()
        if row is None:
            raise CommandError(f"--agent: no agent named {agent!r} is registered")
        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout).ping()
        except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError) as exc:
            raise CommandError(
                f"REDIS_URL: cannot reach Redis at {settings.REDIS_URL}: {exc}"
            ) from None
        started = time.perf_counter()
        # Expire the ping with the wait, so an agent that starts later drops it.
        result = ping_task.apply_async(queue=agent_queue(agent), expires=timeout)
        try:
            reply = result.get(timeout=timeout)
        except CeleryTimeoutError:
            raise CommandError(
                f"no reply from agent {agent!r} within {timeout:g} s (status: {row.status})"
            ) from None
        finally:
            result.forget()
        elapsed_ms = (time.perf_counter() - started) * 1000
        out.write(f"pong from {reply['hostname']} (pid {reply['pid']}) in {elapsed_ms:.1f} ms")


class SkillAction(Subcommand):
    name = "skill"
    help = "Run one skill on a live agent and print its output."

    def add_arguments(self, parser) -> None:
        parser.add_argument("skill", help="Skill name, e.g. http.request.")
        parser.add_argument("--inputs", default="{}", help="The inputs as a JSON object.")
        parser.add_argument("--agent", default="", help="Run it on this agent.")
        parser.add_argument("--role", default="", help="Run it on an agent of this role.")
        parser.add_argument("--timeout", type=float, default=60.0, help="Seconds to wait.")

    def handle(self, options: dict, out: Output) -> None:
        from agents.tasks import skill_run_task

        skill, timeout = options["skill"], options["timeout"]
        try:
            arguments = json.loads(options["inputs"])
        except (ValueError, RecursionError) as exc:  # nested past Python's stack
            raise CommandError(f"--inputs: not valid JSON: {exc}") from None
        # An unknown skill, bad inputs or no agent to route to: the dispatcher reports it.
        skill_get(skill).validate(arguments)
        queue = route(skill=skill, agent=options["agent"], role=options["role"])
        result = skill_run_task.apply_async((skill, arguments), queue=queue, expires=timeout)
        try:
            reply = result.get(timeout=timeout)
        except CeleryTimeoutError:
            raise CommandError(f"no agent answered within {timeout:g} s") from None
        finally:
            result.forget()
        out.write(json.dumps(reply, indent=2))
