"""Disaster recovery: snapshot etcd, lose it, restore it, and every object is back."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from click.testing import CliRunner

from client import Client
from kctl.main import cli
from proto import core_pb2, manifest
from provision.processes import start_apiserver, start_etcd


async def _create_objects(address: str) -> dict[str, str]:
    async with Client(address) as client:
        ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = "precious"
        await client.create(ns)
        uids = {}
        for i in range(5):
            pod: core_pb2.Pod = manifest.from_dict({"apiVersion": "v1", "kind": "Pod",
                                      "metadata": {"name": f"p{i}", "namespace": "precious"},
                                      "spec": {"containers": [{"name": "c", "image": "busybox"}]}})  # type: ignore[assignment]
            created = await client.create(pod)
            uids[created.metadata.name] = created.metadata.uid
        return uids


async def _pod_uids(address: str) -> dict[str, str]:
    async with Client(address) as client:
        return {p.metadata.name: p.metadata.uid for p in (await client.list(core_pb2.Pod, "precious")).items}


# Sync on purpose: kctl runs its own event loop, which cannot nest in pytest-asyncio's.
def test_snapshot_wipe_restore_brings_every_object_back(tmp_path: Path) -> None:
    etcd = start_etcd(tmp_path / "etcd-data", log_dir=tmp_path)
    api = start_apiserver(etcd.url, tmp_path)
    try:
        before = asyncio.run(_create_objects(api.address))
        runner = CliRunner()
        snap = tmp_path / "backup.db"
        saved = runner.invoke(cli, ["etcd", "snapshot", "save", str(snap), "--endpoints", etcd.url])
        assert saved.exit_code == 0, saved.output
        assert "Snapshot saved" in saved.output and snap.stat().st_size > 0

        # Disaster: both processes gone, etcd's data directory gone.
        api.process.kill()
        etcd.process.kill()
        shutil.rmtree(tmp_path / "etcd-data")

        restored_dir = tmp_path / "etcd-restored"
        restored = runner.invoke(cli, ["etcd", "snapshot", "restore", str(snap), "--data-dir", str(restored_dir),
                                       "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd.peer_port}"])
        assert restored.exit_code == 0, restored.output
        refused = runner.invoke(cli, ["etcd", "snapshot", "restore", str(snap), "--data-dir", str(restored_dir)])
        assert refused.exit_code == 1 and "not empty" in refused.output

        etcd = start_etcd(restored_dir, client_port=etcd.client_port, peer_port=etcd.peer_port, log_dir=tmp_path)
        api = start_apiserver(etcd.url, tmp_path)
        assert asyncio.run(_pod_uids(api.address)) == before
    finally:
        api.process.stop()
        etcd.process.stop()
