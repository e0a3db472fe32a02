"""VolumeBinding: a pod goes where its volumes are, or where they can be made.

kube-scheduler's VolumeBinding plugin, for the claims a pod names:

- PreFilter: every claim must exist (`persistentvolumeclaim "data" not found`)
  and not be terminating; a claim not bound yet must bind WaitForFirstConsumer
  (its class says so), else the pod waits for the PV controller with
  `pod has unbound immediate PersistentVolumeClaims`. Both are
  UnschedulableAndUnresolvable: no other pod's eviction would help. The
  FailedScheduling event names the reason.
- Filter: a node fits if the volume of each bound claim may be used there
  (its node affinity: a local volume lives on one node) and each
  WaitForFirstConsumer claim can be satisfied there — by an Available volume
  reachable from the node, or by the class's provisioner.
- PreBind (run as the first Bind plugin, which then passes the pod on to
  DefaultBinder): each WaitForFirstConsumer claim not yet bound is annotated
  with the chosen node (`volume.kubernetes.io/selected-node`), which tells the
  binder which volumes may do and the provisioner where to make one. The pod is
  bound at once; its kubelet waits (FailedMount) until the claim is bound.

Claims, volumes and classes come from the scheduler's shared informers
(`Handle.factory`); their changes put parked pods back in line, so a pod
waiting for a claim is scheduled as soon as the claim appears.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from client import Client
from client.informer import Informer
from client.retry import update_fresh
from controlplane.controllers.persistentvolume import NO_PROVISIONER, best_match, binding_mode, node_fits
from controlplane.scheduler.framework import SUCCESS, Code, CycleState, FilterResult, Handle, Status
from controlplane.scheduler.nodeinfo import NodeTable, PodInfo
from proto import core_pb2, storage_pb2
from proto.errors import ApiError, NotFound
from proto.wellknown import ANNOTATION_SELECTED_NODE

NAME = "VolumeBinding"
ERR_UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
ERR_NODE_CONFLICT = "node(s) had volume node affinity conflict"
ERR_BIND_CONFLICT = "node(s) didn't find available persistent volumes to bind"
ERR_PV_NOT_EXIST = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
_STATE = NAME


class _Claims:
    """What PreFilter learnt of the pod's claims, for Filter and PreBind."""

    def __init__(self) -> None:
        self.bound: list[core_pb2.PersistentVolume] = []  # volumes of bound claims
        self.missing_volume = False  # a claim is bound to a volume that does not exist
        self.delayed: list[core_pb2.PersistentVolumeClaim] = []  # unbound WaitForFirstConsumer claims


class VolumeBinding:
    name = NAME

    def __init__(self, args: dict[str, Any], handle: Handle) -> None:
        self.client: Client | None = handle.client
        self.pods: Informer[core_pb2.Pod] | None = None
        if handle.factory is None:
            return  # a framework built without informers (unit tests): pods with claims cannot be placed
        factory = handle.factory
        self.pods = factory.informer(core_pb2.Pod)
        self.claims = factory.informer(core_pb2.PersistentVolumeClaim)
        self.volumes = factory.informer(core_pb2.PersistentVolume)
        self.classes = factory.informer(storage_pb2.StorageClass)
        if handle.requeue is not None:
            requeue = handle.requeue
            for informer in (self.claims, self.volumes, self.classes):
                informer.add_handler(lambda _obj: requeue(), lambda _old, _new: requeue())

    @staticmethod
    def claim_names(pod: core_pb2.Pod) -> list[str]:
        return [v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.HasField("persistent_volume_claim")]

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: NodeTable) -> Status:
        spec = self.pods.store.get(pod.key) if self.pods is not None else None
        names = self.claim_names(spec) if spec is not None else []
        if not names:
            return Status(Code.SKIP)
        claims = _Claims()
        for name in names:
            pvc = self.claims.store.get(f"{pod.namespace}/{name}")
            if pvc is None:
                return Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, (f'persistentvolumeclaim "{name}" not found',),
                              NAME)
            if pvc.metadata.HasField("deletion_timestamp"):
                return Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE,
                              (f'persistentvolumeclaim "{name}" is being deleted',), NAME)
            if pvc.spec.volume_name:
                pv = self.volumes.store.get(pvc.spec.volume_name)
                if pv is None:
                    claims.missing_volume = True
                else:
                    claims.bound.append(pv)
                continue
            sc = self.classes.store.get(pvc.spec.storage_class_name) if pvc.spec.storage_class_name else None
            if binding_mode(sc) != "WaitForFirstConsumer":
                return Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, (ERR_UNBOUND_IMMEDIATE,), NAME)
            claims.delayed.append(pvc)
        state[_STATE] = claims
        return SUCCESS

    def filter(self, state: CycleState, pod: PodInfo, nodes: NodeTable) -> FilterResult:
        claims: _Claims = state[_STATE]
        n = len(nodes)
        if claims.missing_volume:
            return FilterResult(np.ones(n, dtype=np.int64), (ERR_PV_NOT_EXIST,))
        unfit = np.zeros(n, dtype=np.int64)
        volumes = self.volumes.store.list() if claims.delayed else []
        for i, info in enumerate(nodes.infos):
            if not all(node_fits(pv, info.name, info.labels) for pv in claims.bound):
                unfit[i] |= 1
            for pvc in claims.delayed:
                if best_match(volumes, pvc, (info.name, info.labels)) is None and not self._provisionable(pvc):
                    unfit[i] |= 2
                    break
        return FilterResult(unfit, (ERR_NODE_CONFLICT, ERR_BIND_CONFLICT))

    def _provisionable(self, pvc: core_pb2.PersistentVolumeClaim) -> bool:
        sc = self.classes.store.get(pvc.spec.storage_class_name)
        return sc is not None and bool(sc.provisioner) and sc.provisioner != NO_PROVISIONER

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status:
        """PreBind: name the chosen node on each WaitForFirstConsumer claim; then DefaultBinder binds the pod."""
        claims: _Claims | None = state.get(_STATE)
        if claims is None or not claims.delayed or self.client is None:
            return Status(Code.SKIP)
        for pvc in claims.delayed:
            def select(c: core_pb2.PersistentVolumeClaim) -> bool:
                if c.spec.volume_name or c.metadata.annotations.get(ANNOTATION_SELECTED_NODE) == node_name:
                    return False
                c.metadata.annotations[ANNOTATION_SELECTED_NODE] = node_name
                return True

            try:
                await update_fresh(self.client, core_pb2.PersistentVolumeClaim, pvc.metadata.name,
                                   pvc.metadata.namespace, select)
            except NotFound:
                return Status(Code.ERROR, (f'persistentvolumeclaim "{pvc.metadata.name}" not found',), NAME)
            except ApiError as err:
                return Status(Code.ERROR, (str(err),), NAME)
        return Status(Code.SKIP)
