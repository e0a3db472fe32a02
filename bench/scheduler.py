"""The scheduler benchmark: pods/s from create to bound on 100, 1,000 and 5,000 hollow nodes.

    .venv/bin/python -m bench.scheduler [--quick]

It starts a private etcd and apiserver in a temporary directory and, for each
cluster size, registers that many hollow nodes through the API (Node objects
with capacity and a Ready condition; no kubelet), then measures, in the same run:

- **Binding calls alone**: pods created with a scheduler name nobody serves,
  then bound straight through the Binding call, 64 in flight, round-robin over
  the nodes — the apiserver's ceiling for any scheduler;
- **end to end**: a scheduler (in this process, seeing only this size's nodes)
  while another process creates the pods, 64 creates in flight; pods/s counts
  from the first create to the last pod the scheduler's informer sees bound,
  with the create rate alone beside it (the scheduler cannot bind pods faster
  than they appear);
- **decisions**: per-decision latency of the framework (p50, p99) during the
  end-to-end run, and decisions/s of the decision code alone on the same node
  table with no API at all (filter, score, pick, assume for every pod).

The machine's two cores are shared by etcd, the apiserver, the pod creator and
the scheduler, as they would be on a small control-plane node.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import multiprocessing
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass

from bench import hollow
from client import Client
from controlplane.scheduler import config as configuration
from controlplane.scheduler.cache import Cache
from controlplane.scheduler.framework import CycleState, Handle
from controlplane.scheduler.nodeinfo import PodInfo
from controlplane.scheduler.scheduler import Scheduler
from kctl.printers import format_table
from proto import core_pb2
from provision.processes import throwaway_control_plane

POOL = "bench.flotilla.io/pool"
IN_FLIGHT = 64
# Every phase's pods stay bound on the same nodes: 12,000 of these fit on 100 nodes.
POD_CPU, POD_MEMORY, NODE_PODS = "25m", "64Mi", 250


@dataclass(frozen=True)
class Scale:
    nodes: tuple[int, ...]
    pods: int
    binds: int  # pods bound directly for the raw Binding rate


FULL = Scale(nodes=(100, 1_000, 5_000), pods=5_000, binds=2_000)
QUICK = Scale(nodes=(100, 1_000), pods=1_000, binds=500)


@dataclass
class Result:
    nodes: int
    pods: int
    end_to_end: float  # pods/s, first create to last bound
    creates: float  # pods/s created by the creator process alone
    backlog: float  # pods/s bound from a backlog of pods created before the scheduler started
    binds: float  # Binding calls/s alone
    decision_p50: float  # seconds
    decision_p99: float
    decisions: float  # decisions/s of the decision code alone, no API
    bound_p50: float  # seconds from a pod's create call returning to the scheduler seeing it bound
    bound_p99: float

    def cells(self) -> list[str]:
        return [f"{self.nodes:,}", f"{self.pods:,}", f"{self.end_to_end:,.0f}", f"{self.creates:,.0f}",
                f"{self.backlog:,.0f}", f"{self.binds:,.0f}", f"{self.decisions:,.0f}",
                f"{self.decision_p50 * 1e3:.2f}", f"{self.decision_p99 * 1e3:.2f}",
                f"{self.bound_p50 * 1e3:.0f}", f"{self.bound_p99 * 1e3:.0f}"]


HEADER = ["NODES", "PODS", "E2E PODS/S", "CREATES/S", "BACKLOG PODS/S", "BINDINGS/S", "DECISIONS/S",
          "DECIDE P50 MS", "DECIDE P99 MS", "BOUND P50 MS", "BOUND P99 MS"]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------- the creator process


def bench_pod(name: str, namespace: str, scheduler_name: str) -> core_pb2.Pod:
    return hollow.pod(name, namespace, cpu=POD_CPU, memory=POD_MEMORY, scheduler_name=scheduler_name,
                      labels={"app": "bench"})


async def create_pods(address: str, namespace: str, count: int, scheduler_name: str) -> dict[str, float]:
    """Create `count` pods, IN_FLIGHT at a time; returns each pod's create-returned wall time."""
    created: dict[str, float] = {}
    async with Client(address) as client:
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def one(i: int) -> None:
            name = f"p{i:05d}"
            async with gate:
                await client.create(bench_pod(name, namespace, scheduler_name))
            created[name] = time.time()

        created["<start>"] = time.time()
        await asyncio.gather(*(one(i) for i in range(count)))
    return created


