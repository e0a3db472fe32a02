"""The component runner (client/component.py) that every daemon's main goes through.

Given a real apiserver, a tiny daemon built on `Command` (this module, run as
`python -m tests.test_component`) marks that it is acting by creating a
ConfigMap `acting-<pid>` and removes it in its clean-up. Then:

- its flags are the shared ones plus its own, with kube-controller-manager's
  names and defaults;
- SIGTERM cancels the body, whose clean-up still has its client, and the
  process exits 0;
- an expected failure ends it with one line, `NAME: message`, and no traceback;
- with --leader-elect only the copy holding the Lease acts; stopping it hands
  the Lease to the standby at once, and a copy that loses the Lease stops acting
  and exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from client import Client
from client.component import Command, LeaderElection, until_stopped
from proto import coordination_pb2, core_pb2
from proto.errors import ApiError, NotFound
from provision.processes import ApiServer, Process

NAME = "flotilla-test-component"
LEASE_ENV = "FLOTILLA_TEST_LEASE"
# Short timings so a takeover takes seconds; a lease long enough that only a release explains a fast one.
ELECTION = ["--leader-elect", "true", "--leader-elect-lease-duration", "10s",
            "--leader-elect-renew-deadline", "2s", "--leader-elect-retry-period", "0.3s"]


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", required=True, help="where to mark that this copy is acting")
    parser.add_argument("--fail", action="store_true", help="read an object that does not exist (NotFound)")


COMMAND = Command(NAME, __doc__, flags=add_flags,
                  leader_election=LeaderElection(os.environ.get(LEASE_ENV, NAME), enabled_by_default=False))


async def run(opts: argparse.Namespace, client: Client) -> None:
    """The test daemon's body: mark, act until cancelled, unmark."""
    marker = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    marker.metadata.name, marker.metadata.namespace = f"acting-{os.getpid()}", opts.namespace
    await client.create(marker)
    try:
        if opts.fail:
            await client.get(core_pb2.ConfigMap, "does-not-exist", opts.namespace)
        await until_stopped()
    finally:
        await client.delete(core_pb2.ConfigMap, marker.metadata.name, opts.namespace)


# ---------------------------------------------------------------- helpers


