"""Pod cgroups on the node: removing what the runtime leaves behind when a pod is torn down.

containerd removes a container's own cgroup, but under cgroups v1 the pod-level
directory (`cgroup_parent`) stays; the kubelet removes it when it kills a pod,
and the local provider does the same for a whole node's prefix at teardown.
"""

from __future__ import annotations

import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def remove_cgroups(path: str) -> None:
    """rmdir `path` (relative to each hierarchy) and everything under it, deepest first.

    containerd leaves pod-level cgroup directories behind under cgroups v1, so the
    kubelet calls this for each pod it tears down and tests call it per node.
    """
    rel = path.strip("/")
    if not rel:
        return
    for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else []:
        top = hierarchy / rel
        if not top.is_dir():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for d in [*dirs, top]:
            for _ in range(20):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)  # tasks still leaving (the kernel empties cgroups asynchronously)
