"""The workloads benchmark (issue 14): a Job, a DaemonSet and a StatefulSet to done, beside a ReplicaSet.

    .venv/bin/python -m bench.workloads [--quick] [--rounds N] [--job-parallelism N...]

It starts a private etcd and apiserver (provision.processes.throwaway_control_plane),
the real controller manager and the real scheduler as processes, and 50 hollow nodes
in this process (bench/hollow_kubelet.py with `bind=False`: kubelets that run every
pod bound to them at once, mark it Running and Ready, finish pods annotated with an
exit code, and finish graceful deletions; placement is the scheduler's). Then, in
each round and the same run, it times from the create to "done" as the controller
reports it in the object's status:

- a ReplicaSet of 100 replicas: readyReplicas = 100 (the baseline);
- a Job of 100 completions (restartPolicy Never, backoffLimit 6, NonIndexed:
  Kubernetes' defaults; pods exit 0 as soon as they run), once with parallelism 100
  (all at once, as wide as the ReplicaSet: the like-for-like row) and once with
  parallelism 10 (ten waves, each pod's replacement started when it succeeds): the
  Complete condition;
- a DaemonSet over the 50 hollow nodes: numberReady = desiredNumberScheduled = 50;
- a StatefulSet of 100 replicas, podManagementPolicy Parallel (with its headless
  Service, no claim templates): readyReplicas = 100.

Each workload runs alone in its own namespace; between workloads the last one is
deleted and its pods are awaited gone. The table prints medians over the rounds (5;
1 with --quick): the time until the last pod was created (from the hollow kubelets'
pod cache), the time to done, the CPU the apiserver and the whole control plane
(etcd, apiserver, controller manager, scheduler; from /proc) used meanwhile, and
each workload's ratio to the ReplicaSet's time beside issue 14's goal (<= 1.5x).
Every component shares the machine's cores with this process, which plays all 50
kubelets, so figures are "per this box"; compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message

from bench.hollow_kubelet import ANNOTATION_EXIT_CODE, HollowCluster
from client import Client
from kctl.printers import format_table
from proto import apps_pb2, batch_pb2, core_pb2
from provision.processes import Process, throwaway_control_plane

GOAL = 1.5  # issue 14: each workload to done in at most 1.5x the ReplicaSet's time
IMAGE = "registry.k8s.io/pause:3.9"
DONE_TIMEOUT = 300.0


@dataclass(frozen=True)
class Scale:
    replicas: int  # the ReplicaSet's and StatefulSet's replicas, the Job's completions
    nodes: int  # hollow nodes, so the DaemonSet's pods
    rounds: int
    job_parallelism: tuple[int, ...] = (100, 10)


FULL = Scale(replicas=100, nodes=50, rounds=5)
QUICK = Scale(replicas=100, nodes=50, rounds=1)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the workloads


def _template(obj: Message, name: str) -> core_pb2.PodTemplateSpec:
    """Fill the selector and a one-container template of `obj` (any workload kind); returns the template."""
    spec = obj.spec  # type: ignore[attr-defined]
    spec.selector.match_labels["app"] = name
    spec.template.metadata.labels["app"] = name
    spec.template.spec.containers.add(name="app", image=IMAGE)
    return spec.template


def replica_set(name: str, namespace: str, replicas: int) -> apps_pb2.ReplicaSet:
    rs = apps_pb2.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    rs.metadata.name, rs.metadata.namespace = name, namespace
    rs.spec.replicas = replicas
    _template(rs, name)
    return rs


def job(name: str, namespace: str, completions: int, parallelism: int) -> batch_pb2.Job:
    j = batch_pb2.Job(api_version="batch/v1", kind="Job")
    j.metadata.name, j.metadata.namespace = name, namespace
    j.spec.completions, j.spec.parallelism = completions, parallelism
    template = j.spec.template
    template.spec.containers.add(name="app", image=IMAGE)
    template.spec.restart_policy = "Never"
    template.metadata.annotations[ANNOTATION_EXIT_CODE] = "0"  # the hollow kubelet ends it at once
    return j


def daemon_set(name: str, namespace: str) -> apps_pb2.DaemonSet:
    ds = apps_pb2.DaemonSet(api_version="apps/v1", kind="DaemonSet")
    ds.metadata.name, ds.metadata.namespace = name, namespace
    _template(ds, name)
    return ds


def stateful_set(name: str, namespace: str, replicas: int) -> apps_pb2.StatefulSet:
    sts = apps_pb2.StatefulSet(api_version="apps/v1", kind="StatefulSet")
    sts.metadata.name, sts.metadata.namespace = name, namespace
    sts.spec.replicas = replicas
    sts.spec.service_name = name
    sts.spec.pod_management_policy = "Parallel"
    _template(sts, name)
    return sts


def headless_service(name: str, namespace: str) -> core_pb2.Service:
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = name, namespace
    svc.spec.cluster_ip = "None"
    svc.spec.selector["app"] = name
    svc.spec.ports.add(name="web", port=80)
    return svc


def _replica_set_done(rs: apps_pb2.ReplicaSet) -> bool:
    return (rs.status.observed_generation >= rs.metadata.generation
            and rs.status.ready_replicas == rs.spec.replicas)


def _job_done(j: batch_pb2.Job) -> bool:
    if any(c.type == "Failed" and c.status == "True" for c in j.status.conditions):
        raise RuntimeError(f"job {j.metadata.name} failed: {j.status}")
    return any(c.type == "Complete" and c.status == "True" for c in j.status.conditions)


def _daemon_set_done(ds: apps_pb2.DaemonSet, nodes: int) -> bool:
    s = ds.status
    return (s.observed_generation >= ds.metadata.generation and s.desired_number_scheduled == nodes
            and s.number_ready == nodes and s.updated_number_scheduled == nodes)


def _stateful_set_done(sts: apps_pb2.StatefulSet) -> bool:
    return (sts.status.observed_generation >= sts.metadata.generation
            and sts.status.ready_replicas == sts.spec.replicas)


@dataclass(frozen=True)
class Workload:
    """One row of the table: how to make it, how its status says done, how many pods it makes."""

    label: str
    make: Callable[[str, str], Message]  # (name, namespace) -> the object
    done: Callable[[Message], bool]
    pods: int
    extra: Callable[[str, str], Message] | None = None  # created first (a StatefulSet's Service)


def workloads(scale: Scale) -> list[Workload]:
    n = scale.replicas

    def job_row(p: int) -> Workload:
        return Workload(f"Job, {n} completions, parallelism {p}", lambda name, ns: job(name, ns, n, p),
                        _job_done, n)  # type: ignore[arg-type]

    return [
        Workload(f"ReplicaSet, {n} replicas", lambda name, ns: replica_set(name, ns, n),
                 _replica_set_done, n),  # type: ignore[arg-type]
        *(job_row(p) for p in scale.job_parallelism),
        Workload(f"DaemonSet, {scale.nodes} hollow nodes", daemon_set,
                 lambda ds: _daemon_set_done(ds, scale.nodes), scale.nodes),  # type: ignore[arg-type]
        Workload(f"StatefulSet, {n} replicas, Parallel", lambda name, ns: stateful_set(name, ns, n),
                 _stateful_set_done, n, extra=headless_service),  # type: ignore[arg-type]
    ]


# ---------------------------------------------------------------- measuring


@dataclass
class Timing:
    created: list[float] = field(default_factory=list)  # seconds until its last pod existed
    done: list[float] = field(default_factory=list)
    apiserver_cpu: list[float] = field(default_factory=list)  # CPU seconds from create to done
    control_plane_cpu: list[float] = field(default_factory=list)  # etcd, apiserver, controllers, scheduler


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _poll(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    start = time.perf_counter()
    while not await check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"{what} not reached in {timeout:.0f}s")
        await asyncio.sleep(0.05)
    return time.perf_counter() - start


async def measure_one(client: Client, hollow: HollowCluster, workload: Workload, namespace: str,
                      pids: dict[str, int]) -> tuple[float, float, dict[str, float]]:
    """Create the workload, return (seconds to its last pod, seconds to done, CPU seconds each of `pids`
    used meanwhile); then delete it and await its pods gone."""
    store = next(i.store for i in hollow.informers if i.namespace == namespace)
    name = "w"
    if workload.extra is not None:
        await client.create(workload.extra(name, namespace))
    obj = workload.make(name, namespace)
    cls = type(obj)
    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    began = time.perf_counter()
    await client.create(obj)
    created: list[float] = []

    async def done() -> bool:
        if not created and len(store.list()) >= workload.pods:
            created.append(time.perf_counter() - began)
        return workload.done(await client.get(cls, name, namespace))

    finished = await _poll(done, DONE_TIMEOUT, f"{workload.label} done")
    cpu = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
    if not created:
        created.append(finished)
    await client.delete(cls, name, namespace, propagation_policy="Background")

    async def gone() -> bool:
        return not store.list()

    with contextlib.suppress(TimeoutError):
        await _poll(gone, 120, f"{workload.label}'s pods gone")
    if store.list():
        log(f"  {len(store.list())} pods of {workload.label} still there; going on")
    return created[0], finished, cpu


async def run(address: str, scale: Scale, start_components: Callable[[], None],
              pids: dict[str, int]) -> list[list[str]]:
    rows = workloads(scale)
    namespaces = {(r, w.label): f"bench-{r}-{i}" for r in range(scale.rounds) for i, w in enumerate(rows)}
    async with Client(address) as client:
        await client.wait_ready()
        for name in ["bench-warmup", *namespaces.values()]:
            ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
            ns.metadata.name = name
            await client.create(ns)
        start_components()
        # Kubernetes' node lease renewal is 10 s; 50 hollow kubelets renewing faster would be load of our making.
        hollow = HollowCluster(client, ["bench-warmup", *namespaces.values()], nodes=scale.nodes,
                               lease_interval=10.0, workers=64, bind=False)
        await hollow.start()
        timings = {w.label: Timing() for w in rows}
        try:
            # Warm up: every component has listed and watched before the first timing.
            log("warm-up: a 10-replica ReplicaSet through the scheduler and hollow kubelets")
            warm_up = Workload("warm-up", lambda name, ns: replica_set(name, ns, 10), rows[0].done, 10)
            await measure_one(client, hollow, warm_up, "bench-warmup", pids)
            for r in range(scale.rounds):
                for w in rows:
                    log(f"round {r + 1}/{scale.rounds}: {w.label}")
                    created, finished, cpu = await measure_one(client, hollow, w, namespaces[(r, w.label)], pids)
                    t = timings[w.label]
                    t.created.append(created)
                    t.done.append(finished)
                    t.apiserver_cpu.append(cpu["apiserver"])
                    t.control_plane_cpu.append(sum(cpu.values()))
                    log(f"  last pod created {created:.2f} s, done {finished:.2f} s, apiserver CPU "
                        f"{cpu['apiserver']:.2f} s, control plane CPU {sum(cpu.values()):.2f} s")
                    await asyncio.sleep(1.0)  # let the deletions' aftermath settle
        finally:
            await hollow.stop(delete_nodes=False)
    return table(rows, timings)


def table(rows: list[Workload], timings: dict[str, Timing]) -> list[list[str]]:
    baseline = statistics.median(timings[rows[0].label].done)
    out = [["WORKLOAD", "PODS", "LAST POD CREATED (s)", "DONE (s)", "EACH ROUND (s)", "APISERVER CPU (s)",
            "CONTROL PLANE CPU (s)", "RATIO TO RS", "GOAL", "MET"]]
    for i, w in enumerate(rows):
        t = timings[w.label]
        done = statistics.median(t.done)
        ratio = done / baseline
        out.append([w.label, str(w.pods), f"{statistics.median(t.created):.2f}", f"{done:.2f}",
                    ", ".join(f"{d:.2f}" for d in t.done), f"{statistics.median(t.apiserver_cpu):.2f}",
                    f"{statistics.median(t.control_plane_cpu):.2f}",
                    "1.00x (baseline)" if i == 0 else f"{ratio:.2f}x",
                    "-" if i == 0 else f"<= {GOAL}x", "-" if i == 0 else ("PASS" if ratio <= GOAL else "MISS")])
    return out


def controller_manager_and_scheduler(address: str, base: Path) -> list[Process]:
    """The real controller manager and scheduler for a bench's apiserver (not started; logs under `base`)."""
    return [
        Process("controller-manager", [sys.executable, "-m", "controlplane.controllers.main", "--server", address,
                                       "--leader-elect", "false", "--log-level", "WARNING"],
                base / "controller-manager.log"),
        Process("scheduler", [sys.executable, "-m", "controlplane.scheduler.main", "--server", address,
                              "--log-level", "WARNING"], base / "scheduler.log"),
    ]


