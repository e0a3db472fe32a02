"""The PersistentVolume binder: claims meet volumes (Kubernetes' pkg/controller/volume/persistentvolume).

A claim and a volume are bound when each names the other: the volume's
`spec.claimRef` (namespace, name and uid of the claim) and the claim's
`spec.volumeName`. The binder writes the volume first, so a crash in between
leaves a volume reserved for its claim, which the next sync completes; then
both statuses say Bound (the claim's with the volume's capacity and access
modes).

For an unbound claim the binder picks, among Available volumes of the claim's
class (and its volume mode), those with every access mode the claim asks for,
at least its size and labels its selector matches, the smallest (ties: by
name). A volume pre-bound by its claimRef (to this claim) or a claim pre-bound
by volumeName is honoured. A claim whose class binds WaitForFirstConsumer is
left alone until the scheduler has chosen a node for its first pod
(`volume.kubernetes.io/selected-node`); then only volumes reachable from that
node will do, and with none the class's provisioner makes one
(controllers/localpath.py for flotilla.dev/local-path).

A volume whose claim is gone is Released. Its reclaim policy decides what
follows: Retain keeps it (and its data) Released until an administrator acts;
Delete deletes the volume object — for a local-path volume the kubelet of its
node then removes the directory (nodeagent/kubelet/volumes/localpath.py); a
volume no provisioner made cannot be deleted here and goes Failed, as in
Kubernetes. A bound claim whose volume disappeared is Lost.

Keys are `claim:<namespace>/<name>` and `volume:<name>`, so one queue serves both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Iterable
from decimal import Decimal
from typing import TypeVar

from google.protobuf.message import Message

from client import Client, InformerFactory, key_of
from client.controller import Controller, copy
from client.events import NORMAL, WARNING, EventRecorder
from client.retry import update_fresh
from controlplane.apiserver.validation.storage import capacity_of, storage_request
from proto import core_pb2, meta_pb2, selectors, storage_pb2
from proto.errors import ApiError, Conflict, NotFound
from proto.wellknown import (
    ANNOTATION_BIND_COMPLETED,
    ANNOTATION_BOUND_BY_CONTROLLER,
    ANNOTATION_PROVISIONED_BY,
    ANNOTATION_SELECTED_NODE,
    ANNOTATION_STORAGE_PROVISIONER,
    LOCAL_PATH_PROVISIONER,
    NFS_PROVISIONER,
)

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)

CLAIM, VOLUME = "claim:", "volume:"
NO_PROVISIONER = "kubernetes.io/no-provisioner"
# Provisioners whose volumes this cluster can delete.
DELETERS = frozenset({LOCAL_PATH_PROVISIONER, NFS_PROVISIONER})


def binding_mode(sc: storage_pb2.StorageClass | None) -> str:
    return sc.volume_binding_mode if sc is not None and sc.volume_binding_mode else "Immediate"


def node_fits(pv: core_pb2.PersistentVolume, node_name: str, labels: dict[str, str]) -> bool:
    """Whether the volume's node affinity admits the node (any volume without affinity does)."""
    if not pv.spec.HasField("node_affinity"):
        return True
    return any(_term_matches(term, node_name, labels)
               for term in pv.spec.node_affinity.required.node_selector_terms)


def _term_matches(term: core_pb2.NodeSelectorTerm, name: str, labels: dict[str, str]) -> bool:
    if not term.match_expressions and not term.match_fields:
        return False  # an empty term selects no node
    for field in term.match_fields:
        if field.key == "metadata.name" and (name in field.values) != (field.operator == "In"):
            return False
    # A NodeSelectorRequirement has a LabelSelectorRequirement's shape (plus Gt/Lt, which the matcher knows).
    selector = meta_pb2.LabelSelector(match_expressions=[
        meta_pb2.LabelSelectorRequirement(key=r.key, operator=r.operator, values=list(r.values))
        for r in term.match_expressions])
    return selectors.from_message(selector).matches(labels)


def claim_ref_matches(pv: core_pb2.PersistentVolume, pvc: core_pb2.PersistentVolumeClaim) -> bool:
    ref = pv.spec.claim_ref
    return (ref.namespace, ref.name) == (pvc.metadata.namespace, pvc.metadata.name) and ref.uid in (
        "", pvc.metadata.uid)