@pytest.fixture
def daemons(apiserver: ApiServer, namespace: str, tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start copies of the test daemon against the test apiserver; every copy is killed at the end."""
    started: list[Process] = []

    def start(*flags: str) -> Process:
        proc = Process(f"component-{len(started)}",
                       [sys.executable, "-m", "tests.test_component", "--server", apiserver.address,
                        "--namespace", namespace, *flags],
                       tmp_path / f"component-{len(started)}.log", env={LEASE_ENV: f"lease-{namespace}"})
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


async def acting(client: Client, namespace: str) -> set[int]:
    """The pids of the copies whose body is running (their markers)."""
    markers = await client.list(core_pb2.ConfigMap, namespace)
    return {int(m.metadata.name.removeprefix("acting-")) for m in markers.items
            if m.metadata.name.startswith("acting-")}


def only(client: Client, namespace: str, *pids: int) -> Callable[[], Awaitable[bool]]:
    """A check: exactly these copies are acting."""
    async def check() -> bool:
        return await acting(client, namespace) == set(pids)
    return check


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


async def exit_code(proc: Process, timeout: float = 15.0) -> int:
    assert proc.popen is not None
    return await asyncio.to_thread(proc.popen.wait, timeout)


# ---------------------------------------------------------------- flags


def test_flags_are_the_shared_ones_and_the_daemons_own() -> None:
    opts = COMMAND.parse_args(["--kubeconfig", "/etc/flotilla/x.conf", "--namespace", "n", "--log-level", "debug",
                               "--leader-elect-lease-duration", "1m30s"])
    assert (opts.server, opts.kubeconfig, opts.namespace) == (None, "/etc/flotilla/x.conf", "n")
    assert opts.log_level == "DEBUG" and opts.verbose is False
    assert opts.leader_elect == "false"  # this component's default
    assert (opts.leader_elect_lease_duration, opts.leader_elect_renew_deadline,
            opts.leader_elect_retry_period) == (90.0, 10.0, 2.0)
    with pytest.raises(SystemExit):
        COMMAND.parse_args(["--namespace", "n", "--leader-elect-retry-period", "soon"])
    with pytest.raises(SystemExit):
        COMMAND.parse_args(["--namespace", "n", "--log-level", "chatty"])


def test_a_server_component_takes_no_connection_flags_and_no_leader_election() -> None:
    serving = Command("flotilla-test-server", "A server.", connects=False)
    assert serving.parse_args(["-v"]).verbose is True
    with pytest.raises(SystemExit):
        serving.parse_args(["--server", "127.0.0.1:6443"])
    with pytest.raises(SystemExit):
        serving.parse_args(["--leader-elect", "true"])


def test_every_daemon_keeps_its_common_flags() -> None:
    from controlplane.controllers import main as controllers
    from controlplane.dns import main as dns
    from controlplane.loadbalancer import main as loadbalancer
    from controlplane.scheduler import main as scheduler
    from nodeagent.proxy import main as proxy

    for module in (controllers, dns, loadbalancer, scheduler, proxy):
        opts = module.parse_args(["--server", "127.0.0.1:1", "--log-level", "WARNING"])
        assert (opts.server, opts.log_level) == ("127.0.0.1:1", "WARNING"), module.__name__
    # Leader election by default only where a second copy would fight the first.
    assert controllers.parse_args([]).leader_elect == "true"
    assert scheduler.parse_args([]).leader_elect == "false"


# ---------------------------------------------------------------- running


async def test_sigterm_cancels_the_body_which_cleans_up_and_exits_0(
        client: Client, namespace: str, daemons: Callable[..., Process]) -> None:
    proc = daemons()
    await eventually(only(client, namespace, proc.pid), "the body to start")
    proc.popen.terminate()  # type: ignore[union-attr]
    assert await exit_code(proc) == 0, proc.tail()
    # The clean-up ran, with its client still open, before the process ended.
    assert await acting(client, namespace) == set()
    log = proc.log_path.read_text()
    assert "SIGTERM: shutting down" in log and "stopped" in log and "Traceback" not in log


async def test_an_expected_failure_is_one_line_and_exit_1(daemons: Callable[..., Process]) -> None:
    proc = daemons("--fail")
    assert await exit_code(proc) == 1
    log = proc.log_path.read_text()
    assert log.splitlines()[-1].startswith(f"{NAME}: ") and "does-not-exist" in log.splitlines()[-1], log
    assert "Traceback" not in log


async def test_without_server_or_kubeconfig_it_refuses_to_start(namespace: str) -> None:
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "tests.test_component", "--namespace",
                                                    namespace], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"{NAME}: no apiserver to talk to: pass --kubeconfig FILE (TLS, the component's "
                                   "credentials) or --server HOST:PORT (plaintext, loopback only)")


# ---------------------------------------------------------------- leader election


async def lease_holder(client: Client, namespace: str) -> str:
    with contextlib.suppress(NotFound):
        lease = await client.get(coordination_pb2.Lease, f"lease-{namespace}", "kube-system")
        return lease.spec.holder_identity
    return ""


async def test_only_the_leader_acts_and_a_stopped_leader_hands_over_at_once(
        client: Client, namespace: str, daemons: Callable[..., Process]) -> None:
    first = daemons(*ELECTION)
    await eventually(only(client, namespace, first.pid), "the first copy to lead")
    assert f"_{first.pid}_" in await lease_holder(client, namespace)
    second = daemons(*ELECTION)

    async def second_waits() -> bool:
        return "waiting to lead" in second.log_path.read_text()

    await eventually(second_waits, "the second copy to stand by")
    await asyncio.sleep(2)  # several retry periods: the standby must not act meanwhile
    assert await acting(client, namespace) == {first.pid}

    first.popen.terminate()  # type: ignore[union-attr]
    stopped_at = time.monotonic()
    assert await exit_code(first) == 0, first.tail()
    await eventually(only(client, namespace, second.pid), "the standby to take over")
    # Well inside the 10 s lease: the stopping leader released it rather than letting it expire.
    assert time.monotonic() - stopped_at < 8
    assert f"_{second.pid}_" in await lease_holder(client, namespace)


async def test_a_leader_that_loses_its_lease_stops_acting_and_exits(
        client: Client, namespace: str, daemons: Callable[..., Process]) -> None:
    leader = daemons(*ELECTION)
    await eventually(only(client, namespace, leader.pid), "the copy to lead")

    async def usurp() -> None:
        # Another holder renewing all the time: the leader can no longer renew.
        while True:
            lease = await client.get(coordination_pb2.Lease, f"lease-{namespace}", "kube-system")
            lease.spec.holder_identity = "usurper"
            lease.spec.lease_duration_seconds = 10
            lease.spec.renew_time.GetCurrentTime()
            with contextlib.suppress(ApiError):
                await client.update(lease)
            await asyncio.sleep(0.2)

    usurper = asyncio.create_task(usurp())
    try:
        assert await exit_code(leader) == 1, leader.tail()
    finally:
        usurper.cancel()
    assert await acting(client, namespace) == set()  # the body was cancelled and cleaned up
    assert leader.log_path.read_text().splitlines()[-1] == f"{NAME}: lost the leader lease"


if __name__ == "__main__":
    COMMAND.main(run)
