"""emptyDir: scratch space that lives exactly as long as the pod on this node.

The directory is <pod dir>/volumes/empty-dir/<name>, world-writable (0777) as in
Kubernetes so containers running as any user can share it. With
`medium: Memory` it is a tmpfs of its own, sized by `sizeLimit` (or by the
pod's memory limit when every container has one, whichever is smaller), so
its pages count against RAM and vanish with the pod.

`sizeLimit` on a disk-backed emptyDir is not a quota: as the kubelet's
eviction manager does, the kubelet measures what the volume holds every
`eviction_monitoring_period` (`usage`, du's block count) and evicts the pod
once it is over (`exceeded`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from nodeagent.kubelet.volumes import mounts
from nodeagent.kubelet.volumes.errors import SetUpError
from proto import core_pb2
from proto.quantity import int_value

MODE = 0o777


def set_up(pod: core_pb2.Pod, source: core_pb2.EmptyDirVolumeSource, path: Path) -> None:
    """Make the volume's directory (and its tmpfs for medium Memory); idempotent."""
    if source.medium not in ("", "Memory"):
        raise SetUpError(f'storage medium "{source.medium}" is not supported by this kubelet')
    path.mkdir(parents=True, exist_ok=True)
    if source.medium == "Memory" and not mounts.is_mount_point(path.resolve()):
        try:
            mounts.mount_tmpfs(path, size=tmpfs_size(pod, size_limit(source)), mode=MODE)
        except OSError as err:
            raise SetUpError(str(err)) from None
    path.chmod(MODE)


def size_limit(source: core_pb2.EmptyDirVolumeSource) -> int | None:
    """sizeLimit in bytes; None when unset or zero (no limit, as in Kubernetes)."""
    if not source.size_limit:
        return None
    return int_value(source.size_limit) or None


def tmpfs_size(pod: core_pb2.Pod, limit: int | None) -> int | None:
    """A memory-backed volume's size: its own limit and the pod's memory limit, whichever is smaller."""
    containers = list(pod.spec.containers)
    pod_limit = None
    if containers and all("memory" in c.resources.limits for c in containers):
        pod_limit = sum(int_value(c.resources.limits["memory"]) for c in containers)
    sizes = [s for s in (limit, pod_limit) if s]
    return min(sizes) if sizes else None


def usage(path: Path) -> int:
    """Bytes the volume occupies, as du counts them (allocated blocks; hard links once; no following links)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                info = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue  # removed while we walked
            if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
                if (info.st_dev, info.st_ino) in seen:
                    continue
                seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
    return total


def exceeded(name: str, source: core_pb2.EmptyDirVolumeSource, path: Path) -> str | None:
    """The eviction message when the volume holds more than its sizeLimit, else None."""
    limit = size_limit(source)
    if limit is None or not path.is_dir() or usage(path) <= limit:
        return None
    return f'Usage of EmptyDir volume "{name}" exceeds the limit "{source.size_limit}". '