def matches(pv: core_pb2.PersistentVolume, pvc: core_pb2.PersistentVolumeClaim) -> bool:
    """Whether the volume satisfies the claim: class, mode, access modes, size and selector."""
    spec = pvc.spec
    if pv.metadata.HasField("deletion_timestamp") or pv.status.phase in ("Released", "Failed"):
        return False
    if pv.spec.storage_class_name != spec.storage_class_name:
        return False
    if (pv.spec.volume_mode or "Filesystem") != (spec.volume_mode or "Filesystem"):
        return False
    if not set(spec.access_modes) <= set(pv.spec.access_modes):
        return False
    requested, capacity = storage_request(pvc), capacity_of(pv)
    if requested is None or capacity is None or capacity < requested:
        return False
    if spec.HasField("selector") and not selectors.from_message(spec.selector).matches(dict(pv.metadata.labels)):
        return False
    return not pv.spec.HasField("claim_ref") or claim_ref_matches(pv, pvc)


def best_match(volumes: Iterable[core_pb2.PersistentVolume], pvc: core_pb2.PersistentVolumeClaim,
               node: tuple[str, dict[str, str]] | None = None) -> core_pb2.PersistentVolume | None:
    """The volume to bind: one pre-bound to the claim if any fits, else the smallest fit (then by name).

    `node` (name, labels) limits the choice to volumes reachable from that node.
    """
    fits = [pv for pv in volumes if matches(pv, pvc) and (node is None or node_fits(pv, *node))]
    prebound = [pv for pv in fits if pv.spec.HasField("claim_ref")]
    candidates = prebound or fits
    if not candidates:
        return None
    return min(candidates, key=lambda pv: (capacity_of(pv) or Decimal(0), pv.metadata.name))


