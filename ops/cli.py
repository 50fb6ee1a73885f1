"""The stack's `hive` actions: `up` (everything), `setup`, `web` and `flower`."""

import os
import secrets
from urllib.parse import urlsplit

from celery import current_app
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import close_old_connections

from agents.pool import AgentSpec, agent_pool_load
from agents.selectors import agent_shutdown_requested
from commands.services import commands_load
from events.kinds import subject
from events.services import event_emit
from hive_core.cli import Output, Subcommand
from hive_core.db import connections_name
from hive_core.services import admin_ensure
from ops.flower_auth import flower_metrics_protect
from ops.processes import stack_processes
from ops.restarts import RestartPolicy
from ops.supervisor import Exit, Supervisor


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def _shown(password: str | None, variable: str = "HIVE_ADMIN_PASSWORD") -> str:
    """A password as the start banner prints it: only one Hive generated is shown.

    One from the environment is the operator's own secret; printing it puts it in
    terminal scrollback, `docker compose logs` and every log collector.
    """
    if not password:
        return "(unchanged; reset it with: manage.py changepassword)"
    for name in (variable, "HIVE_ADMIN_PASSWORD"):
        if password == os.environ.get(name):
            return f"(from {name})"
    return password


def stack_setup(out: Output) -> tuple[str | None, bool]:
    """Migrate, make sure the admin exists and load the commands; return (the admin's
    password if known, created)."""
    call_command("migrate", interactive=False, verbosity=0)
    password, created = admin_ensure(
        username=settings.HIVE_ADMIN_USER,
        password=os.environ.get("HIVE_ADMIN_PASSWORD", ""),
        password_file=settings.VAR_DIR / "admin_password",
    )
    # The shipped commands and HIVE_COMMAND_DIRS; a broken file is reported and
    # skipped, it does not stop the stack.
    for change in commands_load():
        if change.action != "unchanged":
            out.write(f"commands: {change}")
    return password, created


class SetupAction(Subcommand):
    name = "setup"
    help = "Migrate and make sure the admin user exists."

    def handle(self, options: dict, out: Output) -> None:
        password, _ = stack_setup(out)
        out.write(f"login       {settings.HIVE_ADMIN_USER} / {_shown(password)}")


def _banner(pool: list[AgentSpec], password, created, flower_user, flower_password) -> str:
    # A wildcard bind is reachable on loopback; print an address a browser can open.
    wildcard = settings.HIVE_BIND in {"0.0.0.0", "::"}  # noqa: S104
    web = f"http://{'127.0.0.1' if wildcard else settings.HIVE_BIND}:{settings.HIVE_PORT}"
    flower = web.rsplit(":", 1)[0] + f":{settings.HIVE_FLOWER_PORT}"
    db = settings.DATABASES["default"]
    broker = (
        f"embedded, {settings.REDIS_EMBEDDED_SOCKET}"
        if settings.REDIS_EMBEDDED
        else _without_password(settings.REDIS_URL)
    )
    login = _shown(password)
    new = "  (new user)" if created else ""
    lines = [
        "",
        "Hive is starting",
        f"  dashboard   {web}/",
        f"  API         {web}/api/v1/",
        f"  admin       {web}/admin/",
        f"  Flower      {flower}/",
        f"  login       {settings.HIVE_ADMIN_USER} / {login}{new}",
        f"  Flower      {flower_user} / {_shown(flower_password, 'HIVE_FLOWER_PASSWORD')}",
        f"  database    {db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}",
        f"  redis       {broker}",
        f"  agents      {', '.join(s.name for s in pool)} ({settings.HIVE_AGENTS_FILE.name})",
        "  A process that exits is restarted; Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


class UpAction(Subcommand):
    name = "up"
    help = "Set up, then run the whole stack until Ctrl-C."
    process = True
    owns_embedded_redis = True

    def handle(self, options: dict, out: Output) -> None:
        pool = agent_pool_load(settings.HIVE_AGENTS_FILE)
        password, created = stack_setup(out)
        flower_user = os.environ.get("HIVE_FLOWER_USER") or settings.HIVE_ADMIN_USER
        flower_password = os.environ.get("HIVE_FLOWER_PASSWORD") or password
        flower_password = flower_password or secrets.token_urlsafe(12)
        out.write(_banner(pool, password, created, flower_user, flower_password))
        out.stdout.flush()

        supervisor = Supervisor(
            policy=RestartPolicy(
                delay=settings.HIVE_RESTART_DELAY, delay_max=settings.HIVE_RESTART_DELAY_MAX
            ),
            intended=_asked_to_stop,
            record=_process_event,
        )
        env = {
            **os.environ,
            "HIVE_FLOWER_USER": flower_user,
            "HIVE_FLOWER_PASSWORD": flower_password,
        }
        for name, argv in stack_processes(pool).items():
            supervisor.add_process(name, argv, env=env, cwd=str(settings.BASE_DIR))
        # Until Ctrl-C / SIGTERM, which stops every process; one that exits before is
        # restarted (ops/supervisor.py), unless it was asked to stop.
        supervisor.loop()
        raise SystemExit(supervisor.returncode)


AGENT_PROCESS = "agent."  # stack_processes names an agent's process agent.NAME


def _asked_to_stop(exit_: Exit) -> bool:
    """An agent shut down on purpose (the API, the admin) stays down: agent_shutdown
    records the request, naming the process, before it tells the agent. Decided by
    that record, not by the exit status: a warm shutdown on a stray SIGTERM exits 0
    too, and nobody asked Hive to stop that one."""
    if not exit_.name.startswith(AGENT_PROCESS):
        return False
    close_old_connections()  # `hive up` holds its connection for hours
    name = exit_.name.removeprefix(AGENT_PROCESS)
    return agent_shutdown_requested(name=name, pid=exit_.pid, since=exit_.started_at)


def _process_event(kind: str, name: str, data: dict) -> None:
    close_old_connections()
    event_emit(kind=kind, subject=subject("process", name), data={"process": name, **data})


class WebAction(Subcommand):
    name = "web"
    help = "Serve the dashboard, API and WebSockets (ASGI)."
    process = True

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=settings.HIVE_PORT)

    def handle(self, options: dict, out: Output) -> None:
        from daphne.cli import CommandLineInterface

        # No --proxy-headers: daphne would believe X-Forwarded-* from any client.
        # hive_core.proxies reads them from HIVE_TRUSTED_PROXIES only.
        port = options["port"]
        CommandLineInterface().run(
            ["--bind", settings.HIVE_BIND, "--port", str(port), "hive_project.asgi:application"]
        )


class FlowerAction(Subcommand):
    name = "flower"
    help = "Run Flower behind basic auth."
    process = True

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=settings.HIVE_FLOWER_PORT)

    def handle(self, options: dict, out: Output) -> None:
        port = options["port"]
        connections_name(name="hive-flower")
        user = os.environ.get("HIVE_FLOWER_USER") or settings.HIVE_ADMIN_USER
        password = os.environ.get("HIVE_FLOWER_PASSWORD") or os.environ.get("HIVE_ADMIN_PASSWORD")
        if not password:
            raise CommandError(
                "HIVE_FLOWER_PASSWORD: Flower needs a password (or set HIVE_ADMIN_PASSWORD)"
            )
        # Through the environment, not argv, so the password is not in `ps`.
        os.environ["FLOWER_BASIC_AUTH"] = f"{user}:{password}"
        flower_metrics_protect()
        # hive_project's Celery app, current since Django started (hive_project/__init__).
        current_app.start(["flower", f"--address={settings.HIVE_BIND}", f"--port={port}"])
