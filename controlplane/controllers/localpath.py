"""The local-path provisioner: a claim of a flotilla.dev/local-path class gets a directory on its pod's node.

The built-in dynamic provisioner, in the style of Rancher's local-path
provisioner. Its StorageClass binds WaitForFirstConsumer, so a claim waits
until the scheduler places the first pod that uses it and writes the node on
the claim (`volume.kubernetes.io/selected-node`). Then this controller creates
the volume for it:

- named `pvc-<claim uid>`, of the claim's size and access modes, the class's
  reclaim policy and mount options, annotated
  `pv.kubernetes.io/provisioned-by: flotilla.dev/local-path`;
- a `local` source at `<nodePath>/<volume name>` (the class's `nodePath`
  parameter, by default /var/lib/flotilla/local-path) with node affinity to
  the selected node, so every later pod of the claim goes there;
- its claimRef already naming the claim, so the binder binds the two at once.

Nothing is made on the node here: the kubelet creates the directory when it
first mounts the volume, and removes it once the volume object is deleted
(the binder deletes it when its claim goes and the reclaim policy is Delete).
A class of this provisioner that binds Immediate cannot be served (no node is
known yet), which the claim's events say.
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

from client import Client, InformerFactory, key_of
from client.controller import Controller
from client.events import NORMAL, WARNING, EventRecorder
from proto import core_pb2, meta_pb2, storage_pb2
from proto.errors import AlreadyExists, ApiError
from proto.wellknown import (
    ANNOTATION_PROVISIONED_BY,
    ANNOTATION_SELECTED_NODE,
    LOCAL_PATH_DEFAULT_NODE_PATH,
    LOCAL_PATH_NODE_PATH,
    LOCAL_PATH_PROVISIONER,
)

log = logging.getLogger(__name__)


def volume_name(pvc: core_pb2.PersistentVolumeClaim) -> str:
    return f"pvc-{pvc.metadata.uid}"


def claim_volume(pvc: core_pb2.PersistentVolumeClaim, sc: storage_pb2.StorageClass,
                 provisioner: str) -> core_pb2.PersistentVolume:
    """What every dynamically provisioned volume for `pvc` carries, whatever its source: the claim's size,
    access modes and volume mode, the class's reclaim policy and mount options, who provisioned it, and its
    claimRef already naming the claim (so the binder binds the two at once)."""
    pv = core_pb2.PersistentVolume(api_version="v1", kind="PersistentVolume")
    pv.metadata.name = volume_name(pvc)
    pv.metadata.annotations[ANNOTATION_PROVISIONED_BY] = provisioner
    spec = pv.spec
    spec.capacity["storage"] = pvc.spec.resources.requests["storage"]
    spec.access_modes[:] = pvc.spec.access_modes
    spec.persistent_volume_reclaim_policy = sc.reclaim_policy or "Delete"
    spec.storage_class_name = sc.metadata.name
    spec.mount_options[:] = sc.mount_options
    spec.volume_mode = pvc.spec.volume_mode or "Filesystem"
    spec.claim_ref.CopyFrom(meta_pb2.ObjectReference(
        kind="PersistentVolumeClaim", api_version="v1", namespace=pvc.metadata.namespace, name=pvc.metadata.name,
        uid=pvc.metadata.uid, resource_version=pvc.metadata.resource_version))
    return pv


def provisioned_volume(pvc: core_pb2.PersistentVolumeClaim, sc: storage_pb2.StorageClass,
                       node: str) -> core_pb2.PersistentVolume:
    """The volume for `pvc` on `node`, as this provisioner makes it."""
    pv = claim_volume(pvc, sc, LOCAL_PATH_PROVISIONER)
    root = sc.parameters.get(LOCAL_PATH_NODE_PATH) or LOCAL_PATH_DEFAULT_NODE_PATH
    pv.spec.local.path = str(PurePosixPath(root) / pv.metadata.name)
    term = pv.spec.node_affinity.required.node_selector_terms.add()
    term.match_fields.add(key="metadata.name", operator="In", values=[node])
    return pv


class LocalPathProvisioner(Controller):
    name = "local-path-provisioner"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 workers: int = 2) -> None:
        super().__init__(client, factory, workers=workers)
        self.recorder = recorder
        self.claims = factory.informer(core_pb2.PersistentVolumeClaim)
        self.classes = factory.informer(storage_pb2.StorageClass)
        self.volumes = factory.informer(core_pb2.PersistentVolume)
        self.informers = [self.claims, self.classes, self.volumes]
        self.claims.add_handler(self._claim_changed, lambda _o, n: self._claim_changed(n))

    def _claim_changed(self, pvc: core_pb2.PersistentVolumeClaim) -> None:
        if not pvc.spec.volume_name:
            self.queue.add(key_of(pvc))

    async def sync(self, key: str) -> None:
        pvc = self.claims.store.get(key)
        if pvc is None or pvc.spec.volume_name or pvc.metadata.HasField("deletion_timestamp"):
            return
        sc = self.classes.store.get(pvc.spec.storage_class_name) if pvc.spec.storage_class_name else None
        if sc is None or sc.provisioner != LOCAL_PATH_PROVISIONER:
            return
        if sc.volume_binding_mode != "WaitForFirstConsumer":
            self.recorder.event(pvc, WARNING, "ProvisioningFailed",
                                f"{LOCAL_PATH_PROVISIONER} provisions a volume on its first consumer's node only: "
                                f'StorageClass "{sc.metadata.name}" must have volumeBindingMode WaitForFirstConsumer')
            return
        node = pvc.metadata.annotations.get(ANNOTATION_SELECTED_NODE)
        if not node or self.volumes.store.get(volume_name(pvc)) is not None:
            return  # no consumer scheduled yet, or already provisioned (the binder binds it)
        if "storage" not in pvc.spec.resources.requests:
            return
        self.recorder.event(pvc, NORMAL, "Provisioning",
                            f'External provisioner is provisioning volume for claim "{key}"')
        try:
            await self.client.create(provisioned_volume(pvc, sc, node))
        except AlreadyExists:
            return
        except ApiError as err:
            self.recorder.event(pvc, WARNING, "ProvisioningFailed", f"failed to provision volume: {err}")
            raise
        self.recorder.event(pvc, NORMAL, "ProvisioningSucceeded", f"Successfully provisioned volume {volume_name(pvc)}")
        log.info("provisioned volume %s for claim %s on node %s", volume_name(pvc), key, node)


def default_storage_class() -> storage_pb2.StorageClass:
    """The class `kctl cluster up` installs: `standard`, the default, local-path, WaitForFirstConsumer, Delete."""
    sc = storage_pb2.StorageClass(api_version="storage.k8s.io/v1", kind="StorageClass",
                                  provisioner=LOCAL_PATH_PROVISIONER, reclaim_policy="Delete",
                                  volume_binding_mode="WaitForFirstConsumer")
    sc.metadata.name = "standard"
    sc.metadata.annotations["storageclass.kubernetes.io/is-default-class"] = "true"
    return sc