class PersistentVolumeController(Controller):
    name = "persistentvolume-binder"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 workers: int = 2) -> None:
        super().__init__(client, factory, workers=workers)
        self.recorder = recorder
        self.volumes = factory.informer(core_pb2.PersistentVolume)
        self.claims = factory.informer(core_pb2.PersistentVolumeClaim)
        self.classes = factory.informer(storage_pb2.StorageClass)
        self.nodes = factory.informer(core_pb2.Node)
        self.informers = [self.volumes, self.claims, self.classes, self.nodes]
        self.volumes.add_handler(self._volume_changed, lambda _o, n: self._volume_changed(n), self._volume_changed)
        self.claims.add_handler(self._claim_changed, lambda _o, n: self._claim_changed(n), self._claim_changed)

    def _volume_changed(self, pv: core_pb2.PersistentVolume) -> None:
        self.queue.add(VOLUME + pv.metadata.name)
        if pv.spec.HasField("claim_ref"):
            self.queue.add(f"{CLAIM}{pv.spec.claim_ref.namespace}/{pv.spec.claim_ref.name}")
        else:
            # A volume became free: the claims still waiting may fit it now.
            for pvc in self.claims.store.list():
                if not pvc.spec.volume_name:
                    self.queue.add(CLAIM + key_of(pvc))

    def _claim_changed(self, pvc: core_pb2.PersistentVolumeClaim) -> None:
        self.queue.add(CLAIM + key_of(pvc))
        if pvc.spec.volume_name:
            self.queue.add(VOLUME + pvc.spec.volume_name)
        for pv in self.volumes.store.list():
            if pv.spec.HasField("claim_ref") and (pv.spec.claim_ref.namespace, pv.spec.claim_ref.name) == (
                    pvc.metadata.namespace, pvc.metadata.name):
                self.queue.add(VOLUME + pv.metadata.name)

    def resync(self) -> None:
        for pv in self.volumes.store.list():
            self.queue.add(VOLUME + pv.metadata.name)
        for pvc in self.claims.store.list():
            self.queue.add(CLAIM + key_of(pvc))

    async def sync(self, key: str) -> None:
        if key.startswith(CLAIM):
            pvc = self.claims.store.get(key.removeprefix(CLAIM))
            if pvc is not None and not pvc.metadata.HasField("deletion_timestamp"):
                await self.sync_claim(pvc)
        else:
            pv = self.volumes.store.get(key.removeprefix(VOLUME))
            if pv is not None:
                await self.sync_volume(pv)

    # ---------------------------------------------------------------- claims

    async def sync_claim(self, pvc: core_pb2.PersistentVolumeClaim) -> None:
        if pvc.spec.volume_name:
            await self._sync_bound_claim(pvc)
            return
        sc = self.classes.store.get(pvc.spec.storage_class_name) if pvc.spec.storage_class_name else None
        node: tuple[str, dict[str, str]] | None = None
        if binding_mode(sc) == "WaitForFirstConsumer":
            selected = pvc.metadata.annotations.get(ANNOTATION_SELECTED_NODE)
            if not selected:
                self.recorder.event(pvc, NORMAL, "WaitForFirstConsumer",
                                 "waiting for first consumer to be created before binding")
                return
            found = self.nodes.store.get(selected)
            node = (selected, dict(found.metadata.labels) if found is not None else {})
        pv = best_match(self.volumes.store.list(), pvc, node)
        if pv is not None:
            await self.bind(pv, pvc)
            return
        if sc is not None and sc.provisioner and sc.provisioner != NO_PROVISIONER:
            # The provisioner's turn: say who is expected to make the volume (kubectl describe shows it).
            if pvc.metadata.annotations.get(ANNOTATION_STORAGE_PROVISIONER) != sc.provisioner:
                def annotate(c: core_pb2.PersistentVolumeClaim) -> None:
                    c.metadata.annotations[ANNOTATION_STORAGE_PROVISIONER] = sc.provisioner

                try:
                    await update_fresh(self.client, core_pb2.PersistentVolumeClaim, pvc.metadata.name,
                                       pvc.metadata.namespace, annotate)
                except NotFound:
                    return
            if sc.provisioner != LOCAL_PATH_PROVISIONER:
                self.recorder.event(pvc, NORMAL, "ExternalProvisioning",
                                 f"Waiting for a volume to be created either by the external provisioner "
                                 f"'{sc.provisioner}' or manually by the system administrator. If volume creation "
                                 "is delayed, please verify that the provisioner is running and correctly "
                                 "registered.")
            return
        why = ("no persistent volumes available for this claim and no storage class is set"
               if not pvc.spec.storage_class_name else
               f'storageclass.storage.k8s.io "{pvc.spec.storage_class_name}" not found' if sc is None else
               "no persistent volumes available for this claim")
        self.recorder.event(pvc, NORMAL, "FailedBinding", why)

    async def _sync_bound_claim(self, pvc: core_pb2.PersistentVolumeClaim) -> None:
        pv = self.volumes.store.get(pvc.spec.volume_name)
        if pv is None:
            if pvc.status.phase == "Bound":
                await self._claim_phase(pvc, "Lost")
                self.recorder.event(pvc, WARNING, "ClaimLost",
                                    "Bound claim has lost its PersistentVolume. Data on the volume is lost!")
            return  # pre-bound to a volume that does not exist yet: wait for it
        if not pv.spec.HasField("claim_ref"):
            await self.bind(pv, pvc)  # the user named the volume: complete the binding from its side
        elif claim_ref_matches(pv, pvc):
            await self.bind(pv, pvc)  # idempotent: finishes whatever a crash left half done
        else:
            self.recorder.event(pvc, WARNING, "FailedBinding",
                             f'volume "{pv.metadata.name}" already bound to a different claim.')

    async def bind(self, pv: core_pb2.PersistentVolume, pvc: core_pb2.PersistentVolumeClaim) -> None:
        """Volume first (claimRef, phase Bound), then the claim (volumeName, phase Bound with capacity)."""
        ref = pv.spec.claim_ref
        if (ref.name, ref.namespace, ref.uid) != (pvc.metadata.name, pvc.metadata.namespace, pvc.metadata.uid):
            updated = copy(pv)
            updated.spec.claim_ref.CopyFrom(meta_pb2.ObjectReference(
                kind="PersistentVolumeClaim", namespace=pvc.metadata.namespace, name=pvc.metadata.name,
                uid=pvc.metadata.uid, api_version="v1", resource_version=pvc.metadata.resource_version))
            if not pv.spec.HasField("claim_ref"):
                updated.metadata.annotations[ANNOTATION_BOUND_BY_CONTROLLER] = "yes"
            written = await self._write(self.client.update(updated))
            if written is None:
                return
            pv = written
        if pv.status.phase != "Bound":
            written = await self._volume_phase(pv, "Bound")
            if written is None:
                return
            pv = written
        if pvc.spec.volume_name != pv.metadata.name or pvc.metadata.annotations.get(
                ANNOTATION_BIND_COMPLETED) != "yes":
            claim = copy(pvc)
            if claim.spec.volume_name != pv.metadata.name:
                claim.spec.volume_name = pv.metadata.name
                claim.metadata.annotations[ANNOTATION_BOUND_BY_CONTROLLER] = "yes"
            claim.metadata.annotations[ANNOTATION_BIND_COMPLETED] = "yes"
            stored = await self._write(self.client.update(claim))
            if stored is None:
                return
            pvc = stored
        if (pvc.status.phase, list(pvc.status.access_modes), dict(pvc.status.capacity)) != (
                "Bound", list(pv.spec.access_modes), dict(pv.spec.capacity)):
            claim = copy(pvc)
            claim.status.phase = "Bound"
            claim.status.access_modes[:] = pv.spec.access_modes
            claim.status.capacity.clear()
            claim.status.capacity.update(pv.spec.capacity)
            if await self._write(self.client.update_status(claim)) is not None:
                log.info("bound claim %s to volume %s", key_of(pvc), pv.metadata.name)

    # ---------------------------------------------------------------- volumes

    async def sync_volume(self, pv: core_pb2.PersistentVolume) -> None:
        if pv.metadata.HasField("deletion_timestamp"):
            return
        if not pv.spec.HasField("claim_ref"):
            if pv.status.phase not in ("Available", "Failed"):
                await self._volume_phase(pv, "Available")
            return
        ref = pv.spec.claim_ref
        pvc = self.claims.store.get(f"{ref.namespace}/{ref.name}")
        if pvc is None and ref.uid:
            try:  # the cache may not have seen a claim created a moment ago
                pvc = await self.client.get(core_pb2.PersistentVolumeClaim, ref.name, ref.namespace)
            except NotFound:
                pvc = None
        if pvc is not None and ref.uid in ("", pvc.metadata.uid):
            if pvc.spec.volume_name == pv.metadata.name:
                if pv.status.phase != "Bound":
                    await self._volume_phase(pv, "Bound")
            elif not pvc.spec.volume_name:
                if pv.status.phase not in ("Available", "Bound"):
                    await self._volume_phase(pv, "Available")  # reserved for the claim, which binds next
                self.queue.add(CLAIM + key_of(pvc))
            elif pv.metadata.annotations.get(ANNOTATION_BOUND_BY_CONTROLLER):
                await self._unbind(pv)  # the claim went elsewhere; we reserved this volume, so free it
            return
        if not ref.uid:
            if pv.status.phase != "Available":
                await self._volume_phase(pv, "Available")  # pre-bound to a claim that does not exist yet
            return
        await self.reclaim(pv)

    async def reclaim(self, pv: core_pb2.PersistentVolume) -> None:
        """The claim is gone: Released, then Retain keeps the volume and Delete deletes it."""
        if pv.status.phase not in ("Released", "Failed"):
            released = await self._volume_phase(pv, "Released")
            if released is None:
                return
            pv = released
        if pv.spec.persistent_volume_reclaim_policy != "Delete" or pv.status.phase == "Failed":
            return
        provisioner = pv.metadata.annotations.get(ANNOTATION_PROVISIONED_BY, "")
        if provisioner not in DELETERS:
            await self._volume_phase(pv, "Failed", reason="VolumeFailedDelete",
                                     message="error getting deleter volume plugin for volume "
                                             f'"{pv.metadata.name}": no deletable volume plugin matched')
            self.recorder.event(pv, WARNING, "VolumeFailedDelete", "no deletable volume plugin matched")
            return
        try:
            await self.client.delete(core_pb2.PersistentVolume, pv.metadata.name, uid=pv.metadata.uid)
        except (NotFound, Conflict):
            return
        log.info("deleted released volume %s (reclaim policy Delete)", pv.metadata.name)

    async def _unbind(self, pv: core_pb2.PersistentVolume) -> None:
        updated = copy(pv)
        updated.spec.ClearField("claim_ref")
        updated.metadata.annotations.pop(ANNOTATION_BOUND_BY_CONTROLLER, None)
        written = await self._write(self.client.update(updated))
        if written is not None:
            await self._volume_phase(written, "Available")

    # ---------------------------------------------------------------- writes

    async def _volume_phase(self, pv: core_pb2.PersistentVolume, phase: str, *, reason: str = "",
                            message: str = "") -> core_pb2.PersistentVolume | None:
        updated = copy(pv)
        updated.status.phase, updated.status.reason, updated.status.message = phase, reason, message
        updated.status.last_phase_transition_time.FromNanoseconds(time.time_ns() // 1_000_000_000 * 1_000_000_000)
        return await self._write(self.client.update_status(updated))

    async def _claim_phase(self, pvc: core_pb2.PersistentVolumeClaim, phase: str) -> None:
        updated = copy(pvc)
        updated.status.phase = phase
        await self._write(self.client.update_status(updated))

    async def _write(self, write: Awaitable[M]) -> M | None:
        """Await a write; a Conflict or NotFound means the cache was behind: the next event syncs again."""
        try:
            return await write
        except (Conflict, NotFound):
            return None
        except ApiError as err:
            log.warning("persistentvolume-binder: write failed: %s", err)
            raise

