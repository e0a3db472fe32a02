"""The fault suite's machinery: a control plane whose processes can be SIGKILLed, and the per-fault report.

Every fault test runs against its own etcd and apiserver (`FaultControlPlane`),
started as real processes on fixed loopback ports, so a test can SIGKILL
either and start it again on the same port and data directory, as a
supervisor would; clients reconnect to the same address. Nothing here touches
the session's shared etcd and apiserver, so killing them disturbs no other test.

Each fault ends with one `FaultResult`: how many objects were checked, how many
were lost (acknowledged to a client, then gone), how many duplicated (more
than one incarnation where there must be one), and how long the system took to
converge after the fault, against the bound the test states. `report` prints
the line and keeps it for the session summary (conftest.py prints them all
at the end of the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import Message

from client import Client
from proto.errors import AlreadyExists, ApiError, Timeout, Unavailable
from provision.processes import ApiServer, Etcd, Process, free_port, start_apiserver, start_etcd

T = TypeVar("T")
M = TypeVar("M", bound=Message)


# ---------------------------------------------------------------- the report


@dataclass(frozen=True)
class FaultResult:
    name: str
    checked: int
    lost: int
    duplicated: int
    converged: float  # seconds from the fault to the converged state
    bound: float  # the most the test allows

    @property
    def line(self) -> str:
        return (f"fault {self.name}: checked {self.checked}, lost {self.lost}, duplicated {self.duplicated}, "
                f"converged in {self.converged:.1f} s (bound {self.bound:.0f} s)")

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.converged <= self.bound


RESULTS: list[FaultResult] = []


def report(name: str, *, checked: int, lost: int, duplicated: int, converged: float, bound: float) -> FaultResult:
    """Print and keep one fault's figures, then fail the test if anything was lost, duplicated or late."""
    result = FaultResult(name, checked, lost, duplicated, converged, bound)
    RESULTS.append(result)  # before asserting: the summary shows failed faults too
    print(f"\n{result.line}")
    assert checked > 0, f"fault {name}: nothing was checked"
    assert lost == 0, f"fault {name}: {lost} acknowledged objects lost"
    assert duplicated == 0, f"fault {name}: {duplicated} duplicates"
    assert converged <= bound, f"fault {name}: converged in {converged:.1f} s, more than {bound:.0f} s"
    return result


# ---------------------------------------------------------------- processes


class FaultControlPlane:
    """etcd and the apiserver as separate processes on fixed ports, each killable and restartable."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.etcd_ports = (free_port(), free_port())
        self.api_port = free_port()
        self.etcd: Etcd | None = None
        self.apiserver: ApiServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_ports[0]}"

    def start(self) -> None:
        self.start_etcd()
        self.start_apiserver()

    def start_etcd(self) -> None:
        # Same data directory and ports every time: a restart, not a new member.
        self.etcd = start_etcd(self.base / "etcd", client_port=self.etcd_ports[0], peer_port=self.etcd_ports[1],
                               log_dir=self.base)

    def start_apiserver(self) -> None:
        self.apiserver = start_apiserver(self.etcd_url, self.base, port=self.api_port,
                                         extra=["--log-level", "WARNING"])

    def kill_etcd(self) -> None:
        assert self.etcd is not None
        self.etcd.process.kill()

    def kill_apiserver(self) -> None:
        assert self.apiserver is not None
        self.apiserver.process.kill()

    def stop(self) -> None:
        if self.apiserver is not None:
            self.apiserver.process.stop()
        if self.etcd is not None:
            self.etcd.process.stop()


def start_scheduler(server: str, config: Path | None, log: Path) -> Process:
    """The real scheduler as a process (`config`: a KubeSchedulerConfiguration file; None: the default profile)."""
    extra = ["--config", str(config)] if config is not None else []
    # Without --kubeconfig the scheduler still reads the default one (~/.kctl/config): a local cluster's
    # TLS credentials there would make it speak TLS to this plaintext apiserver. Point it at none.
    proc = Process("scheduler", [sys.executable, "-m", "controlplane.scheduler.main", "--server", server,
                                 *extra, "--log-level", "WARNING"], log,
                   env={"KCTL_CONFIG": str(log.parent / "no-such-kubeconfig")})
    proc.start()
    return proc


# ---------------------------------------------------------------- client side


@dataclass
class Acknowledged:
    """What the server told a client it created: name -> uid (and how it got there)."""

    uids: dict[str, str]
    retried: int = 0  # attempts that failed because the server was down, then tried again
    answered_exists: int = 0  # retries that found the first attempt had been committed after all


async def create_until_acknowledged(client: Client, obj: M, acked: Acknowledged, *, deadline: float) -> None:
    """Create `obj`, retrying while the server is unreachable, as a careful client does.

    A create whose answer was lost with the server may still have been
    committed: the retry then gets AlreadyExists, and the object the client
    meant is the one stored (same name), so that counts as acknowledged. What
    must never happen is a second object for one intent; names guarantee it,
    and the final check counts by uid.
    """
    meta = obj.metadata  # type: ignore[attr-defined]
    while True:
        try:
            created = await client.create(obj)
            acked.uids[meta.name] = created.metadata.uid  # type: ignore[attr-defined]
            return
        except AlreadyExists:
            acked.answered_exists += 1
            stored = await retry_while_down(lambda: client.get(type(obj), meta.name, meta.namespace),
                                            deadline=deadline)
            acked.uids[meta.name] = stored.metadata.uid  # type: ignore[attr-defined]
            return
        except (Unavailable, Timeout):
            acked.retried += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def lost_and_duplicated(acked: Acknowledged, stored: Sequence[Message], expected: int) -> tuple[int, int]:
    """Compare what clients were told with what is stored.

    Lost: an acknowledged name that is not stored. Duplicated: a name stored
    twice, a stored uid other than the acknowledged one (the object was made
    again), a uid shared by two objects, or more objects than were asked for.
    """
    by_name: dict[str, list[str]] = {}
    for obj in stored:
        meta = obj.metadata  # type: ignore[attr-defined]
        by_name.setdefault(meta.name, []).append(meta.uid)
    lost = sum(1 for name in acked.uids if name not in by_name)
    uids = [uid for found in by_name.values() for uid in found]
    duplicated = (sum(len(found) - 1 for found in by_name.values())
                  + sum(1 for name, uid in acked.uids.items() if name in by_name and by_name[name] != [uid])
                  + len(uids) - len(set(uids)) + max(0, len(stored) - expected))
    return lost, duplicated


async def retry_while_down(call: Callable[[], Awaitable[T]], *, deadline: float) -> T:
    """`call()`, again while the apiserver (or etcd behind it) is unreachable, until `deadline`."""
    while True:
        try:
            return await call()
        except (Unavailable, Timeout):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def eventually(check: Callable[[], Awaitable[T | None]], what: str, timeout: float,
                     interval: float = 0.1) -> T:
    """Poll `check` (API errors count as "not yet": the server may be restarting) until it is truthy."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except ApiError as err:
            last = err
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


async def until_true(check: Callable[[], bool], what: str, timeout: float, proc: Process | None = None) -> None:
    """Wait for an in-memory condition (a watch's record), failing early if `proc` dies."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and not proc.alive():
            raise AssertionError(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                                 + (f":\n{proc.tail()}" if proc is not None else ""))
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def background(coro: Awaitable[None]) -> AsyncIterator[asyncio.Future[None]]:
    """Run `coro` as a task for the block's duration; cancel it after."""
    task = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
