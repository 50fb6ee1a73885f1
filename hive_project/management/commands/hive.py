"""`manage.py hive ...`: every Hive process and operator command has one entry point here."""

import json
import logging
import os
import re
import secrets
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis
from celery.exceptions import TimeoutError as CeleryTimeoutError
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from agents import worker
from agents.models import Agent
from agents.pool import agent_pool_load, agent_spec
from agents.routing import RoutingError, agent_queue, agent_queues, route
from agents.services import agent_register
from agents.skills import SkillError, skill_get
from coordination.models import Run, Workflow
from coordination.services import RunError, run_start, workflow_load
from hive_core.db import connections_name
from hive_core.embedded_redis import embedded_redis_ensure, embedded_redis_stop
from hive_core.services import admin_ensure, token_rotate
from hive_core.yamlfile import DefinitionError
from hive_project import __version__
from hive_project.celery import app
from ops.flower_auth import flower_metrics_protect
from ops.processes import shell_line, stack_processes

# The long-running processes: they start the embedded Redis if it is not up yet, and
# log every event they publish.
_SERVICES = {"up", "web", "agent", "coordinator", "flower"}


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


def _json_dumps(value: object) -> str:
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


def _slug_of(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "host"


class Command(BaseCommand):
    help = "Run and operate Hive; each action is described in the README (Command line)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        sub.add_parser("up", help="Set up, then run the whole stack until Ctrl-C.")
        sub.add_parser("setup", help="Migrate and make sure the admin user exists.")

        web = sub.add_parser("web", help="Serve the dashboard, API and WebSockets (ASGI).")
        web.add_argument("--port", type=int, default=settings.HIVE_PORT)

        agent = sub.add_parser("agent", help="Run one agent: a Celery worker with an identity.")
        agent.add_argument(
            "--name",
            default=os.environ.get("HIVE_AGENT_NAME") or None,
            help="Unique agent name (default: HIVE_AGENT_NAME, else ROLE-HOSTNAME, "
            "so replicas of one container get names of their own).",
        )
        agent.add_argument("--role", help="Role (default: the name).")
        agent.add_argument(
            "--skills", default="", help="Comma-separated skills, e.g. noop,http.request."
        )
        agent.add_argument("--concurrency", type=int, default=1, help="Parallel steps.")

        sub.add_parser("coordinator", help="Run the coordinator: beat schedule and reaper.")

        flower = sub.add_parser("flower", help="Run Flower behind basic auth.")
        flower.add_argument("--port", type=int, default=settings.HIVE_FLOWER_PORT)

        ping = sub.add_parser("ping", help="Round-trip a message to an agent through Redis.")
        ping.add_argument("--agent", required=True, help="Agent name.")
        ping.add_argument("--timeout", type=float, default=10.0, help="Seconds to wait.")

        run = sub.add_parser("skill", help="Run one skill on a live agent and print its output.")
        run.add_argument("skill", help="Skill name, e.g. http.request.")
        run.add_argument("--inputs", default="{}", help="The inputs as a JSON object.")
        run.add_argument("--agent", default="", help="Run it on this agent.")
        run.add_argument("--role", default="", help="Run it on an agent of this role.")
        run.add_argument("--timeout", type=float, default=60.0, help="Seconds to wait.")

        workflow = sub.add_parser("workflow", help="Load workflow definitions, start runs.")
        verbs = workflow.add_subparsers(dest="verb", required=True, metavar="VERB")
        load = verbs.add_parser("load", help="Validate and save definition files.")
        load.add_argument("paths", nargs="+", metavar="FILE")
        start = verbs.add_parser("start", help="Start a run of the newest version.")
        start.add_argument("name", help="Workflow name.")
        start.add_argument("--params", default="{}", help="The params as a JSON object.")
        start.add_argument("--wait", action="store_true", help="Wait for the run to finish.")
        start.add_argument("--timeout", type=float, default=600.0, help="Seconds to wait.")

        load = sub.add_parser("load", help="Sync slash command definitions into the database.")
        load.add_argument(
            "paths", nargs="*", metavar="PATH",
            help="Files or folders (default: the shipped commands and HIVE_COMMAND_DIRS).",
        )  # fmt: skip

        command = sub.add_parser("run", help='Execute a slash command: hive run "/hive:help".')
        command.add_argument("text", help='The command, quoted: "/demo:release 1.4.0 env=prod".')
        command.add_argument(
            "--user",
            default=settings.HIVE_ADMIN_USER,
            help="Run it as this user (default: the admin).",
        )
        command.add_argument(
            "--wait",
            action="store_true",
            help="Wait for the run and print its outputs; exit 0 only if it succeeds.",
        )
        command.add_argument("--json", dest="as_json", action="store_true", help="Print JSON.")
        command.add_argument("--timeout", type=float, default=600.0, help="Seconds to wait.")
        command.add_argument("--dry-run", action="store_true", help="Show the plan; start nothing.")

        token = sub.add_parser("token", help="Print the API token of a user (created if needed).")
        token.add_argument("user", help="Username.")
        token.add_argument(
            "--rotate", action="store_true", help="Replace it with a new one (the old one stops)."
        )

    def handle(self, *args, action: str, **options):
        started_redis = False
        if action not in _SERVICES:
            # A one-shot command prints its outcome; the events it causes are on the
            # dashboard and in the services' logs, not interleaved with its output.
            logging.getLogger("hive.events").setLevel(logging.WARNING)
        if action in _SERVICES and settings.REDIS_EMBEDDED:
            started_redis = embedded_redis_ensure(
                directory=settings.VAR_DIR, socket_path=settings.REDIS_EMBEDDED_SOCKET
            )
        try:
            getattr(self, f"handle_{action}")(**options)
        finally:
            # `hive up` owns the embedded Redis it started: Ctrl-C stops it too.
            if started_redis and action == "up":
                embedded_redis_stop(socket_path=settings.REDIS_EMBEDDED_SOCKET)

    # --- processes -------------------------------------------------------------

    def handle_up(self, **options) -> None:
        from honcho.manager import Manager

        try:
            pool = agent_pool_load(settings.HIVE_AGENTS_FILE)
        except DefinitionError as exc:
            raise CommandError(str(exc)) from None
        password, created = self.handle_setup(banner=False)
        flower_user = os.environ.get("HIVE_FLOWER_USER") or settings.HIVE_ADMIN_USER
        flower_password = os.environ.get("HIVE_FLOWER_PASSWORD") or password
        flower_password = flower_password or secrets.token_urlsafe(12)
        self._print_banner(pool, password, created, flower_user, flower_password)

        manager = Manager()
        env = {
            **os.environ,
            "HIVE_FLOWER_USER": flower_user,
            "HIVE_FLOWER_PASSWORD": flower_password,
        }
        for name, argv in stack_processes(pool).items():
            manager.add_process(name, shell_line(argv), env=env, cwd=str(settings.BASE_DIR))
        # honcho stops every process when one exits or on Ctrl-C / SIGTERM.
        manager.loop()
        raise SystemExit(manager.returncode)

    def handle_setup(self, *, banner: bool = True, **options) -> tuple[str | None, bool]:
        from commands.services import commands_load

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
                self.stdout.write(f"commands: {change}")
        if banner:
            self.stdout.write(f"login       {settings.HIVE_ADMIN_USER} / {_shown(password)}")
        return password, created

    def _print_banner(self, pool, password, created, flower_user, flower_password) -> None:
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
            "  Ctrl-C stops everything.",
            "",
        ]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()

    def handle_web(self, *, port: int, **options) -> None:
        from daphne.cli import CommandLineInterface

        # No --proxy-headers: daphne would believe X-Forwarded-* from any client.
        # hive_core.proxies reads them from HIVE_TRUSTED_PROXIES only.
        CommandLineInterface().run(
            ["--bind", settings.HIVE_BIND, "--port", str(port), "hive_project.asgi:application"]
        )

    def handle_agent(
        self, *, name: str, role: str | None, skills: str, concurrency: int, **options
    ) -> None:
        role = role or name or "agent"
        try:
            spec = agent_spec(
                name=name or f"{role}-{_slug_of(socket.gethostname())}",
                role=role,
                skills=[s for s in skills.split(",") if s],
                concurrency=concurrency,
                at="--",
            )
        except DefinitionError as exc:
            raise CommandError(str(exc)) from None
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
        app.worker_main(
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

    def handle_coordinator(self, **options) -> None:
        connections_name(name="hive-coordinator")
        # Its passes run every HIVE_REAPER_INTERVAL, three INFO lines each (sent,
        # received, succeeded) burying everything else in `hive up`'s output; a pass
        # that recovers something says so itself (coordination.tasks).
        for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
            logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
        app.worker_main(
            [
                "worker",
                "--beat",
                # Schedules live in the database (django-celery-beat), beside the
                # reaper's entry from CELERY_BEAT_SCHEDULE.
                f"--scheduler={settings.CELERY_BEAT_SCHEDULER}",
                "--hostname=coordinator@%h",
                f"--queues={settings.HIVE_COORDINATOR_QUEUE}",
                # One reaper at a time, in order; solo keeps it a single process.
                "--pool=solo",
                f"--loglevel={settings.HIVE_LOG_LEVEL}",
                "--without-mingle",
                "--without-gossip",
            ]
        )

    def handle_flower(self, *, port: int, **options) -> None:
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
        app.start(["flower", f"--address={settings.HIVE_BIND}", f"--port={port}"])

    # --- operator commands -----------------------------------------------------

    def handle_ping(self, *, agent: str, timeout: float, **options) -> None:
        from agents.tasks import ping_task

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
        self.stdout.write(
            f"pong from {reply['hostname']} (pid {reply['pid']}) in {elapsed_ms:.1f} ms"
        )

    def handle_skill(
        self, *, skill: str, inputs: str, agent: str, role: str, timeout: float, **options
    ) -> None:
        from agents.tasks import skill_run_task

        try:
            arguments = json.loads(inputs)
        except (ValueError, RecursionError) as exc:  # nested past Python's stack
            raise CommandError(f"--inputs: not valid JSON: {exc}") from None
        try:
            skill_get(skill).validate(arguments)
            queue = route(skill=skill, agent=agent, role=role)
        except (SkillError, RoutingError) as exc:
            raise CommandError(str(exc)) from None
        result = skill_run_task.apply_async((skill, arguments), queue=queue, expires=timeout)
        try:
            reply = result.get(timeout=timeout)
        except CeleryTimeoutError:
            raise CommandError(f"no agent answered within {timeout:g} s") from None
        except SkillError as exc:
            raise CommandError(str(exc)) from None
        finally:
            result.forget()
        self.stdout.write(json.dumps(reply, indent=2))

    def handle_workflow(self, *, verb: str, **options) -> None:
        if verb == "load":
            for path in options["paths"]:
                try:
                    workflow, created = workflow_load(path=Path(path))
                except DefinitionError as exc:
                    raise CommandError(str(exc)) from None
                self.stdout.write(f"{workflow} {'saved' if created else 'unchanged'} ({path})")
            return
        workflow = Workflow.objects.filter(name=options["name"]).order_by("-version").first()
        if workflow is None:
            raise CommandError(f"no workflow named {options['name']!r}; load it first")
        try:
            run = run_start(workflow=workflow, params=json.loads(options["params"]))
        except (ValueError, RecursionError) as exc:  # nested past Python's stack
            raise CommandError(f"--params: not valid JSON: {exc}") from None
        except RunError as exc:
            where = "" if exc.field == "workflow" else "--params: "
            raise CommandError(f"{where}{exc}") from None
        self.stdout.write(f"run {run.pk} of {workflow}: {run.state}")
        deadline = time.monotonic() + options["timeout"]
        while options["wait"] and run.state not in Run.TERMINAL:
            if time.monotonic() > deadline:
                raise CommandError(f"run {run.pk} still {run.state} after {options['timeout']:g} s")
            time.sleep(0.2)
            run.refresh_from_db()
        if options["wait"]:
            self.stdout.write(f"run {run.pk}: {run.state}{': ' + run.error if run.error else ''}")
            if run.state != Run.State.SUCCEEDED:
                raise SystemExit(1)

    # --- slash commands ----------------------------------------------------------

    def handle_load(self, *, paths: list[str], **options) -> None:
        from commands.services import commands_load

        changes = commands_load(paths=[Path(p) for p in paths] or None)
        for change in changes:
            (self.stderr if change.action == "error" else self.stdout).write(str(change))
        if any(change.action == "error" for change in changes):
            raise CommandError("some definitions were not loaded (see above)")

    def handle_run(
        self,
        *,
        text: str,
        user: str,
        wait: bool,
        as_json: bool,
        timeout: float,
        dry_run: bool,
        **options,
    ) -> None:
        from commands.api.serializers import InvocationSerializer
        from commands.models import Invocation
        from commands.selectors import run_outputs
        from commands.services import CommandFailure, command_execute

        account = get_user_model().objects.filter(username=user).first()
        if account is None:
            raise CommandError(f"--user: no user named {user!r}")
        try:
            invocation = command_execute(
                text=text, user=account, source=Invocation.Source.CLI, dry_run=dry_run
            )
        except CommandFailure as exc:
            # Exit codes: 2 the text is wrong, 3 permission denied, 1 anything else.
            code = {"invalid": 2, "denied": 3}.get(exc.code, 1)
            if as_json:
                error = {"code": exc.code, "message": str(exc)}
                self.stdout.write(_json_dumps({"error": error, "invocation": exc.invocation.pk}))
                raise SystemExit(code) from None
            raise CommandError(exc.pointed, returncode=code) from None
        deadline = time.monotonic() + timeout
        while wait and invocation.outcome == Invocation.Outcome.QUEUED:
            self._sleep_until(deadline, f"invocation {invocation.pk} still queued")
            invocation.refresh_from_db()
        run = invocation.run
        if not as_json:
            self.stdout.write(self._describe(invocation))
        while wait and run is not None and run.state not in Run.TERMINAL:
            self._sleep_until(deadline, f"run {run.pk} still {run.state}")
            run.refresh_from_db()
        if as_json:
            invocation.refresh_from_db()
            self.stdout.write(_json_dumps(InvocationSerializer(invocation).data))
        elif wait and run is not None:
            self.stdout.write(f"run {run.pk}: {run.state}{': ' + run.error if run.error else ''}")
            for key, output in run_outputs(run=run).items():
                self.stdout.write(f"{key}: {json.dumps(output, ensure_ascii=False, default=str)}")
        if wait and ((run is None and invocation.outcome != Invocation.Outcome.DONE) or (
                run is not None and run.state != Run.State.SUCCEEDED)):  # fmt: skip
            raise SystemExit(1)

    def _sleep_until(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise CommandError(f"{what} after the --timeout")
        time.sleep(0.2)

    def _describe(self, invocation) -> str:
        head = f"invocation {invocation.pk}: {invocation.outcome}"
        if invocation.run_id:
            run = invocation.run
            return f"{head}: run {run.pk} of {run.workflow}: {run.state}"
        if invocation.outcome == "done":
            return invocation.output.get("message", "")
        if invocation.outcome == "planned":
            return f"{head} (dry run, nothing started)\n{_json_dumps(invocation.output)}"
        return f"{head}{': ' + invocation.error if invocation.error else ''}"

    def handle_token(self, *, user: str, rotate: bool, **options) -> None:
        from rest_framework.authtoken.models import Token

        account = get_user_model().objects.filter(username=user).first()
        if account is None:
            raise CommandError(f"user: no user named {user!r}")
        if rotate:
            token = token_rotate(user=account)
        else:
            token, _ = Token.objects.get_or_create(user=account)
        self.stdout.write(token.key)
