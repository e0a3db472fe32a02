"""The controller benchmark: how fast the controller manager turns desired state into pods.

    .venv/bin/python -m bench.controllers [--quick]

It starts a private etcd, apiserver and controller manager on loopback in a
temporary directory, registers hollow nodes (bench/hollow_kubelet.py: a
binder and kubelets that mark pods Running and Ready, in this process), and
measures in the same run:

- the apiserver's raw write rate: pod creates through the typed client, 32 in
  flight, with nothing else to do — the ceiling any controller works under;
- scale 1 -> 1,000: time until 1,000 pods exist (the ReplicaSet controller's
  creates, slow-start batches of up to 500 per sync) and until all are Ready
  and the Deployment reports them available (binder + kubelets included);
- a 100-replica rolling update (25% surge / 25% unavailable): time until the
  Deployment reports 100 updated, available replicas and no old ones.

The machine's cores are shared by etcd, the apiserver, the controller manager
and this process (which plays every kubelet and the scheduler), so the end-to-end
figures include the hollow nodes' own writes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.api import closed_loop
from bench.hollow_kubelet import HollowCluster
from client import Client
from kctl.printers import format_table
from proto import apps_pb2, core_pb2
from provision.processes import Process, throwaway_control_plane

NS = "bench"
RAW_NS = "bench-raw"


@dataclass(frozen=True)
class Scale:
    pods: int
    rollout: int
    raw_writes: int
    nodes: int


FULL = Scale(pods=1000, rollout=100, raw_writes=1000, nodes=10)
QUICK = Scale(pods=200, rollout=20, raw_writes=200, nodes=4)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def deployment(name: str, replicas: int, image: str = "nginx:1.25") -> apps_pb2.Deployment:
    d = apps_pb2.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name, d.metadata.namespace = name, NS
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = name
    d.spec.template.metadata.labels["app"] = name
    d.spec.template.spec.containers.add(name="app", image=image)
    return d


async def until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `check()` holds (polled every 20 ms)."""
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"{what} not reached in {timeout:.0f}s")
        await asyncio.sleep(0.02)
    return time.perf_counter() - start


async def until_async(check: Callable[[], object], timeout: float, what: str) -> float:
    start = time.perf_counter()
    while not await check():  # type: ignore[misc]
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"{what} not reached in {timeout:.0f}s")
        await asyncio.sleep(0.05)
    return time.perf_counter() - start


async def raw_write_rate(client: Client, count: int) -> float:
    template = core_pb2.Pod(api_version="v1", kind="Pod")
    template.metadata.namespace = RAW_NS
    template.spec.containers.add(name="app", image="nginx:1.25")

    async def create(i: int) -> None:
        pod = core_pb2.Pod()
        pod.CopyFrom(template)
        pod.metadata.name = f"raw-{i}"
        await client.create(pod)

    return await closed_loop(count, 32, create)


async def run(address: str, scale: Scale, start_controllers: Callable[[], None]) -> list[list[str]]:
    async with Client(address) as client:
        await client.wait_ready()
        for name in (NS, RAW_NS):
            ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
            ns.metadata.name = name
            await client.create(ns)
        log(f"raw API writes: {scale.raw_writes} pod creates, 32 in flight")
        rate = await raw_write_rate(client, scale.raw_writes)
        start_controllers()
        hollow = HollowCluster(client, [NS], nodes=scale.nodes, lease_interval=5.0, workers=64)
        await hollow.start()
        pods = hollow.informers[0].store
        try:
            # Scale 1 -> N.
            await client.create(deployment("scale", 1))
            await until(lambda: sum(p.metadata.labels.get("app") == "scale" for p in pods.list()) == 1, 60,
                        "first pod")
            await asyncio.sleep(1.0)
            log(f"scale 1 -> {scale.pods}")
            d = await client.get(apps_pb2.Deployment, "scale", NS)
            d.spec.replicas = scale.pods
            began = time.perf_counter()
            await client.update(d)
            created = await until(lambda: sum(p.metadata.labels.get("app") == "scale" for p in pods.list())
                                  >= scale.pods, 600, f"{scale.pods} pods created")

            async def all_available() -> bool:
                got = await client.get(apps_pb2.Deployment, "scale", NS)
                return got.status.available_replicas == scale.pods

            await until_async(all_available, 600, f"{scale.pods} pods available")
            available = time.perf_counter() - began

            # A rolling update of R replicas.
            log(f"rollout of {scale.rollout} replicas")
            await client.create(deployment("roll", scale.rollout))

            async def roll_ready(image: str) -> bool:
                got = await client.get(apps_pb2.Deployment, "roll", NS)
                s = got.status
                return (got.metadata.annotations.get("deployment.kubernetes.io/revision") is not None
                        and s.observed_generation >= got.metadata.generation
                        and s.updated_replicas == scale.rollout and s.available_replicas == scale.rollout
                        and s.replicas == scale.rollout
                        and got.spec.template.spec.containers[0].image == image)

            await until_async(lambda: roll_ready("nginx:1.25"), 600, "rollout deployment ready")
            d = await client.get(apps_pb2.Deployment, "roll", NS)
            d.spec.template.spec.containers[0].image = "nginx:1.26"
            began = time.perf_counter()
            await client.update(d)
            rolled = await until_async(lambda: roll_ready("nginx:1.26"), 600, "rollout finished")
        finally:
            await hollow.stop(delete_nodes=False)
    return [
        ["measure", "value"],
        [f"apiserver raw pod creates ({scale.raw_writes}, 32 in flight)", f"{rate:.0f} /s"],
        [f"scale 1 -> {scale.pods}: all pods created", f"{created:.2f} s ({scale.pods / created:.0f} pods/s)"],
        [f"scale 1 -> {scale.pods}: all Ready and available", f"{available:.2f} s"],
        [f"rolling update of {scale.rollout} replicas (25%/25%)", f"{rolled:.2f} s"],
    ]


def measure(scale: Scale) -> list[list[str]]:
    with throwaway_control_plane() as plane, contextlib.ExitStack() as stop:
        base, apiserver = plane.base, plane.apiserver
        cm = Process("controller-manager", [
            sys.executable, "-m", "controlplane.controllers.main", "--server", apiserver.address,
            "--leader-elect", "false", "--log-level", "WARNING"], base / "controller-manager.log")
        stop.callback(cm.stop)
        try:
            return asyncio.run(run(apiserver.address, scale, cm.start))
        except Exception:
            print(cm.tail(), file=sys.stderr)
            raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.controllers", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 pods and a 20-replica rollout")
    opts = parser.parse_args(argv)
    rows = measure(QUICK if opts.quick else FULL)
    print(f"Flotilla controller benchmark{' (--quick)' if opts.quick else ''}, "
          f"{_dt.datetime.now().isoformat(timespec='seconds')}: {os.cpu_count()} CPUs")
    print("\n".join(format_table(rows)))


if __name__ == "__main__":
    main()
