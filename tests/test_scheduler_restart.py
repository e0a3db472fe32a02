"""Crash safety: SIGKILL the scheduler process in the middle of a burst, start it again.

Given 10 hollow nodes and 380 pods that fill them to 95%, when the scheduler is
killed while it is binding and a new one starts, then every pod ends bound,
each exactly once (a watch records every nodeName a pod ever had), and no node
holds more than it can. The apiserver's one-Binding-per-pod rule and the new
scheduler counting every bound pod before deciding anything are what hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

import yaml

from bench import hollow
from client import Client
from proto import core_pb2
from proto.quantity import milli_value
from provision.processes import ApiServer, Process

POOL = "scheduler.flotilla.io/test-pool"


def start_scheduler(apiserver: ApiServer, config: Path, log: Path) -> Process:
    proc = Process("scheduler", [sys.executable, "-m", "controlplane.scheduler.main", "--server",
                                 apiserver.address, "--config", str(config), "--log-level", "WARNING"], log)
    proc.start()
    return proc


async def test_sigkill_during_a_burst_then_restart_binds_every_pod_once(
        client: Client, namespace: str, apiserver: ApiServer, tmp_path: Path) -> None:
    name = f"sched-{namespace}"
    config = tmp_path / "scheduler.yaml"
    config.write_text(yaml.safe_dump({"apiVersion": "kubescheduler.config.k8s.io/v1",
                                      "kind": "KubeSchedulerConfiguration", "profiles": [{"schedulerName": name}]}))
    nodes = [hollow.node(f"{namespace}-n{i}", cpu="4", memory="16Gi", labels={POOL: namespace}) for i in range(10)]
    await hollow.register_all(client, nodes)

    def pod(pod_name: str) -> core_pb2.Pod:
        # The nodeSelector keeps this test's pods on this test's nodes.
        return hollow.pod(pod_name, namespace, cpu="100m", memory="64Mi", scheduler_name=name,
                          node_selector={POOL: namespace})

    # Every nodeName each pod ever had, from a watch started before any pod exists.
    history: dict[str, list[str]] = {}

    async def record() -> None:
        async for event in client.watch(core_pb2.Pod, namespace):
            if event.object is not None and event.object.spec.node_name:
                seen = history.setdefault(event.object.metadata.name, [])
                if not seen or seen[-1] != event.object.spec.node_name:
                    seen.append(event.object.spec.node_name)

    watcher = asyncio.create_task(record())
    procs = [start_scheduler(apiserver, config, tmp_path / "scheduler-1.log")]
    try:
        await client.create(pod("probe"))
        await until(lambda: "probe" in history, 20, "the first scheduler to start", procs[0])
        gate = asyncio.Semaphore(64)

        async def create(i: int) -> None:
            async with gate:
                await client.create(pod(f"p{i:03}"))

        burst = asyncio.gather(*(create(i) for i in range(379)))
        await until(lambda: len(history) >= 30, 20, "binding under way", procs[0])
        procs[0].kill()  # SIGKILL: no chance to finish anything
        killed_at = len(history)
        await burst
        procs.append(start_scheduler(apiserver, config, tmp_path / "scheduler-2.log"))
        await until(lambda: len(history) == 380, 30, "all 380 pods bound", procs[1])
    finally:
        for proc in procs:
            proc.kill()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        for n in nodes:
            with contextlib.suppress(Exception):
                await client.delete(core_pb2.Node, n.metadata.name)

    assert killed_at < 380, "the burst finished before the kill; nothing was tested"
    moved = {p: nodes_seen for p, nodes_seen in history.items() if len(nodes_seen) != 1}
    assert not moved, f"pods bound more than once: {moved}"
    used: dict[str, int] = {}
    for p in (await client.list(core_pb2.Pod, namespace)).items:
        used[p.spec.node_name] = used.get(p.spec.node_name, 0) + milli_value(
            p.spec.containers[0].resources.requests["cpu"])
    assert set(used) <= {n.metadata.name for n in nodes}
    assert max(used.values()) <= 4000, used


async def until(check: object, timeout: float, what: str, proc: Process) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if not proc.alive():
            raise AssertionError(f"scheduler exited while waiting for {what}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{proc.tail()}")
        await asyncio.sleep(0.01)
