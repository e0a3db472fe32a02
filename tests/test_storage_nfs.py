"""The NFS provisioner and the kubelet's nfs mounts, as far as a machine without NFS can show them.

This kernel has no NFS client, so the export is a directory here (the
provisioner's `Share` seam — the real mount is the vagrant/ssh providers', and
their opt-in Vagrant test mounts one claim on two workers): a claim of an
`nfs` class gets a subdirectory of the export and a ReadWriteMany volume
pointing at it, bound at once; deleting the claim deletes the volume, and its
directory goes before the volume object does. The kubelet's mount command is
Kubernetes' nfs plugin's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from client import Client
from controlplane.controllers.nfs import NfsProvisioner, nfs_storage_class
from nodeagent.kubelet.volumes.nfs import mount_argv
from proto import core_pb2, storage_pb2
from proto.errors import NotFound
from proto.wellknown import FINALIZER_PROVISIONER, NFS_PROVISIONER
from tests.controllers_support import eventually
from tests.test_storage_api import pvc
from tests.test_storage_binding import storage_controllers


class DirectoryShare:
    """Exports as directories under `root` (`<root><share>`): what a mount of server:share would show."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[str] = []

    @contextlib.contextmanager
    def mounted(self, server: str, share: str) -> Iterator[Path]:
        self.servers.append(server)
        yield self.root / share.lstrip("/")


@pytest.fixture
async def share(client: Client, tmp_path: Path) -> AsyncIterator[DirectoryShare]:
    exported = DirectoryShare(tmp_path)
    (tmp_path / "srv" / "nfs").mkdir(parents=True)
    async with storage_controllers(client, lambda c, f, r: NfsProvisioner(c, f, r, share=exported)):
        yield exported


async def test_a_claim_gets_a_subdirectory_of_the_export_and_gives_it_back(
        client: Client, namespace: str, share: DirectoryShare) -> None:
    sc_name = f"{namespace}-nfs"
    await client.create(nfs_storage_class("127.0.0.1", "/srv/nfs", name=sc_name))
    try:
        await client.create(pvc("shared", namespace, "1Gi", storageClassName=sc_name,
                                accessModes=["ReadWriteMany"]))

        async def bound() -> core_pb2.PersistentVolumeClaim | None:
            got = await client.get(core_pb2.PersistentVolumeClaim, "shared", namespace)
            return got if got.status.phase == "Bound" else None

        claim = await eventually(bound, "the claim bound to a provisioned volume")
        pv = await client.get(core_pb2.PersistentVolume, claim.spec.volume_name)
        subdir = f"{namespace}-shared-pvc-{claim.metadata.uid}"
        assert (pv.spec.nfs.server, pv.spec.nfs.path) == ("127.0.0.1", f"/srv/nfs/{subdir}")
        assert list(pv.spec.access_modes) == ["ReadWriteMany"]
        assert pv.metadata.annotations["pv.kubernetes.io/provisioned-by"] == NFS_PROVISIONER
        assert FINALIZER_PROVISIONER in pv.metadata.finalizers
        directory = share.root / "srv" / "nfs" / subdir
        assert directory.is_dir() and directory.stat().st_mode & 0o777 == 0o777
        (directory / "data").write_text("kept until the claim goes")

        # Reclaim policy Delete: the claim goes, so do the volume and — first — its directory.
        await client.delete(core_pb2.PersistentVolumeClaim, "shared", namespace)

        async def volume_gone() -> bool:
            try:
                await client.get(core_pb2.PersistentVolume, pv.metadata.name)
            except NotFound:
                return True
            return False

        await eventually(volume_gone, "the volume deleted")
        assert not directory.exists()
        assert set(share.servers) == {"127.0.0.1"}
    finally:
        await client.delete(storage_pb2.StorageClass, sc_name)


async def test_a_class_without_its_share_is_refused_on_the_claim(client: Client, namespace: str,
                                                                 share: DirectoryShare) -> None:
    sc = nfs_storage_class("127.0.0.1", "", name=f"{namespace}-broken")
    del sc.parameters["share"]
    await client.create(sc)
    try:
        await client.create(pvc("orphan", namespace, "1Gi", storageClassName=sc.metadata.name))

        async def said() -> bool:
            events = (await client.list(core_pb2.Event, namespace)).items
            return any(e.reason == "ProvisioningFailed" and "lacks the parameter(s) share" in e.message
                       for e in events)

        await eventually(said, "ProvisioningFailed naming the missing parameter")
        assert (await client.get(core_pb2.PersistentVolumeClaim, "orphan", namespace)).status.phase == "Pending"
    finally:
        await client.delete(storage_pb2.StorageClass, sc.metadata.name)


def test_the_kubelet_mounts_as_kubernetes_nfs_plugin() -> None:
    target = Path("/var/lib/kubelet/pods/u/volumes/nfs/share")
    assert mount_argv("10.0.0.5", "/srv/nfs/a", target, read_only=False, options=[]) == [
        "mount", "-t", "nfs", "10.0.0.5:/srv/nfs/a", str(target)]
    assert mount_argv("fd00::5", "/srv", target, read_only=True, options=["hard", "nfsvers=4.1"]) == [
        "mount", "-t", "nfs", "-o", "hard,nfsvers=4.1,ro", "[fd00::5]:/srv", str(target)]
