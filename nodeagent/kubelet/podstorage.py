"""A pod's local ephemeral storage: what it asks for, what it may use, and what it uses on this node.

Kubernetes' `ephemeral-storage` resource is the node's own disk as pods consume
it outside any persistent volume. The eviction manager (eviction.py) compares
three figures per pod, measured as the kubelet's summary stats provider does:

- each container's writable layer: CRI `ContainerStats.writable_layer`, which
  containerd takes from its snapshotter (the overlay upper directory's size,
  refreshed by containerd every 10 s, so a burst of writes shows a little late);
- each container's logs: `<pod dir>/logs/<container>/`, as du counts them;
- the pod's emptyDir volumes that live on the disk (`medium: Memory` ones are
  RAM and count against memory instead), as du counts them.

Requests and limits come from the spec the way Kubernetes sums them for a pod:
the app containers add up, an init container runs alone so the pod needs the
larger of the two; a request left out is the limit (the apiserver's defaulting).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from nodeagent.kubelet.runtime import LABEL_CONTAINER_NAME, LABEL_POD_UID, Runtime
from nodeagent.kubelet.volumes.emptydir import usage as du
from proto import core_pb2
from proto.quantity import format_quantity, parse_quantity, quantity_format

EPHEMERAL_STORAGE = "ephemeral-storage"


@dataclass
class ContainerUsage:
    rootfs: int = 0  # the writable layer
    logs: int = 0

    @property
    def total(self) -> int:
        return self.rootfs + self.logs


@dataclass
class PodUsage:
    """One pod's ephemeral storage: its containers' (by name) and its disk-backed emptyDirs'."""

    containers: dict[str, ContainerUsage] = field(default_factory=dict)
    volumes: int = 0

    @property
    def total(self) -> int:
        return sum(c.total for c in self.containers.values()) + self.volumes


def canonical(text: str) -> str:
    """A quantity as Kubernetes prints it back ("5Mi", "1G"), in the format it was written in."""
    return format_quantity(parse_quantity(text), quantity_format(text))


def _amount(resources: object, name: str = EPHEMERAL_STORAGE) -> int | None:
    text = resources.get(name) if hasattr(resources, "get") else None
    return int(parse_quantity(text)) if text else None


def container_request(container: core_pb2.Container) -> int:
    """Bytes of ephemeral storage the container asks for (its limit when it names no request)."""
    requested = _amount(container.resources.requests)
    if requested is None:
        requested = _amount(container.resources.limits)
    return requested or 0


def container_request_text(container: core_pb2.Container) -> str:
    """The request as the eviction message shows it ("0" when none)."""
    text = container.resources.requests.get(EPHEMERAL_STORAGE) or container.resources.limits.get(EPHEMERAL_STORAGE)
    return canonical(text) if text else "0"


def pod_request(pod: core_pb2.Pod) -> int:
    """The pod's ephemeral-storage request: its containers' summed, or its largest init container's."""
    running = sum(container_request(c) for c in pod.spec.containers)
    return max([running, *(container_request(c) for c in pod.spec.init_containers)])


def pod_limit(pod: core_pb2.Pod) -> int | None:
    """The pod's ephemeral-storage limit as Kubernetes' PodLimits adds it up: the containers' limits
    summed (those that set one), or an init container's if larger; None when no container sets one."""
    app = [a for a in (_amount(c.resources.limits) for c in pod.spec.containers) if a is not None]
    init = [a for a in (_amount(c.resources.limits) for c in pod.spec.init_containers) if a is not None]
    if not app and not init:
        return None
    return max([sum(app), *init])


def disk_volume_paths(pod: core_pb2.Pod, volume_path: Callable[[core_pb2.Pod, core_pb2.Volume], Path | None]
                      ) -> list[Path]:
    """Where the pod's disk-backed emptyDirs are: the volumes that count as its ephemeral storage."""
    found = []
    for volume in pod.spec.volumes:
        if volume.HasField("empty_dir") and volume.empty_dir.medium != "Memory":
            path = volume_path(pod, volume)
            if path is not None:
                found.append(path)
    return found


async def measure(runtime: Runtime, pods: list[core_pb2.Pod], *, pod_dir: Callable[[str], Path],
                  volume_path: Callable[[core_pb2.Pod, core_pb2.Volume], Path | None]) -> dict[str, PodUsage]:
    """Each pod's usage now, by uid: one CRI call for the writable layers, du for logs and volumes."""
    usage = {pod.metadata.uid: PodUsage() for pod in pods}
    for stats in await runtime.list_container_stats():
        labels = stats.attributes.labels
        pod_usage = usage.get(labels.get(LABEL_POD_UID, ""))
        if pod_usage is not None and stats.HasField("writable_layer"):
            # Every instance of a restarted container keeps its own layer until it is removed: they add up.
            container = pod_usage.containers.setdefault(labels.get(LABEL_CONTAINER_NAME, ""), ContainerUsage())
            container.rootfs += stats.writable_layer.used_bytes.value

    def walk() -> None:
        for pod in pods:
            pod_usage = usage[pod.metadata.uid]
            logs = pod_dir(pod.metadata.uid) / "logs"
            for spec in (*pod.spec.init_containers, *pod.spec.containers):
                if (logs / spec.name).is_dir():
                    pod_usage.containers.setdefault(spec.name, ContainerUsage()).logs = du(logs / spec.name)
            pod_usage.volumes = sum(du(path) for path in disk_volume_paths(pod, volume_path) if path.is_dir())

    await asyncio.to_thread(walk)
    return usage


def exceeds(used: int, limit: int | None) -> bool:
    return limit is not None and used > limit


def binary(value: int) -> str:
    """Bytes as a BinarySI quantity ("40Mi", "41943041")."""
    return format_quantity(Decimal(value), "BinarySI")
