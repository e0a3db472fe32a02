"""Memory per object in the apiserver's watch cache (issue 19).

    .venv/bin/python -m bench.cache_memory [--objects 30000] [--buffer 10000]

Fills one resource's WatchCache (controlplane/apiserver/cacher/store.py) with
`--objects` pods as a density run leaves them — bench.api's ~1 KiB pod, bound to
a node, Running, with a status — through the registry's own codec, then applies
`--buffer` updates so the ring buffer is full, and reports the memory the cache
holds per object — the process's resident set grown (protobuf's upb keeps
decoded messages outside Python's allocator, so tracemalloc alone would miss
them) — for the store alone and with the buffer, beside the stored bytes per
object. No etcd or apiserver is needed: the bytes
are what the registry stores.
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

from bench.api import pod_manifest
from controlplane.apiserver.cacher.store import WatchCache
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.storage import Change, Stored
from kctl.printers import format_table
from proto import core_pb2, kinds

PODS = kinds.resolve("pods")


def stored_pod(index: int) -> tuple[bytes, bytes]:
    pod = pod_manifest(f"pod-{index:06d}", f"density-{index % 30}")
    pod.metadata.uid = f"00000000-0000-0000-0000-{index:012d}"
    pod.spec.node_name = f"hollow-{index % 1000:04d}"
    pod.status.phase, pod.status.pod_ip, pod.status.host_ip = "Running", "10.244.1.2", "10.0.0.1"
    for kind in ("Initialized", "ContainersReady", "Ready", "PodScheduled"):
        pod.status.conditions.add(type=kind, status="True").last_transition_time.GetCurrentTime()
    status = pod.status.container_statuses.add(name="checkout", image=pod.spec.containers[0].image, ready=True)
    status.state.running.started_at.GetCurrentTime()
    key = f"/registry/pods/{pod.metadata.namespace}/{pod.metadata.name}".encode()
    return key, pod.SerializeToString(deterministic=True)


def rss() -> int:
    """This process's resident set, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(objects: int, buffer: int) -> list[list[str]]:
    items = [stored_pod(i) for i in range(objects)]
    size = sum(len(v) for _, v in items) / objects
    registry = Registry.__new__(Registry)  # its codec only: no storage, no admission
    cache = WatchCache(PODS, buffer, registry.decode, Registry._with_version)
    gc.collect()
    before = rss()
    cache.replace((Stored(k, v, i + 1) for i, (k, v) in enumerate(items)), objects)
    gc.collect()
    store = rss() - before
    pod = core_pb2.Pod()
    for i in range(buffer):
        key, value = items[i % objects]
        pod.ParseFromString(value)
        pod.metadata.labels["generation"] = str(i)
        cache.apply(Change("PUT", key, pod.SerializeToString(deterministic=True), value, objects + i + 1))
    gc.collect()
    total = rss() - before
    return [["MEASURE", "VALUE"],
             ["objects", f"{objects:,}"],
             ["stored bytes per object (etcd value)", f"{size:,.0f}"],
             ["store: memory per object (encoded + kept fields + indexes)", f"{store / objects:,.0f} B"],
             [f"store + {buffer:,}-event buffer: memory per object", f"{total / objects:,.0f} B"],
             ["store + buffer, total", f"{total / 2**20:,.0f} MiB"]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cache_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=30_000)
    parser.add_argument("--buffer", type=int, default=10_000)
    opts = parser.parse_args(argv)
    print("\n".join(format_table(measure(opts.objects, opts.buffer))))


if __name__ == "__main__":
    main()
