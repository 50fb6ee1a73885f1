"""Agents on two hosts of their own: each in a network namespace that reaches Redis
and PostgreSQL only over its own veth link. One run's steps spread over both; when
one host's link is cut its agent goes offline and its steps finish on the other.

PostgreSQL on this machine listens on 127.0.0.1 only, and the shared server is not
to be reconfigured, so the test forwards the host side of each link to it (an
asyncio TCP proxy in the test process): from inside a namespace the database is
at the link's host address, exactly as a remote database would be. Redis is a
private redis-server bound to 127.0.0.1 and both links' host addresses.
"""

import asyncio
import os
import shutil
import subprocess
import threading
import time

import pytest
from django.db import connection
from django.utils import timezone

from agents.models import Agent
from coordination.models import StepRun
from ops.processes import hive_argv
from tests.chaos.support import fan_out, run_counts, start_run_on, under_way
from tests.processes import database_url, free_port, wait_for
from tests.redis_server import private_redis_server
from tests.runs import wait_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chaos, pytest.mark.slow]

# Private addresses for the links, one /24 per host; the host side is .1.
SUBNETS = {"a": "10.199.71", "b": "10.199.72"}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Host:
    """A network namespace joined to this machine by a veth pair."""

    def __init__(self, label: str):
        tag = f"{os.getpid() % 100000}{label}"
        self.netns = f"hive-chaos-{tag}"
        self.outside, self.inside = f"hv{tag}o", f"hv{tag}i"  # <= 15 characters
        self.gateway = f"{SUBNETS[label]}.1"  # this machine, as the host sees it
        self.address = f"{SUBNETS[label]}.2"

    def create(self) -> None:
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
        _ip("link", "set", self.inside, "netns", self.netns)
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.outside)
        _ip("link", "set", self.outside, "up")
        _ip("-n", self.netns, "addr", "add", f"{self.address}/24", "dev", self.inside)
        _ip("-n", self.netns, "link", "set", self.inside, "up")
        _ip("-n", self.netns, "link", "set", "lo", "up")

    def cut(self) -> None:
        _ip("link", "set", self.outside, "down")

    def destroy(self) -> None:
        # Deleting the namespace deletes its end of the pair, and with it ours.
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "delete", self.outside], capture_output=True, timeout=10)

    def argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]


class Forwarder:
    """Forward TCP connections on (address, port) pairs to PostgreSQL on loopback."""

    def __init__(self, listen: list[str], target: tuple[str, int]):
        self.listen, self.target, self.port = listen, target, free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.servers = []

    def start(self) -> None:
        self.thread.start()
        for address in self.listen:
            start = asyncio.start_server(self._handle, address, self.port)
            self.servers.append(asyncio.run_coroutine_threadsafe(start, self.loop).result(10))

    async def _handle(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        async def close():
            for server in self.servers:
                server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture
def hosts():
    """Two namespaces, removed at teardown whatever happened (after the processes in
    them: request this fixture before `processes`)."""
    if connection.vendor != "postgresql":
        pytest.skip("agents on other hosts need a database server; SQLite is a local file")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2's `ip` is not installed")
    made = {label: Host(label) for label in SUBNETS}
    try:
        for host in made.values():
            host.create()
    except subprocess.CalledProcessError as exc:
        for host in made.values():
            host.destroy()
        pytest.skip(f"cannot make network namespaces here: {exc.stderr.decode().strip()}")
    yield made
    for host in made.values():
        host.destroy()


@pytest.fixture
def link_services(hosts, tmp_path):
    """Redis and PostgreSQL reachable at each link's host address."""
    directory = tmp_path / "redis"
    directory.mkdir()
    gateways = [h.gateway for h in hosts.values()]
    redis_server = private_redis_server(directory, bind=" ".join(["127.0.0.1", *gateways]))
    db = connection.settings_dict
    forwarder = Forwarder(gateways, (db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
    forwarder.start()
    yield redis_server, forwarder
    forwarder.stop()
    redis_server.stop()


def test_agents_on_two_hosts_share_a_run_and_one_cut_off_hands_its_steps_over(
    hosts, link_services, processes, make_workflow, chaos_report
):
    redis_server, forwarder = link_services
    local_db = database_url()
    for label, host in hosts.items():
        # The test database by the link's address: the same URL with another host.
        db_url = local_db.replace(
            local_db.split("@", 1)[1].split("/", 1)[0], f"{host.gateway}:{forwarder.port}"
        )
        argv = hive_argv("agent", f"--name=host-{label}", "--skills=sleep,noop", "--concurrency=2")
        processes.start_argv(
            host.argv(argv),
            name=f"host-{label}",
            REDIS_URL=redis_server.url_at(host.gateway),
            DATABASE_URL=db_url,
        )
    wait_for(
        lambda: Agent.objects.filter(name__in=["host-a", "host-b"], status="idle").count() == 2,
        timeout=60,
        what="both agents to register from their hosts",
    )
    processes.start("coordinator", name="coordinator", REDIS_URL=redis_server.url)
    # 120 steps of 0.25 s on 2 x 2 slots: ~8 s of work, long enough to cut a link in.
    workflow = fan_out(make_workflow, seconds=0.25)
    run = start_run_on(processes, workflow, redis_server.url, items=120)
    under_way(run, done=20)
    ran_on = set(StepRun.objects.filter(run=run).exclude(agent="").values_list("agent", flat=True))
    assert ran_on == {"host-a", "host-b"}  # the work spread over both hosts

    hosts["a"].cut()
    cut_at, cut_when = time.monotonic(), timezone.now()

    wait_for(
        lambda: Agent.objects.get(name="host-a").status == "offline",
        timeout=30,
        what="host-a to be marked offline",
    )
    offline_after = time.monotonic() - cut_at
    run = wait_run(run, timeout=120)
    counts = run_counts(run, redis_client=redis_server.client())
    chaos_report(
        scenario="two hosts (netns), one's link cut",
        unit="steps",
        note=f"host-a offline {offline_after:.0f} s after the cut",
        **counts,
    )

    assert run.state == "succeeded", run.error
    assert counts["lost"] == counts["duplicated"] == 0
    items = StepRun.objects.filter(run=run, group__isnull=False)
    # Steps host-a held when it was cut were run again, and finished, on host-b.
    handed_over = [s for s in items.filter(tries__gt=1) if s.agent == "host-b"]
    assert handed_over or counts["recovered"], "no step was recovered from host-a"
    # Cut off from the database, host-a finished nothing after the cut: host-b did it all.
    assert not items.filter(finished_at__gt=cut_when, agent="host-a").exists()
    assert items.filter(finished_at__gt=cut_when, agent="host-b").exists()
    assert Agent.objects.get(name="host-b").status in {"idle", "busy"}