def _creator(address: str, namespace: str, count: int, scheduler_name: str, out: multiprocessing.Queue) -> None:
    out.put(asyncio.run(create_pods(address, namespace, count, scheduler_name)))


# ---------------------------------------------------------------- one cluster size


async def namespace(client: Client, name: str) -> str:
    ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = name
    await client.create(ns)
    return name


async def raw_binding_rate(client: Client, nodes: list[str], count: int, tag: str) -> float:
    """Binding calls/s with no scheduler: the apiserver's ceiling."""
    ns = await namespace(client, f"binds-{tag}")
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def create(i: int) -> core_pb2.Pod:
        async with gate:
            return await client.create(bench_pod(f"b{i:05d}", ns, "nobody"))

    pods = await asyncio.gather(*(create(i) for i in range(count)))

    async def bind(i: int, pod: core_pb2.Pod) -> None:
        async with gate:
            await client.bind(pod, nodes[i % len(nodes)])

    started = time.perf_counter()
    await asyncio.gather(*(bind(i, p) for i, p in enumerate(pods)))
    return count / (time.perf_counter() - started)


def offline_decisions(node_objects: list[core_pb2.Node], count: int) -> float:
    """decisions/s of filter + score + pick + assume alone, on the same nodes, with no API."""
    cache = Cache()
    for n in node_objects:
        cache.add_node(n)
    profile = configuration.Profile()
    profile.plugins.remove("DefaultBinder")
    framework = configuration.build_framework(profile, Handle(), seed=1)
    pods = []
    for i in range(count):
        p = bench_pod(f"x{i:05d}", "offline", "default-scheduler")
        p.metadata.uid = f"uid-{i}"
        pods.append(p)
    started = time.perf_counter()
    for p in pods:
        info = PodInfo.from_pod(p)
        cache.assume(info, framework.schedule(CycleState(), info, cache.nodes))
    return count / (time.perf_counter() - started)


class Phase:
    """A scheduler for one measurement, seeing only this size's nodes, and when it saw each pod bound."""

    def __init__(self, client: Client, tag: str, namespace: str, scheduler_name: str, expected: int) -> None:
        cfg = configuration.SchedulerConfig(profiles=[configuration.Profile(scheduler_name=scheduler_name)])
        self.scheduler = Scheduler(client, cfg, node_selector=f"{POOL}={tag}", record_latencies=True)
        self.namespace = namespace
        self.expected = expected
        self.bound_at: dict[str, float] = {}
        self.synced_at = 0.0
        self._all_bound = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The scheduler's own informer tells when each pod comes back bound.
        self.scheduler.pods.add_handler(on_add=self._seen, on_update=lambda _old, new: self._seen(new))

    def _seen(self, pod: core_pb2.Pod) -> None:
        meta = pod.metadata
        if meta.namespace == self.namespace and pod.spec.node_name and meta.name not in self.bound_at:
            self.bound_at[meta.name] = time.time()
            if len(self.bound_at) == self.expected:
                self._all_bound.set()

    async def __aenter__(self) -> Phase:
        self._task = asyncio.create_task(self.scheduler.run())
        await asyncio.wait_for(self.scheduler.synced.wait(), 120)
        self.synced_at = time.time()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def all_bound(self) -> float:
        """Wait until every expected pod is bound; the time the last one was seen."""
        await asyncio.wait_for(self._all_bound.wait(), 600)
        return max(self.bound_at.values())


def start_creator(address: str, namespace: str, count: int, scheduler_name: str
                  ) -> tuple[multiprocessing.process.BaseProcess, multiprocessing.Queue]:
    spawn = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = spawn.Queue()
    creator = spawn.Process(target=_creator, args=(address, namespace, count, scheduler_name, results))
    creator.start()
    return creator, results


