"""The NFS provisioner: a claim of a flotilla.dev/nfs class gets a subdirectory of one NFS export.

The vagrant and ssh providers' shared storage, in the style of the
nfs-subdir-external-provisioner: the StorageClass names an NFS `server` and
the `share` it exports; for each claim of the class this controller

- makes `<share>/<namespace>-<claim>-<volume>` on the export (mode 0777, so
  containers of any user may write), by mounting the export for a moment;
- creates the volume `pvc-<claim uid>`: an `nfs` source at that directory,
  the claim's size and access modes (ReadWriteMany works: every node mounts
  the same export), the class's reclaim policy and mount options, annotated
  `pv.kubernetes.io/provisioned-by: flotilla.dev/nfs`, its claimRef already
  naming the claim so the binder binds the two at once, and the
  `external-provisioner.volume.kubernetes.io/finalizer`;
- once the volume is being deleted (the binder deletes a released volume whose
  reclaim policy is Delete), removes its directory from the export, then the
  finalizer — so the data never outlives the volume object unnoticed, even if
  this controller was down when the deletion came.

Binding is Immediate (any node reaches the export). Each node's kubelet
mounts the directory for the pods that use it (nodeagent/kubelet/volumes/nfs.py).
How the export is reached is a `Share` — by default a real NFS mount in the
controller manager's host; a test on a machine without NFS gives a directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Protocol

from client import Client, InformerFactory, key_of
from client.controller import Controller, copy
from client.events import NORMAL, WARNING, EventRecorder
from controlplane.controllers.localpath import claim_volume, volume_name
from proto import core_pb2, storage_pb2
from proto.errors import AlreadyExists, ApiError, Conflict, NotFound
from proto.wellknown import (
    ANNOTATION_PROVISIONED_BY,
    FINALIZER_PROVISIONER,
    NFS_PROVISIONER,
    NFS_SERVER,
    NFS_SHARE,
)

log = logging.getLogger(__name__)


class Share(Protocol):
    """The export, reachable as a directory for the duration of a `with` block."""

    def mounted(self, server: str, share: str) -> contextlib.AbstractContextManager[Path]: ...


class NfsMount:
    """The export mounted with the host's NFS client into a temporary directory, then unmounted."""

    @contextlib.contextmanager
    def mounted(self, server: str, share: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="flotilla-nfs-") as tmp:
            target = Path(tmp)
            done = subprocess.run(["mount", "-t", "nfs", f"{server}:{share}", str(target)],
                                  capture_output=True, text=True, timeout=60, check=False)
            if done.returncode != 0:
                raise OSError(f"mount {server}:{share}: {(done.stderr or done.stdout).strip()}")
            try:
                yield target
            finally:
                subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=60, check=False)


def directory_name(pvc: core_pb2.PersistentVolumeClaim) -> str:
    return f"{pvc.metadata.namespace}-{pvc.metadata.name}-{volume_name(pvc)}"


def provisioned_volume(pvc: core_pb2.PersistentVolumeClaim, sc: storage_pb2.StorageClass) -> core_pb2.PersistentVolume:
    """The volume for `pvc`, as this provisioner makes it."""
    pv = claim_volume(pvc, sc, NFS_PROVISIONER)
    pv.metadata.finalizers.append(FINALIZER_PROVISIONER)
    pv.spec.nfs.server = sc.parameters[NFS_SERVER]
    pv.spec.nfs.path = str(PurePosixPath(sc.parameters[NFS_SHARE]) / directory_name(pvc))
    return pv


def class_problem(sc: storage_pb2.StorageClass) -> str:
    """Why this provisioner cannot serve the class, or ""."""
    missing = [p for p in (NFS_SERVER, NFS_SHARE) if not sc.parameters.get(p)]
    if missing:
        return f'StorageClass "{sc.metadata.name}" lacks the parameter(s) {", ".join(missing)} {NFS_PROVISIONER} needs'
    if not sc.parameters[NFS_SHARE].startswith("/"):
        return f'StorageClass "{sc.metadata.name}": share must be an absolute path'
    return ""


