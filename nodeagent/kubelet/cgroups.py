"""Pod cgroups on the node: the pids limits the kubelet sets, and removing what a pod leaves behind.

Every container of a pod runs under the pod's cgroup (`cgroup_parent` in
sandbox.py, `<cgroup_root>/pod<uid>`), and every pod of the node under
`cgroup_root` — the kubelet's `kubepods`. The kubelet writes two limits there
before a pod's sandbox starts, as the real kubelet's pod container manager and
node allocatable enforcement do:

- `pids.max` of the pod's cgroup: `pod_pids_limit` (the kubelet's
  `--pod-max-pids`), so a fork bomb in one pod cannot take the node's process
  table; the limit is hierarchical, so it bounds all the pod's containers
  together.
- `pids.max` of `cgroup_root`: the node's pid capacity (the smaller of
  kernel.pid_max and kernel.threads-max) less `system_reserved_pids`, so all
  pods together always leave the kubelet, containerd and sshd room to fork.

containerd removes a container's own cgroup, but under cgroups v1 the pod-level
directory stays; the kubelet removes it when it kills a pod, and the local
provider does the same for a whole node's prefix at teardown.

Both cgroups v1 (the `pids` hierarchy) and v2 (the unified tree, where the
`pids` controller must be enabled in each ancestor's subtree) are handled.
"""

from __future__ import annotations

import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNLIMITED = "max"


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


def pids_hierarchy(root: Path = CGROUP_ROOT) -> Path | None:
    """Where the pids controller's tree is mounted: v1's `pids` hierarchy, or the v2 root; None without one."""
    if (root / "pids" / "cgroup.procs").exists():
        return root / "pids"
    controllers = root / "cgroup.controllers"
    if controllers.exists() and "pids" in controllers.read_text().split():
        return root
    return None


def pids_cgroup(path: str, root: Path = CGROUP_ROOT) -> Path | None:
    """The directory of cgroup `path` in the pids tree (which may not exist yet); None without a pids controller."""
    hierarchy = pids_hierarchy(root)
    return None if hierarchy is None else hierarchy / path.strip("/")


def node_pid_capacity() -> int:
    """How many processes the node can hold: the kubelet's pid capacity, min(pid_max, threads-max)."""
    values = []
    for name in ("pid_max", "threads-max"):
        try:
            values.append(int(Path("/proc/sys/kernel", name).read_text()))
        except (OSError, ValueError):
            continue
    return min(values) if values else 32768


def set_pids_limit(path: str, limit: int, root: Path = CGROUP_ROOT) -> Path | None:
    """Create cgroup `path` in the pids tree and write `limit` (<= 0: unlimited) as its pids.max.

    Returns the cgroup's directory, or None when the node has no pids controller (nothing is bounded
    then, and the kubelet says so once in its log).
    """
    cgroup = pids_cgroup(path, root)
    if cgroup is None:
        return None
    hierarchy = pids_hierarchy(root)
    assert hierarchy is not None
    if hierarchy == root:
        _enable_pids_controller(root, cgroup)
    cgroup.mkdir(parents=True, exist_ok=True)
    value = str(limit) if limit > 0 else UNLIMITED
    if (cgroup / "pids.max").read_text().strip() != value:
        (cgroup / "pids.max").write_text(value)
    return cgroup


def _enable_pids_controller(root: Path, cgroup: Path) -> None:
    """cgroups v2: a child has pids.max only when every ancestor enables `pids` for its subtree."""
    parent = root
    for part in cgroup.relative_to(root).parts:
        control = parent / "cgroup.subtree_control"
        if "pids" not in control.read_text().split():
            control.write_text("+pids")
        parent = parent / part
        parent.mkdir(exist_ok=True)


def pids_current(path: str, root: Path = CGROUP_ROOT) -> int | None:
    """The processes (tasks) in cgroup `path` and below it now; None if it does not exist."""
    cgroup = pids_cgroup(path, root)
    try:
        return int((cgroup / "pids.current").read_text()) if cgroup is not None else None
    except (OSError, ValueError):
        return None
