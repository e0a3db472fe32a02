"""The density benchmark (issue 19): ClusterLoader2's density test on hollow nodes, watch cache on and off.

    .venv/bin/python -m bench.density [--quick] [--nodes N] [--pods M] [--rate R] [--cache on|off|both]

Each run starts a private etcd and apiserver (`--watch-cache=true` or `false`,
an audit log for the latencies), the real controller manager and scheduler as
processes, and in this process N hollow kubelets (kubemark's idea): each
registers its Node, renews its Lease in kube-node-lease every 10 s, posts its
node status every 60 s, and — as a real kubelet does — watches only its own
pods (an informer with `spec.nodeName=<node>`), marking each one bound to it
Running through the status subresource. Then Deployments of `--per-deployment`
replicas are created so that pods are asked for at `--rate` pods/s, until M pods
exist; a cluster-wide pod watcher times each pod's startup, from the moment its
creation is observed to the moment it is observed Running (ClusterLoader2's
pod_startup_latency, without image pulls: hollow nodes have every image).
Meanwhile a prober LISTs every pod and every node at cluster scope every 5 s.

Printed beside Kubernetes' SLOs, for each run:
- mutating API call latency p50/p99 by verb and resource, as the apiserver
  measured it (the audit log's latencyMs: authorisation to the etcd write);
- LIST latency p50/p99 at cluster scope (pods, nodes; client-side);
- pod startup p50/p99;
- CPU seconds of the apiserver, etcd, scheduler and controller manager over the
  load (and per pod), and their RSS at the end (peak in brackets).

The same run is repeated with the cache off, side by side. The box has two
cores shared by everything (and by other work), so compare the two columns of
one invocation rather than absolute figures across invocations.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bench import hollow
from bench.workloads import controller_manager_and_scheduler, cpu_seconds
from client import Client
from client.informer import Informer
from kctl.printers import format_table
from proto import apps_pb2, coordination_pb2, core_pb2
from proto.errors import ApiError, Conflict, NotFound
from provision.processes import start_apiserver, start_etcd

NODE_LEASE_NAMESPACE = "kube-node-lease"
LEASE_INTERVAL = 10.0  # Kubernetes' kubelet renews its lease every 10 s
NODE_STATUS_INTERVAL = 60.0  # and posts node status at least this often (nodeStatusReportFrequency: 5 min)
LIST_PROBE_INTERVAL = 5.0
IMAGE = "registry.k8s.io/pause:3.9"
# Kubernetes' SLOs (sig-scalability): the goals the table is read against.
SLO_MUTATING_P99 = 1.0
SLO_LIST_P99 = 30.0
SLO_STARTUP_P99 = 5.0


@dataclass(frozen=True)
class Scale:
    nodes: int
    pods: int
    rate: float  # pods asked for per second
    per_deployment: int
    namespaces: int


FULL = Scale(nodes=1000, pods=30_000, rate=100.0, per_deployment=30, namespaces=30)
QUICK = Scale(nodes=100, pods=3000, rate=20.0, per_deployment=30, namespaces=10)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB: its resident memory now and at its peak."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


# ---------------------------------------------------------------- the hollow kubelets


class HollowKubelets:
    """N kubelets without containers: node registration, leases, node status, their own pods run at once."""

    def __init__(self, client: Client, nodes: int) -> None:
        self.client = client
        self.names = [f"hollow-{i:04d}" for i in range(nodes)]
        self.informers: list[Informer[core_pb2.Pod]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._leases: dict[str, coordination_pb2.Lease] = {}

    async def register(self) -> None:
        """Create each Node and post its status, before the controllers run (nothing else writes it yet)."""
        await hollow.register_all(self.client, (hollow.node(n, cpu="64", memory="256Gi", pods=110)
                                                for n in self.names), concurrency=16)

    async def start(self) -> None:
        for name in self.names:
            informer = Informer(self.client, core_pb2.Pod, field_selector=f"spec.nodeName={name}")
            informer.add_handler(on_add=self._run, on_update=lambda _old, new: self._run(new))
            self.informers.append(informer)
            self._tasks.append(asyncio.create_task(informer.run()))
        self._tasks.append(asyncio.create_task(self._every(LEASE_INTERVAL, self._renew_lease)))
        self._tasks.append(asyncio.create_task(self._every(NODE_STATUS_INTERVAL, self._post_status)))
        for informer in self.informers:
            await informer.wait_synced()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _every(self, interval: float, action: Callable[[str], object]) -> None:
        """Each node's `action` once per interval, spread evenly over it (kubelets do not start in step)."""
        gap = interval / len(self.names)
        while True:
            for name in self.names:
                started = time.monotonic()
                with contextlib.suppress(ApiError):
                    await action(name)  # type: ignore[misc]
                await asyncio.sleep(max(0.0, gap - (time.monotonic() - started)))

    async def _renew_lease(self, name: str) -> None:
        lease = self._leases.get(name)
        if lease is None:
            lease = coordination_pb2.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
            lease.metadata.name, lease.metadata.namespace = name, NODE_LEASE_NAMESPACE
            lease.spec.holder_identity, lease.spec.lease_duration_seconds = name, 40
            lease.spec.renew_time.GetCurrentTime()
            try:
                self._leases[name] = await self.client.create(lease)
            except ApiError:
                self._leases[name] = await self.client.get(coordination_pb2.Lease, name, NODE_LEASE_NAMESPACE)
            return
        lease.spec.renew_time.GetCurrentTime()
        try:
            self._leases[name] = await self.client.update(lease)
        except Conflict:
            self._leases.pop(name)

    async def _post_status(self, name: str) -> None:
        node = await self.client.get(core_pb2.Node, name)
        for condition in node.status.conditions:
            if condition.type == "Ready":
                condition.last_heartbeat_time.GetCurrentTime()
        await self.client.update_status(node)

    async def _run(self, pod: core_pb2.Pod) -> None:
        if pod.status.phase == "Running" or pod.metadata.HasField("deletion_timestamp"):
            return
        running = core_pb2.Pod()
        running.CopyFrom(pod)
        status = running.status
        status.phase, status.host_ip, status.pod_ip = "Running", "10.0.0.1", "10.244.0.2"
        status.start_time.GetCurrentTime()
        for kind in ("Initialized", "ContainersReady", "Ready", "PodScheduled"):
            condition = next((c for c in status.conditions if c.type == kind), None) or status.conditions.add(type=kind)
            condition.status = "True"
            condition.last_transition_time.GetCurrentTime()
        del status.container_statuses[:]
        for container in running.spec.containers:
            state = status.container_statuses.add(name=container.name, image=container.image, ready=True,
                                                   started=True)
            state.state.running.started_at.GetCurrentTime()
        with contextlib.suppress(NotFound, Conflict):  # a Conflict comes back as an update: tried again then
            await self.client.update_status(running)