class NfsProvisioner(Controller):
    name = "nfs-provisioner"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 share: Share | None = None, workers: int = 2) -> None:
        super().__init__(client, factory, workers=workers)
        self.recorder = recorder
        self.share: Share = share or NfsMount()
        self.claims = factory.informer(core_pb2.PersistentVolumeClaim)
        self.classes = factory.informer(storage_pb2.StorageClass)
        self.volumes = factory.informer(core_pb2.PersistentVolume)
        self.informers = [self.claims, self.classes, self.volumes]
        self.claims.add_handler(self._claim_changed, lambda _o, n: self._claim_changed(n))
        self.volumes.add_handler(self._volume_changed, lambda _o, n: self._volume_changed(n))

    def _claim_changed(self, pvc: core_pb2.PersistentVolumeClaim) -> None:
        if not pvc.spec.volume_name:
            self.queue.add("claim:" + key_of(pvc))

    def _volume_changed(self, pv: core_pb2.PersistentVolume) -> None:
        if pv.metadata.HasField("deletion_timestamp") and FINALIZER_PROVISIONER in pv.metadata.finalizers \
                and pv.metadata.annotations.get(ANNOTATION_PROVISIONED_BY) == NFS_PROVISIONER:
            self.queue.add("volume:" + pv.metadata.name)

    async def sync(self, key: str) -> None:
        kind, _, name = key.partition(":")
        if kind == "volume":
            await self._delete(name)
        else:
            await self._provision(name)

    async def _provision(self, key: str) -> None:
        pvc = self.claims.store.get(key)
        if pvc is None or pvc.spec.volume_name or pvc.metadata.HasField("deletion_timestamp"):
            return
        sc = self.classes.store.get(pvc.spec.storage_class_name) if pvc.spec.storage_class_name else None
        if sc is None or sc.provisioner != NFS_PROVISIONER or "storage" not in pvc.spec.resources.requests:
            return
        if self.volumes.store.get(volume_name(pvc)) is not None:
            return  # provisioned already: the binder binds it
        problem = class_problem(sc)
        if problem:
            self.recorder.event(pvc, WARNING, "ProvisioningFailed", problem)
            return
        self.recorder.event(pvc, NORMAL, "Provisioning",
                            f'External provisioner is provisioning volume for claim "{key}"')
        pv = provisioned_volume(pvc, sc)
        try:
            await asyncio.to_thread(self._make_directory, sc, directory_name(pvc))
        except OSError as err:
            self.recorder.event(pvc, WARNING, "ProvisioningFailed", f"failed to provision volume: {err}")
            raise
        try:
            await self.client.create(pv)
        except AlreadyExists:
            return
        except ApiError as err:
            self.recorder.event(pvc, WARNING, "ProvisioningFailed", f"failed to provision volume: {err}")
            raise
        self.recorder.event(pvc, NORMAL, "ProvisioningSucceeded", f"Successfully provisioned volume {pv.metadata.name}")
        log.info("provisioned volume %s for claim %s at %s:%s", pv.metadata.name, key, pv.spec.nfs.server,
                 pv.spec.nfs.path)

    def _make_directory(self, sc: storage_pb2.StorageClass, name: str) -> None:
        with self.share.mounted(sc.parameters[NFS_SERVER], sc.parameters[NFS_SHARE]) as root:
            directory = root / name
            directory.mkdir(exist_ok=True)
            directory.chmod(0o777)

    async def _delete(self, name: str) -> None:
        pv = self.volumes.store.get(name)
        if pv is None or not pv.metadata.HasField("deletion_timestamp") \
                or FINALIZER_PROVISIONER not in pv.metadata.finalizers:
            return
        share = str(PurePosixPath(pv.spec.nfs.path).parent)
        directory = PurePosixPath(pv.spec.nfs.path).name
        try:
            await asyncio.to_thread(self._remove_directory, pv.spec.nfs.server, share, directory)
        except OSError as err:
            self.recorder.event(pv, WARNING, "VolumeFailedDelete", f"failed to delete volume's directory: {err}")
            raise
        updated = copy(pv)
        del updated.metadata.finalizers[:]
        updated.metadata.finalizers.extend(f for f in pv.metadata.finalizers if f != FINALIZER_PROVISIONER)
        with contextlib.suppress(NotFound, Conflict):  # a Conflict brings a newer event, and another sync
            await self.client.update(updated)
        log.info("deleted the directory of volume %s", name)

    def _remove_directory(self, server: str, share: str, name: str) -> None:
        with self.share.mounted(server, share) as root:
            if (root / name).exists():  # gone already: a retry after the removal, before the finalizer's
                shutil.rmtree(root / name)


def nfs_storage_class(server: str, share: str, *, name: str = "nfs") -> storage_pb2.StorageClass:
    """The class the vagrant and ssh providers install beside `standard`: the master's export, ReadWriteMany."""
    sc = storage_pb2.StorageClass(api_version="storage.k8s.io/v1", kind="StorageClass",
                                  provisioner=NFS_PROVISIONER, reclaim_policy="Delete",
                                  volume_binding_mode="Immediate")
    sc.metadata.name = name
    sc.parameters[NFS_SERVER], sc.parameters[NFS_SHARE] = server, share
    return sc
