"""Shared pieces of the controller tests: a controller-manager process and hollow nodes.

The controller manager runs as a real process (so a test can SIGKILL it) with
short timings, one per test module; `hollow` gives each test its own nodes,
kubelets and binder (bench/hollow_kubelet.py), touching only that test's
namespace. `eventually` polls a condition with a deadline instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import pytest
from google.protobuf.message import Message

from bench.hollow_kubelet import HollowCluster
from client import Client
from client.retry import update_fresh
from proto import apps_pb2, core_pb2
from provision.processes import ApiServer, Process

T = TypeVar("T")
M = TypeVar("M", bound=Message)

TEST_FLAGS = [
    "--node-monitor-period", "0.5s", "--node-monitor-grace-period", "3s", "--pod-eviction-timeout", "1s",
    "--horizontal-pod-autoscaler-sync-period", "1s", "--horizontal-pod-autoscaler-downscale-stabilization", "3s",
    "--leader-elect-lease-duration", "3s", "--leader-elect-renew-deadline", "2.5s",
    "--leader-elect-retry-period", "0.3s",
]


class ControllerManager:
    """One controller-manager process at a time; `kill()` is SIGKILL, `start()` a fresh copy."""

    def __init__(self, server: str, log_dir: Path) -> None:
        self.server = server
        self.log_dir = log_dir
        self.process: Process | None = None
        self._n = 0

    def start(self) -> Process:
        self._n += 1
        argv = [sys.executable, "-m", "controlplane.controllers.main", "--server", self.server, *TEST_FLAGS]
        self.process = Process(f"controller-manager-{self._n}", argv,
                               self.log_dir / f"controller-manager-{self._n}.log")
        self.process.start()
        return self.process

    def ensure_running(self) -> None:
        """Start a fresh copy if the last one exited, as its supervisor would.

        A controller manager that cannot renew its Lease (etcd stalled on a loaded
        machine) exits by design; the next test should not inherit that.
        """
        if self.process is None or not self.process.alive():
            self.start()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@pytest.fixture(scope="module", name="controller_manager")
def controller_manager_fixture(apiserver: ApiServer,
                               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerManager]:
    # Per module, not per session: the controllers must not outlive these tests, or they
    # would taint and evict in the tests of components that run without a controller manager.
    cm = ControllerManager(apiserver.address, tmp_path_factory.mktemp("controller-manager"))
    cm.start()
    yield cm
    cm.stop()


@pytest.fixture(name="hollow")
async def hollow_fixture(client: Client, namespace: str,
                         controller_manager: ControllerManager) -> AsyncIterator[HollowCluster]:
    controller_manager.ensure_running()
    cluster = HollowCluster(client, [namespace], nodes=3, prefix=namespace)
    await cluster.start()
    yield cluster
    await cluster.stop()


class Runnable(Protocol):
    async def run(self) -> None: ...


@contextlib.asynccontextmanager
async def running(loop: Runnable) -> AsyncIterator[None]:
    """A controller (or any loop with `run()`) running in the test for the `async with` block."""
    task = asyncio.create_task(loop.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = 20.0,
                     interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def deployment(name: str, namespace: str, *, replicas: int = 1, image: str = "nginx:1.25",
               max_surge: str = "", max_unavailable: str = "", strategy: str = "") -> apps_pb2.Deployment:
    d = apps_pb2.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name, d.metadata.namespace = name, namespace
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = name
    d.spec.template.metadata.labels["app"] = name
    c = d.spec.template.spec.containers.add(name="app", image=image)
    c.resources.requests["cpu"] = "100m"
    if strategy:
        d.spec.strategy.type = strategy
    if max_surge:
        d.spec.strategy.rolling_update.max_surge = max_surge
    if max_unavailable:
        d.spec.strategy.rolling_update.max_unavailable = max_unavailable
    return d


async def live_pods(client: Client, namespace: str, selector: str = "") -> list[core_pb2.Pod]:
    """Pods that count: not being deleted."""
    pods = (await client.list(core_pb2.Pod, namespace, label_selector=selector)).items
    return [p for p in pods if not p.metadata.HasField("deletion_timestamp")]


def ready(pod: core_pb2.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


async def mutate(client: Client, cls: type[M], name: str, namespace: str, change: Callable[[M], None]) -> M:
    """Read, change, write; again on Conflict (controllers write the same objects)."""
    updated = await update_fresh(client, cls, name, namespace, change, attempts=20)
    assert updated is not None  # `change` returns None: always a write
    return updated


def set_image(image: str) -> Callable[[apps_pb2.Deployment], None]:
    def change(d: apps_pb2.Deployment) -> None:
        d.spec.template.spec.containers[0].image = image
    return change