# ---------------------------------------------------------------- measuring


@dataclass
class StartupWatcher:
    """Pod startup latency: from a pod's creation observed to it observed Running (one cluster-wide watch)."""

    target: int
    created: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    all_running: asyncio.Event = field(default_factory=asyncio.Event)
    _running: set[str] = field(default_factory=set)

    def observe(self, pod: core_pb2.Pod) -> None:
        uid = pod.metadata.uid
        now = time.monotonic()
        self.created.setdefault(uid, now)
        if pod.status.phase == "Running" and uid not in self._running:
            self._running.add(uid)
            self.latencies.append(now - self.created[uid])
            if len(self._running) >= self.target:
                self.all_running.set()

    @property
    def running(self) -> int:
        return len(self._running)


async def probe_lists(client: Client, latencies: dict[str, list[float]]) -> None:
    """LIST every pod and every node at cluster scope, every few seconds (ClusterLoader2's list load)."""
    while True:
        for cls, resource in ((core_pb2.Pod, "pods"), (core_pb2.Node, "nodes")):
            started = time.monotonic()
            with contextlib.suppress(ApiError):
                await client.list(cls)
                latencies[resource].append(time.monotonic() - started)
        await asyncio.sleep(LIST_PROBE_INTERVAL)


def deployment(name: str, namespace: str, replicas: int) -> apps_pb2.Deployment:
    made = apps_pb2.Deployment(api_version="apps/v1", kind="Deployment")
    made.metadata.name, made.metadata.namespace = name, namespace
    made.spec.replicas = replicas
    made.spec.selector.match_labels["app"] = name
    made.spec.template.metadata.labels["app"] = name
    container = made.spec.template.spec.containers.add(name="app", image=IMAGE)
    container.resources.requests.update({"cpu": "10m", "memory": "10Mi"})
    return made