async def creator_result(creator: multiprocessing.process.BaseProcess, results: multiprocessing.Queue
                         ) -> dict[str, float]:
    created: dict[str, float] = await asyncio.to_thread(results.get, True, 600)
    await asyncio.to_thread(creator.join, 10)
    return created


async def measure_size(address: str, client: Client, size: int, scale: Scale) -> Result:
    tag = f"n{size}"
    log(f"{size:,} nodes: registering")
    node_objects = [hollow.node(f"{tag}-{i:05d}", cpu="4", memory="16Gi", pods=NODE_PODS, labels={POOL: tag})
                    for i in range(size)]
    await hollow.register_all(client, node_objects, concurrency=IN_FLIGHT)
    names = [n.metadata.name for n in node_objects]

    log(f"{size:,} nodes: Binding calls alone ({scale.binds:,})")
    binds = await raw_binding_rate(client, names, scale.binds, tag)

    log(f"{size:,} nodes: decision code alone ({scale.pods:,} pods)")
    decisions = offline_decisions(node_objects, scale.pods)

    log(f"{size:,} nodes: end to end ({scale.pods:,} pods created while scheduling)")
    ns = await namespace(client, f"pods-{tag}")
    async with Phase(client, tag, ns, f"bench-{tag}", scale.pods) as phase:
        creator, results = start_creator(address, ns, scale.pods, f"bench-{tag}")
        last_bound = await phase.all_bound()
        created = await creator_result(creator, results)
    start = created.pop("<start>")
    latencies = phase.scheduler.metrics.decision_seconds
    waits = [phase.bound_at[name] - when for name, when in created.items()]

    log(f"{size:,} nodes: backlog ({scale.pods:,} pods created first, then scheduled)")
    ns = await namespace(client, f"backlog-{tag}")
    await creator_result(*start_creator(address, ns, scale.pods, f"backlog-{tag}"))
    async with Phase(client, tag, ns, f"backlog-{tag}", scale.pods) as backlog:
        backlog_done = await backlog.all_bound()
    return Result(
        nodes=size, pods=scale.pods, end_to_end=scale.pods / (last_bound - start),
        creates=scale.pods / (max(created.values()) - start),
        backlog=scale.pods / (backlog_done - backlog.synced_at), binds=binds,
        decision_p50=percentile(latencies, 0.5), decision_p99=percentile(latencies, 0.99),
        decisions=decisions, bound_p50=statistics.median(waits), bound_p99=percentile(waits, 0.99))


async def run(address: str, scale: Scale) -> list[Result]:
    async with Client(address) as client:
        return [await measure_size(address, client, size, scale) for size in scale.nodes]


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind as Ctrl-C does, so etcd, the apiserver and the temp dir go


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scheduler", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 nodes, 1,000 pods")
    parser.add_argument("--nodes", type=int, action="append", help="cluster size(s) to run instead of the scale's")
    opts = parser.parse_args(argv)
    scale = QUICK if opts.quick else FULL
    if opts.nodes:
        scale = Scale(nodes=tuple(opts.nodes), pods=scale.pods, binds=scale.binds)
    signal.signal(signal.SIGTERM, _interrupted)
    began = time.monotonic()
    with throwaway_control_plane() as plane:
        apiserver = plane.apiserver
        try:
            results = asyncio.run(run(apiserver.address, scale))
        except BaseException:
            print(apiserver.process.tail(), file=sys.stderr)
            raise
    print(f"Flotilla scheduler benchmark{' (--quick)' if opts.quick else ''}, "
          f"{_dt.datetime.now().isoformat(timespec='seconds')}: {os.cpu_count()} CPUs, "
          f"pods requesting {POD_CPU} cpu / {POD_MEMORY}, {time.monotonic() - began:.0f} s")
    print("\n".join(format_table([HEADER, *(r.cells() for r in results)])))
    print("E2E: first create to last pod bound, pods created while scheduling. CREATES/S: the creator process "
          "alone.\nBACKLOG: pods created first, scheduler started after; bound/s from its caches' sync. "
          "BINDINGS/S: Binding calls alone,\nno scheduler. DECISIONS/S: the decision code alone, no API. "
          "DECIDE: framework time per decision. BOUND: create returned -> seen bound.")


if __name__ == "__main__":
    main()
