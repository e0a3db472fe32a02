"""Fault: the scheduler is SIGKILLed while binding a burst of pods, and a new one is started.

Given 6 hollow nodes and 200 pods created at once, when the scheduler is
killed after 40 of them are bound and a fresh scheduler starts, then every pod
ends bound, each to exactly one node for its whole life (a watch started
before the first pod records every nodeName each pod ever had), and none is
lost. The apiserver's one-Binding-per-pod rule and the new scheduler counting
the pods already bound are what must hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import yaml

from bench import hollow
from client import Client
from proto import core_pb2
from tests.faults.support import background, report, start_scheduler, until_true

PODS = 200
POOL = "faults.flotilla.io/pool"
BOUND = 30.0  # seconds from the kill until every pod is bound


async def test_sigkill_scheduler_while_binding(client: Client, namespace: str, tmp_path: Path) -> None:
    name = f"sched-{namespace}"  # this test's own scheduler profile and nodes
    config = tmp_path / "scheduler.yaml"
    config.write_text(yaml.safe_dump({"apiVersion": "kubescheduler.config.k8s.io/v1",
                                      "kind": "KubeSchedulerConfiguration", "profiles": [{"schedulerName": name}]}))
    nodes = [hollow.node(f"{namespace}-n{i}", cpu="16", memory="64Gi", labels={POOL: namespace}) for i in range(6)]
    await hollow.register_all(client, nodes)
    history: dict[str, list[str]] = {}  # pod -> every nodeName it had, in order

    async def record() -> None:
        async for event in client.watch(core_pb2.Pod, namespace):
            if event.object is not None and event.object.spec.node_name:
                seen = history.setdefault(event.object.metadata.name, [])
                if not seen or seen[-1] != event.object.spec.node_name:
                    seen.append(event.object.spec.node_name)

    procs = [start_scheduler(client.server, config, tmp_path / "scheduler-1.log")]
    try:
        async with background(record()):
            gate = asyncio.Semaphore(64)

            async def create(i: int) -> None:
                async with gate:
                    await client.create(hollow.pod(f"p{i:03}", namespace, cpu="100m", memory="64Mi",
                                                   scheduler_name=name, node_selector={POOL: namespace}))

            burst = asyncio.gather(*(create(i) for i in range(PODS)))
            await until_true(lambda: len(history) >= 40, "binding under way", 30, procs[0])
            procs[0].kill()  # SIGKILL: binds in flight get no answer
            started = time.monotonic()
            # The watch may lag; what the apiserver holds is what the new scheduler starts from.
            at_kill = (await client.list(core_pb2.Pod, namespace)).items
            killed_at = sum(1 for p in at_kill if p.spec.node_name)
            procs.append(start_scheduler(client.server, config, tmp_path / "scheduler-2.log"))
            await burst
            await until_true(lambda: len(history) == PODS, f"all {PODS} pods bound", BOUND + 5, procs[1])
            converged = time.monotonic() - started
            await asyncio.sleep(0.5)  # a late second binding would show here
    finally:
        for proc in procs:
            proc.kill()
        for n in nodes:
            with contextlib.suppress(Exception):
                await client.delete(core_pb2.Node, n.metadata.name)

    assert killed_at < PODS, "every pod was bound before the kill: nothing was tested"
    stored = (await client.list(core_pb2.Pod, namespace)).items
    lost = PODS - sum(1 for p in stored if p.spec.node_name)
    duplicated = sum(1 for seen in history.values() if len(seen) > 1) + max(0, len(stored) - PODS)
    print(f"\n  scheduler kill: {killed_at} bound before the kill")
    report("scheduler-sigkill", checked=PODS, lost=lost, duplicated=duplicated, converged=converged, bound=BOUND)