@dataclass
class Result:
    label: str
    mutating: dict[str, list[float]]  # "verb resource" -> latencies (s)
    lists: dict[str, list[float]]
    startup: list[float]
    running: int
    load_seconds: float
    cpu: dict[str, float]  # component -> CPU seconds over the load
    rss: dict[str, tuple[int, int]]  # component -> (RSS, peak) KiB at the end


def audit_latencies(path: Path) -> dict[str, list[float]]:
    found: dict[str, list[float]] = defaultdict(list)
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError):
            record = json.loads(line)
            if record["result"] == "OK":
                found[f"{record['verb']} {record['resource']}"].append(record["latencyMs"] / 1000)
    return found


async def load(address: str, scale: Scale, pids: dict[str, int], start_components: Callable[[], None]
               ) -> tuple[dict[str, list[float]], StartupWatcher, float, dict[str, float]]:
    async with Client(address) as client:
        await client.wait_ready()
        namespaces = [f"density-{i}" for i in range(scale.namespaces)]
        for name in namespaces:
            ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
            ns.metadata.name = name
            await client.create(ns)
        kubelets = HollowKubelets(client, scale.nodes)
        log(f"registering {scale.nodes} hollow nodes")
        await kubelets.register()
        start_components()
        await kubelets.start()
        watcher = StartupWatcher(scale.pods)
        pods: Informer[core_pb2.Pod] = Informer(client, core_pb2.Pod)
        pods.add_handler(on_add=watcher.observe, on_update=lambda _old, new: watcher.observe(new))
        tasks = [asyncio.create_task(pods.run())]
        await pods.wait_synced()
        lists: dict[str, list[float]] = defaultdict(list)
        tasks.append(asyncio.create_task(probe_lists(client, lists)))
        cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        began = time.monotonic()
        try:
            deployments = -(-scale.pods // scale.per_deployment)
            gap = scale.per_deployment / scale.rate
            log(f"creating {deployments} Deployments of {scale.per_deployment}, one every {gap:.2f} s")
            for index in range(deployments):
                due = began + index * gap
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                replicas = min(scale.per_deployment, scale.pods - index * scale.per_deployment)
                await client.create(deployment(f"d{index}", namespaces[index % len(namespaces)], replicas))
                if index % 20 == 0:
                    log(f"  {index} Deployments, {len(watcher.created)} pods seen, {watcher.running} running")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watcher.all_running.wait(), max(120.0, scale.pods / scale.rate))
            log(f"{watcher.running}/{scale.pods} pods running after {time.monotonic() - began:.0f} s")
        finally:
            elapsed = time.monotonic() - began
            cpu = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await kubelets.stop()
    return lists, watcher, elapsed, cpu


def run(scale: Scale, cache: bool) -> Result:
    label = "watch cache on" if cache else "watch cache off"
    log(f"--- {label}: {scale.nodes} nodes, {scale.pods} pods at {scale.rate:g}/s")
    with tempfile.TemporaryDirectory(prefix="flotilla-density-") as tmp, contextlib.ExitStack() as stop:
        base = Path(tmp)
        etcd = start_etcd(base / "etcd", log_dir=base)
        stop.callback(etcd.process.stop)
        audit = base / "audit.log"
        apiserver = start_apiserver(etcd.url, base, extra=[
            "--log-level", "WARNING", "--watch-cache", "true" if cache else "false",
            "--audit-log-path", str(audit), "--audit-log-maxsize", "4096"])
        stop.callback(apiserver.process.stop)
        address = apiserver.address
        components = controller_manager_and_scheduler(address, base)
        for process in components:
            stop.callback(process.stop)
        pids = {"apiserver": apiserver.process.pid, "etcd": etcd.process.pid}

        def start() -> None:
            for process in components:
                process.start()
                pids[process.name] = process.pid

        try:
            lists, watcher, elapsed, cpu = asyncio.run(load(address, scale, pids, start))
        except Exception:
            for process in components:
                print(process.tail(), file=sys.stderr)
            raise
        rss = {name: rss_kib(pid) for name, pid in pids.items()}
        return Result(label, audit_latencies(audit), lists, watcher.latencies, watcher.running, elapsed, cpu, rss)


