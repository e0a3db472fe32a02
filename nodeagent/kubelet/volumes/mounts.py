"""The node's mount table as the kubelet uses it: tmpfs for memory-backed volumes, binds for subPaths.

Mounts are made with mount(2) and umount2(2) through libc, in the kubelet's
(the host's) mount namespace, so containerd bind-mounts them into containers
like any other directory. Every mount the kubelet makes for a pod lies under
the pod's directory, so tearing the pod down is: detach whatever
/proc/self/mountinfo lists beneath it (deepest first), then remove the tree —
which also works for a kubelet that restarted and remembers nothing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from pathlib import Path

MS_BIND = 0x1000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)
_OCTAL = re.compile(r"\\([0-7]{3})")


def mount(source: str, target: Path, fstype: str | None, flags: int = 0, data: str = "") -> None:
    """mount(2); OSError with the target named on failure."""
    rc = _libc.mount(source.encode(), str(target).encode(), fstype.encode() if fstype else None,
                     ctypes.c_ulong(flags), data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def mount_tmpfs(target: Path, *, size: int | None, mode: int) -> None:
    """A fresh tmpfs at `target` (memory-backed emptyDir, secret volume); `size` in bytes caps it."""
    options = f"mode={mode:o}" + (f",size={size}" if size else "")
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, options)


def bind(source: str, target: Path) -> None:
    mount(source, target, None, MS_BIND)


def unmount(target: Path) -> None:
    """Detach the mount at `target` (lazily: a process still using it keeps it until it lets go)."""
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unmount {target}: {os.strerror(err)}")


def mount_points() -> list[str]:
    """Every mount point of this mount namespace (mountinfo's fifth field, unescaped)."""
    with open("/proc/self/mountinfo") as f:
        return [_OCTAL.sub(lambda m: chr(int(m.group(1), 8)), line.split()[4]) for line in f]


def is_mount_point(path: Path) -> bool:
    """Whether something is mounted at `path` (binds on the same filesystem included, unlike ismount)."""
    return str(path) in mount_points()


def unmount_all_under(directory: Path) -> list[str]:
    """Detach every mount at or beneath `directory`, deepest first; the points detached."""
    base = str(directory.resolve())
    ours = sorted({p for p in mount_points() if p == base or p.startswith(base + "/")}, key=len, reverse=True)
    for point in ours:
        try:
            unmount(Path(point))
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.EINVAL):  # gone already, or no longer a mount point
                raise
    return ours
