"""etcd backup and restore: a cluster's whole state is in etcd, so its snapshot is the backup.

`save` streams a consistent snapshot through etcd's Maintenance.Snapshot API
and checks it before declaring success. A cluster's etcd speaks only TLS and
takes only the apiserver's and the backup tool's client certificates
(provision/components.py), so `save` dials it with the latter; the snapshot
holds every Secret (sealed, if encryption at rest is on) and the bootstrap
tokens, so the file is the owner's only (0600) from its first byte. `restore` turns a snapshot into a fresh
data directory for a new etcd member (with etcdctl, the one tool that
rewrites etcd's on-disk format); start etcd on that directory and every object
is back with its uid and resourceVersion. docs/disaster-recovery.md is the runbook.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from controlplane.apiserver.storage import EtcdClientTLS, etcd_client


async def save(etcd_url: str, path: Path, tls: EtcdClientTLS | None = None) -> tuple[int, str]:
    """Write a snapshot of the etcd at `etcd_url` to `path` (mode 0600): (bytes, sha256).

    `tls` (the etcd CA and a client certificate it signed) is needed for an https URL."""
    partial = path.with_name(path.name + ".part")
    # A CLI's one job: blocking file writes between stream chunks cost nothing here.
    async with etcd_client(etcd_url, tls, timeout=600) as etcd:
        partial.unlink(missing_ok=True)  # a stale .part may carry another mode: start from a new file
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            await etcd.snapshot(out)
    return _finish(partial, path, etcd_url)


def _finish(partial: Path, path: Path, etcd_url: str) -> tuple[int, str]:
    size = partial.stat().st_size
    if size == 0:
        partial.unlink()
        raise RuntimeError(f"etcd at {etcd_url} returned an empty snapshot")
    partial.replace(path)  # never leave a truncated file under the real name
    return size, hashlib.sha256(path.read_bytes()).hexdigest()


def restore(snapshot: Path, data_dir: Path, *, name: str = "flotilla",
            peer_url: str = "https://127.0.0.1:2380", initial_cluster: str = "") -> None:
    """Make `data_dir` an etcd data directory holding the snapshot's state.

    `name` and `peer_url` must be the ones the restored etcd will run with
    (provision/processes.py uses name "flotilla" and its peer port). A cluster of several members is
    restored member by member from the same snapshot, each with its own `name` and `peer_url` and the
    same `initial_cluster` ("name=peer-url,..." naming them all), as `etcdctl snapshot restore` does.
    """
    if not snapshot.is_file():
        raise FileNotFoundError(f"snapshot {snapshot} does not exist")
    if data_dir.exists() and any(data_dir.iterdir()):
        raise FileExistsError(f"{data_dir} is not empty: restore into a new directory (or move the old one away)")
    etcdctl = shutil.which("etcdctl")
    if etcdctl is None:
        raise RuntimeError("etcdctl is not installed: apt-get install etcd-client")
    if data_dir.exists():
        data_dir.rmdir()
    result = subprocess.run(
        [etcdctl, "snapshot", "restore", str(snapshot), "--data-dir", str(data_dir), "--name", name,
         "--initial-cluster", initial_cluster or f"{name}={peer_url}", "--initial-advertise-peer-urls", peer_url],
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"etcdctl snapshot restore failed: {result.stderr.strip() or result.stdout.strip()}")