# ---------------------------------------------------------------- the table


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 0.5) * 1000:.0f} / {percentile(values, 0.99) * 1000:.0f}"


def table(results: list[Result], scale: Scale) -> list[list[str]]:
    rows = [["MEASURE", *(r.label for r in results), "SLO"]]

    def row(measure: str, cells: list[str], slo: str = "") -> None:
        rows.append([measure, *cells, slo])

    calls = sorted({key for r in results for key in r.mutating},
                   key=lambda k: -max(len(r.mutating.get(k, [])) for r in results))
    for key in calls[:12]:
        row(f"{key} p50/p99 ms (n)", [f"{_ms(r.mutating.get(key, []))} ({len(r.mutating.get(key, []))})"
                                      for r in results], f"p99 <= {SLO_MUTATING_P99 * 1000:.0f}")
    row("all mutating calls p99 ms", [f"{percentile([v for vs in r.mutating.values() for v in vs], 0.99) * 1000:.0f}"
                                      for r in results], f"<= {SLO_MUTATING_P99 * 1000:.0f}")
    for resource in ("pods", "nodes"):
        row(f"LIST {resource} (cluster) p50/p99 ms (n)",
            [f"{_ms(r.lists.get(resource, []))} ({len(r.lists.get(resource, []))})" for r in results],
            f"p99 <= {SLO_LIST_P99 * 1000:.0f}")
    row("pod startup p50/p99 ms", [_ms(r.startup) for r in results], f"p99 <= {SLO_STARTUP_P99 * 1000:.0f}")
    row("pods running / asked", [f"{r.running} / {scale.pods}" for r in results])
    row("load phase (s)", [f"{r.load_seconds:.0f}" for r in results])
    for name in ("apiserver", "etcd", "scheduler", "controller-manager"):
        row(f"{name} CPU s (ms per pod)",
            [f"{r.cpu.get(name, 0):.1f} ({r.cpu.get(name, 0) * 1000 / max(1, r.running):.1f})" for r in results])
        row(f"{name} RSS MiB (peak)", [f"{r.rss[name][0] / 1024:.0f} ({r.rss[name][1] / 1024:.0f})" if name in r.rss
                                       else "-" for r in results], "<= 1024" if name == "apiserver" else "")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.density", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 nodes, 3,000 pods at 20 pods/s")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--pods", type=int)
    parser.add_argument("--rate", type=float, help="pods asked for per second")
    parser.add_argument("--per-deployment", type=int)
    parser.add_argument("--cache", choices=["on", "off", "both"], default="both")
    opts = parser.parse_args(argv)
    base = QUICK if opts.quick else FULL
    scale = Scale(opts.nodes or base.nodes, opts.pods or base.pods, opts.rate or base.rate,
                  opts.per_deployment or base.per_deployment, base.namespaces)
    started = time.perf_counter()
    modes = {"on": [True], "off": [False], "both": [True, False]}[opts.cache]
    results = [run(scale, cache) for cache in modes]
    print(f"Flotilla density benchmark{' (--quick)' if opts.quick else ''}, "
          f"{_dt.datetime.now().isoformat(timespec='seconds')}: {os.cpu_count()} CPUs, {scale.nodes} hollow nodes, "
          f"{scale.pods} pods at {scale.rate:g}/s in Deployments of {scale.per_deployment}, "
          f"{time.perf_counter() - started:.0f} s")
    print("\n".join(format_table(table(results, scale))))
    print("mean apiserver CPU per pod: " + ", ".join(
        f"{r.label} {r.cpu.get('apiserver', 0) * 1000 / max(1, r.running):.1f} ms" for r in results)
          + f"; load average {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
