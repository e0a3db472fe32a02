"""nfs volumes: an NFS export mounted under the pod's directory for the pod's lifetime.

A pod's `nfs` volume (or the `nfs` source of the PersistentVolume its claim is
bound to) is mounted by the node's own NFS client, as Kubernetes' nfs plugin
does: `mount -t nfs [-o options] server:path <pod>/volumes/nfs/<volume>`, the
options being the volume's mount options (a PersistentVolume's `mountOptions`)
plus `ro` when the source is read-only. The mount lies under the pod's
directory, so the pod's tear-down detaches it with every other mount there.

The mount needs the kernel's NFS client and `mount.nfs` (Debian's nfs-common);
where either is missing the set-up fails with what mount said (this machine's
kernel has none: `mount.nfs: No such device`), and the pod waits with a
FailedMount event in Kubernetes' words, as for any volume that cannot be set up.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from nodeagent.kubelet.volumes import mounts
from nodeagent.kubelet.volumes.errors import SetUpError

MOUNT_TIMEOUT = 60.0  # an unreachable server must not hold the pod worker for ever ("hard" mounts retry)


def mount_argv(server: str, path: str, target: Path, *, read_only: bool, options: list[str]) -> list[str]:
    """The mount command Kubernetes' nfs plugin runs (an IPv6 server in brackets)."""
    host = f"[{server}]" if ":" in server and not server.startswith("[") else server
    opts = [*options, *(["ro"] if read_only and "ro" not in options else [])]
    return ["mount", "-t", "nfs", *(["-o", ",".join(opts)] if opts else []), f"{host}:{path}", str(target)]


def set_up(server: str, path: str, target: Path, *, read_only: bool, options: list[str]) -> None:
    """Mount the export at `target` unless it already is (blocking: run in a thread); SetUpError on failure."""
    if mounts.is_mount_point(target):
        return
    target.mkdir(parents=True, exist_ok=True)
    argv = mount_argv(server, path, target, read_only=read_only, options=options)
    if shutil.which("mount.nfs") is None and not Path("/sbin/mount.nfs").exists():
        raise SetUpError(_failed(argv, "mount.nfs: not found (the node needs an NFS client: Debian's nfs-common)"))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=MOUNT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise SetUpError(_failed(argv, f"no answer from {server} within {MOUNT_TIMEOUT:.0f}s")) from None
    if done.returncode != 0:
        raise SetUpError(_failed(argv, (done.stderr or done.stdout).strip(), done.returncode))


def _failed(argv: list[str], output: str, code: int = 32) -> str:
    # Kubernetes' mount error, so a user who searches for it finds the usual advice.
    return (f"mount failed: exit status {code}\nMounting command: mount\n"
            f"Mounting arguments: {' '.join(argv[1:])}\nOutput: {output}")
