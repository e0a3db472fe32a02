"""The pod start benchmark: what the kubelet costs on top of the runtime beneath it.

    .venv/bin/python -m bench.pods [--pods 30]

It starts a private etcd, apiserver and node (containerd with its own root,
state and socket, plus the kubelet process) in a temporary directory, measures,
and removes everything after (pods, containerd, mounts, cgroups, the bridge).
Images are present (imported before timing), so every figure is a warm start.

Three ways to start the same busybox `sleep` container, in the same run:

- **kubelet**: create a Pod bound to the node through the apiserver, and time
  until a watch reports it Running — the whole path (apiserver, etcd, the
  kubelet's informer and work queue, CRI calls, the status write);
- **raw CRI**: the three CRI calls the kubelet makes itself, RunPodSandbox (with
  CNI) + CreateContainer + StartContainer, from this process;
- **ctr run**: `ctr run -d` (no CNI network, no sandbox): containerd's floor.

Each is timed one at a time (latency) and, for the kubelet and raw CRI, N at
once (what a burst of pods costs). Ratios are against raw CRI. The kubelet's
resident memory with N pods and its CPU seconds per pod started are read from
/proc. Goals (issue 5): kubelet p50 <= 1.5x raw CRI, p99 <= 1 s, RSS <= 80 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from client import Client
from kctl.printers import format_table
from nodeagent.kubelet.runtime import Runtime
from proto import core_pb2, cri_pb2
from provision.images.oci import BUSYBOX_IMAGE
from provision.localnode import LocalNode, free_pod_cidr
from provision.processes import start_apiserver, start_etcd

NAMESPACE = "bench-pods"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


@dataclass
class Row:
    figure: str
    kubelet: float
    raw: float
    ctr: float = math.nan
    goal: str = ""

    def cells(self) -> list[str]:
        def ms(v: float) -> str:
            return "-" if math.isnan(v) else f"{v * 1000:.0f}"
        ratio = "-" if math.isnan(self.kubelet) or not self.raw or math.isnan(self.raw) else \
            f"{self.kubelet / self.raw:.2f}x"
        return [self.figure, ms(self.kubelet), ms(self.raw), ms(self.ctr), ratio, self.goal]


# ---------------------------------------------------------------- the kubelet path


def bench_pod(name: str, node: str) -> core_pb2.Pod:
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name = name
    pod.spec.node_name = node
    pod.spec.termination_grace_period_seconds = 1  # the kubelet confirms removal: phases never overlap
    c = pod.spec.containers.add(name="sleep", image=BUSYBOX_IMAGE, image_pull_policy="IfNotPresent")
    c.command.extend(["sleep", "3600"])
    return pod


async def start_through_kubelet(client: Client, node: str, names: list[str], *, at_once: bool) -> list[float]:
    """Seconds from each create call to the watch event that shows the pod Running."""
    started: dict[str, float] = {}
    running: dict[str, float] = {}
    arrived = {name: asyncio.Event() for name in names}
    done = asyncio.Event()
    listed = await client.list(core_pb2.Pod, NAMESPACE)

    async def watch() -> None:
        async for event in client.watch(core_pb2.Pod, NAMESPACE, resource_version=listed.resource_version):
            pod = event.object
            if pod is None or pod.metadata.name not in names or pod.metadata.name in running:
                continue
            if pod.status.phase == "Running":
                running[pod.metadata.name] = time.perf_counter()
                arrived[pod.metadata.name].set()
                if len(running) == len(names):
                    done.set()
                    return

    watcher = asyncio.create_task(watch())
    try:
        async def create(name: str) -> None:
            started[name] = time.perf_counter()
            await client.create(bench_pod(name, node), namespace=NAMESPACE)
        if at_once:
            await asyncio.gather(*(create(n) for n in names))
        else:
            for name in names:
                await create(name)
                await asyncio.wait_for(arrived[name].wait(), 60)
        await asyncio.wait_for(done.wait(), 120)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return [running[n] - started[n] for n in names]


async def delete_pods(client: Client, names: list[str]) -> None:
    for name in names:
        await client.delete(core_pb2.Pod, name, NAMESPACE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        left = await client.list(core_pb2.Pod, NAMESPACE)
        if not left.items:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("pods were not removed within 2 minutes")


# ---------------------------------------------------------------- raw CRI and ctr


def _sandbox_config(local: LocalNode, name: str) -> cri_pb2.PodSandboxConfig:
    uid = uuid.uuid4().hex
    config = cri_pb2.PodSandboxConfig(
        metadata=cri_pb2.PodSandboxMetadata(name=name, uid=uid, namespace="bench-raw"),
        hostname=name, log_directory=str(local.base / "raw-logs" / uid))
    config.linux.cgroup_parent = f"{local.runtime.cgroup_root}/raw{uid}"
    return config


async def start_raw(runtime: Runtime, local: LocalNode, count: int, *, at_once: bool) -> tuple[list[float], list[str]]:
    """RunPodSandbox + CreateContainer + StartContainer, as the kubelet sequences them."""
    sandboxes: list[str] = []

    async def one(i: int) -> float:
        begin = time.perf_counter()
        config = _sandbox_config(local, f"raw-{i}")
        sandbox = await runtime.run_pod_sandbox(config)
        sandboxes.append(sandbox)
        container = cri_pb2.ContainerConfig(metadata=cri_pb2.ContainerMetadata(name="sleep"),
                                            image=cri_pb2.ImageSpec(image=BUSYBOX_IMAGE),
                                            command=["sleep", "3600"], log_path="sleep/0.log")
        cid = await runtime.create_container(sandbox, container, config)
        await runtime.start_container(cid)
        return time.perf_counter() - begin

    if at_once:
        times = list(await asyncio.gather(*(one(i) for i in range(count))))
    else:
        times = [await one(i) for i in range(count)]
    return times, sandboxes


async def remove_raw(runtime: Runtime, sandboxes: list[str]) -> None:
    for sandbox in sandboxes:
        await runtime.stop_pod_sandbox(sandbox)
        await runtime.remove_pod_sandbox(sandbox)


def start_ctr(local: LocalNode, count: int) -> list[float]:
    """`ctr run -d` of the same image and command, one at a time; then removes them."""
    ctr = shutil.which("ctr") or "ctr"
    base = [ctr, "--address", str(local.runtime.socket), "-n", "k8s.io"]
    times = []
    ids = []
    try:
        for i in range(count):
            cid = f"bench-ctr-{i}"
            begin = time.perf_counter()
            subprocess.run([*base, "run", "-d", "--cgroup", f"{local.runtime.cgroup_root}/ctr-{i}",
                            "--runc-root", str(local.runtime.runc_root / "ctr"),
                            BUSYBOX_IMAGE, cid, "sleep", "3600"], check=True, capture_output=True)
            times.append(time.perf_counter() - begin)
            ids.append(cid)
    finally:
        for cid in ids:
            subprocess.run([*base, "task", "kill", "-s", "KILL", cid], capture_output=True)
            for _ in range(50):
                if subprocess.run([*base, "task", "delete", cid], capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
            subprocess.run([*base, "container", "delete", cid], capture_output=True)
    return times


# ---------------------------------------------------------------- the kubelet process


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the run


async def run(address: str, local: LocalNode, count: int) -> tuple[list[Row], list[str]]:
    notes: list[str] = []
    runtime = Runtime(str(local.runtime.socket))
    assert local.kubelet is not None
    pid = local.kubelet.pid
    async with Client(address) as client:
        await client.wait_ready()
        ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = NAMESPACE
        await client.create(ns)
        await _wait_node_ready(client, local.name)
        # One warm-up of each path, so no figure pays for first-use costs (snapshot, CNI plugin cache).
        await start_through_kubelet(client, local.name, ["warm"], at_once=False)
        await delete_pods(client, ["warm"])
        _, warm = await start_raw(runtime, local, 1, at_once=False)
        await remove_raw(runtime, warm)

        log(f"kubelet: {count} pods one at a time")
        cpu0 = _cpu_seconds(pid)
        seq_names = [f"seq-{i}" for i in range(count)]
        kubelet_seq = await start_through_kubelet(client, local.name, seq_names, at_once=False)
        cpu_per_pod = (_cpu_seconds(pid) - cpu0) / count
        rss = _rss_mb(pid)
        notes.append(f"kubelet RSS with {count} pods running: {rss:.1f} MB (goal <= 80 MB); "
                     f"kubelet CPU per pod start: {cpu_per_pod * 1000:.0f} ms")
        await delete_pods(client, seq_names)

        log(f"kubelet: {count} pods at once")
        burst_names = [f"burst-{i}" for i in range(count)]
        kubelet_burst = await start_through_kubelet(client, local.name, burst_names, at_once=True)
        await delete_pods(client, burst_names)

        log(f"raw CRI: {count} one at a time, then {count} at once")
        raw_seq, sandboxes = await start_raw(runtime, local, count, at_once=False)
        await remove_raw(runtime, sandboxes)
        raw_burst, sandboxes = await start_raw(runtime, local, count, at_once=True)
        await remove_raw(runtime, sandboxes)
    await runtime.close()

    log(f"ctr run: {count} one at a time")
    ctr_seq = await asyncio.to_thread(start_ctr, local, count)

    rows = [
        Row(f"one at a time p50 (ms, n={count})", percentile(kubelet_seq, 50), percentile(raw_seq, 50),
            percentile(ctr_seq, 50), "kubelet <= 1.5x raw"),
        Row(f"one at a time p99 (ms, n={count})", percentile(kubelet_seq, 99), percentile(raw_seq, 99),
            percentile(ctr_seq, 99), "kubelet <= 1000 ms"),
        Row(f"{count} at once p50 (ms)", percentile(kubelet_burst, 50), percentile(raw_burst, 50)),
        Row(f"{count} at once p99 (ms)", percentile(kubelet_burst, 99), percentile(raw_burst, 99),
            goal="kubelet <= 1000 ms"),
    ]
    return rows, notes


async def _wait_node_ready(client: Client, name: str) -> None:
    for _ in range(300):
        with contextlib.suppress(Exception):
            node = await client.get(core_pb2.Node, name)
            if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions):
                return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"node {name} did not become Ready")


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind as Ctrl-C does, so every process and directory goes


def measure(count: int) -> tuple[list[Row], list[str]]:
    with tempfile.TemporaryDirectory(prefix="flt-bench-") as tmp, contextlib.ExitStack() as stop:
        base = Path(tmp)
        etcd = start_etcd(base / "etcd", log_dir=base)
        stop.callback(etcd.process.stop)
        apiserver = start_apiserver(etcd.url, base, extra=["--log-level", "WARNING"])
        stop.callback(apiserver.process.stop)
        local = LocalNode(f"bench-{uuid.uuid4().hex[:4]}", base / "node", apiserver.address, "127.0.0.1",
                          free_pod_cidr(), {"relist_period": 1.0})
        stop.callback(local.cleanup)
        local.start()
        log(f"node {local.name}: containerd pid {local.runtime.process.pid if local.runtime.process else '?'}, "
            f"kubelet pid {local.kubelet.pid if local.kubelet else '?'}")
        try:
            return asyncio.run(run(apiserver.address, local, count))
        except Exception:
            if local.kubelet is not None:
                print(local.kubelet.tail(), file=sys.stderr)
            raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pods", description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=30, help="pods per phase (default 30)")
    opts = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    began = time.monotonic()
    try:
        rows, notes = measure(opts.pods)
    except KeyboardInterrupt:
        sys.exit("interrupted; everything started is stopped")
    print(f"Flotilla pod start benchmark, {_dt.datetime.now().isoformat(timespec='seconds')}: "
          f"{os.cpu_count()} CPUs, {time.monotonic() - began:.0f} s")
    table = [["figure", "kubelet", "raw CRI", "ctr run", "kubelet/raw", "goal"], *[r.cells() for r in rows]]
    print("\n".join(format_table(table)))
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