def measure(scale: Scale) -> list[list[str]]:
    with throwaway_control_plane() as plane, contextlib.ExitStack() as stop:
        base, address = plane.base, plane.apiserver.address
        components = controller_manager_and_scheduler(address, base)
        for process in components:
            stop.callback(process.stop)

        pids = {"etcd": plane.etcd.process.pid, "apiserver": plane.apiserver.process.pid}

        def start() -> None:
            for process in components:
                process.start()
                pids[process.name] = process.pid

        try:
            return asyncio.run(run(address, scale, start, pids))
        except Exception:
            for process in components:
                print(process.tail(), file=sys.stderr)
            raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workloads", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round instead of five")
    parser.add_argument("--rounds", type=int, help="rounds of the four workloads (medians are printed)")
    parser.add_argument("--job-parallelism", type=int, nargs="+", default=list(FULL.job_parallelism),
                        help="one Job row per value (default: 100 10)")
    opts = parser.parse_args(argv)
    scale = QUICK if opts.quick else FULL
    scale = Scale(scale.replicas, scale.nodes, opts.rounds or scale.rounds, tuple(opts.job_parallelism))
    started = time.perf_counter()
    rows = measure(scale)
    print(f"Flotilla workloads benchmark{' (--quick)' if opts.quick else ''}, "
          f"{_dt.datetime.now().isoformat(timespec='seconds')}: {os.cpu_count()} CPUs, {scale.nodes} hollow nodes, "
          f"real controller manager and scheduler, medians of {scale.rounds} round(s), "
          f"{time.perf_counter() - started:.0f} s")
    print("\n".join(format_table(rows)))


if __name__ == "__main__":
    main()
