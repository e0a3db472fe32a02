"""Storage object in-use protection: a claim or volume in use outlives its deletion until it is not.

Every claim is created with the `kubernetes.io/pvc-protection` finalizer and
every volume with `kubernetes.io/pv-protection` (strategies/storage.py), so a
delete only marks them terminating. These two controllers (Kubernetes'
pkg/controller/volume/{pvcprotection,pvprotection}) take the finalizer off:

- a claim's, once no pod that could still run uses it (a pod that names the
  claim in a volume and is not Succeeded or Failed). Pods are read from the
  cache, then from the apiserver before letting go, since a pod created a
  moment ago may not be cached yet. A pod's deletion re-checks its claims.
- a volume's, once it is not Bound to a claim.
"""

from __future__ import annotations

import logging

from client import Client, InformerFactory, key_of
from client.controller import Controller
from client.retry import update_fresh
from proto import core_pb2
from proto.errors import NotFound
from proto.wellknown import FINALIZER_PV_PROTECTION, FINALIZER_PVC_PROTECTION

log = logging.getLogger(__name__)

CLAIMS_INDEX = "claims"  # pods by the claims their volumes name: "<namespace>/<claim>"
TERMINAL = ("Succeeded", "Failed")


def claims_of(pod: core_pb2.Pod) -> list[str]:
    return [f"{pod.metadata.namespace}/{v.persistent_volume_claim.claim_name}"
            for v in pod.spec.volumes if v.HasField("persistent_volume_claim")]


def uses(pod: core_pb2.Pod, claim: str) -> bool:
    return pod.status.phase not in TERMINAL and claim in claims_of(pod)


async def _remove_finalizer(client: Client, cls: type[core_pb2.PersistentVolume | core_pb2.PersistentVolumeClaim],
                            name: str, namespace: str, finalizer: str) -> bool:
    def change(obj: core_pb2.PersistentVolume | core_pb2.PersistentVolumeClaim) -> bool:
        if finalizer not in obj.metadata.finalizers:
            return False
        obj.metadata.finalizers.remove(finalizer)
        return True

    try:
        return await update_fresh(client, cls, name, namespace, change) is not None
    except NotFound:
        return False


class PVCProtectionController(Controller):
    name = "pvc-protection"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 2) -> None:
        super().__init__(client, factory, workers=workers)
        self.claims = factory.informer(core_pb2.PersistentVolumeClaim)
        self.pods = factory.informer(core_pb2.Pod)
        self.pods.store.add_index(CLAIMS_INDEX, claims_of)
        self.informers = [self.claims, self.pods]
        self.claims.add_handler(self._claim_changed, lambda _o, n: self._claim_changed(n))
        self.pods.add_handler(on_update=lambda _o, n: self._pod_changed(n), on_delete=self._pod_changed)

    def _claim_changed(self, pvc: core_pb2.PersistentVolumeClaim) -> None:
        if pvc.metadata.HasField("deletion_timestamp") and FINALIZER_PVC_PROTECTION in pvc.metadata.finalizers:
            self.queue.add(key_of(pvc))

    def _pod_changed(self, pod: core_pb2.Pod) -> None:
        # A pod gone or finished may have been the last user of a terminating claim.
        for claim in claims_of(pod):
            self.queue.add(claim)

    async def sync(self, key: str) -> None:
        pvc = self.claims.store.get(key)
        if pvc is None or not pvc.metadata.HasField("deletion_timestamp") or \
                FINALIZER_PVC_PROTECTION not in pvc.metadata.finalizers:
            return
        if any(uses(pod, key) for pod in self.pods.store.list_by_index(CLAIMS_INDEX, key)):
            return  # still used: a pod's deletion or completion queues the claim again
        live = await self.client.list(core_pb2.Pod, pvc.metadata.namespace)
        if any(uses(pod, key) for pod in live.items):
            return
        if await _remove_finalizer(self.client, core_pb2.PersistentVolumeClaim, pvc.metadata.name,
                                   pvc.metadata.namespace, FINALIZER_PVC_PROTECTION):
            log.info("claim %s is no longer used by any pod: removed %s", key, FINALIZER_PVC_PROTECTION)


class PVProtectionController(Controller):
    name = "pv-protection"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 1) -> None:
        super().__init__(client, factory, workers=workers)
        self.volumes = factory.informer(core_pb2.PersistentVolume)
        self.informers = [self.volumes]
        self.volumes.add_handler(self._volume_changed, lambda _o, n: self._volume_changed(n))

    def _volume_changed(self, pv: core_pb2.PersistentVolume) -> None:
        if pv.metadata.HasField("deletion_timestamp") and FINALIZER_PV_PROTECTION in pv.metadata.finalizers:
            self.queue.add(pv.metadata.name)

    async def sync(self, key: str) -> None:
        pv = self.volumes.store.get(key)
        if pv is None or not pv.metadata.HasField("deletion_timestamp") or \
                FINALIZER_PV_PROTECTION not in pv.metadata.finalizers or pv.status.phase == "Bound":
            return
        if await _remove_finalizer(self.client, core_pb2.PersistentVolume, key, "", FINALIZER_PV_PROTECTION):
            log.info("volume %s is not bound: removed %s", key, FINALIZER_PV_PROTECTION)
