"""The DaemonSet controller: one pod of the template on every node that should run it.

For each DaemonSet a sync, as Kubernetes' pkg/controller/daemon:

1. records the template as a ControllerRevision (revisions.py, history.py): the current one
   gets the highest revision number (an existing one is renumbered on rollback),
   and its hash is the `controller-revision-hash` label of the pods it makes;
2. claims its pods (adopts matching orphans, releases pods that stopped
   matching) and groups them by the node they are for — bound pods by nodeName,
   pods still in the scheduler's queue by their node affinity;
3. manages every node (`daemonutil.should_run`): a node that should run the pod
   and has none gets one (so nodes that join later get theirs); a node that
   should not (a label gone, a NoExecute taint not tolerated) loses it; failed
   pods are deleted to be replaced; a node never keeps two;
4. with `updateStrategy: RollingUpdate`, replaces old pods node by node within
   maxUnavailable (or maxSurge); with `OnDelete`, only pods someone deleted come
   back with the new template;
5. deletes old revisions beyond `revisionHistoryLimit` that no pod still runs, and
   writes status (desired, current, ready, up to date, available, misscheduled).

Pods are created through the scheduler (node affinity to their node, see
daemonutil.py), in slow-start batches, with `Expectations` so a sync on a stale
cache never creates a node's pod twice. Node changes that may change the answer
(labels, taints, a new or deleted node) queue every DaemonSet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

from client import Client, InformerFactory, key_of
from client.controller import Controller, copy
from client.events import NORMAL, WARNING, EventRecorder
from controlplane.controllers import daemonutil, history, podutil
from controlplane.controllers.expectations import Expectations, _Expected
from controlplane.controllers.replicaset import slow_start
from controlplane.controllers.revisions import ControllerHistory
from controlplane.scheduler.nodeinfo import PodInfo
from proto import apps_pb2, core_pb2, selectors
from proto.errors import ApiError, Conflict, NamespaceTerminating, NotFound

log = logging.getLogger(__name__)

BURST = 250  # most pods created in one sync (Kubernetes' BurstReplicas)


class _Expectations(Expectations):
    """Expectations of creations and deletions at once: one sync may do both on different nodes."""

    def expect(self, key: str, creations: int, deletions: list[str]) -> None:
        self._by_key[key] = _Expected(adds=creations, deletes=set(deletions))


class DaemonSetController(Controller):
    name = "daemonset"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 workers: int = 2) -> None:
        super().__init__(client, factory, workers=workers)
        self.recorder = recorder
        self.expectations = _Expectations()
        self.daemonsets = factory.informer(apps_pb2.DaemonSet)
        self.revisions = factory.informer(apps_pb2.ControllerRevision)
        self.pods = factory.informer(core_pb2.Pod)
        self.nodes = factory.informer(core_pb2.Node)
        self.informers = [self.daemonsets, self.revisions, self.pods, self.nodes]
        # Revisions we just wrote, until the informer shows them (no second create or renumbering).
        self.history = ControllerHistory(client, self.revisions)  # the revisions' side, shared with StatefulSets
        self.daemonsets.add_handler(on_add=self._enqueue, on_update=lambda _o, n: self._enqueue(n),
                                    on_delete=self._ds_deleted)
        self.revisions.add_handler(on_add=self._revision_changed, on_update=lambda _o, n: self._revision_changed(n),
                                   on_delete=self._revision_deleted)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)
        self.nodes.add_handler(on_add=lambda _n: self._enqueue_all(), on_update=self._node_updated,
                               on_delete=lambda _n: self._enqueue_all())

    # ---------------------------------------------------------------- handlers: only bookkeeping and keys

    def _enqueue(self, ds: apps_pb2.DaemonSet) -> None:
        self.queue.add(key_of(ds))

    def _enqueue_all(self) -> None:
        for key in self.daemonsets.store.list_keys():
            self.queue.add(key)

    def _ds_deleted(self, ds: apps_pb2.DaemonSet) -> None:
        self.expectations.forget(key_of(ds))
        self.queue.add(key_of(ds))

    def _owner_key(self, obj: core_pb2.Pod | apps_pb2.ControllerRevision) -> str | None:
        return podutil.controller_key(obj, "DaemonSet", self.daemonsets.store)

    def _enqueue_matching(self, obj: core_pb2.Pod | apps_pb2.ControllerRevision) -> None:
        """An orphan changed: every DaemonSet that might adopt it takes a look."""
        for key in podutil.selecting_owners(obj, self.daemonsets.store):
            self.queue.add(key)

    def _revision_changed(self, cr: apps_pb2.ControllerRevision) -> None:
        owner = self._owner_key(cr)
        if owner is not None:
            self.queue.add(owner)
        elif podutil.controller_ref(cr) is None:
            self._enqueue_matching(cr)

    def _revision_deleted(self, cr: apps_pb2.ControllerRevision) -> None:
        self.history.written.forget(cr)
        self._revision_changed(cr)

    def _pod_added(self, pod: core_pb2.Pod) -> None:
        owner = self._owner_key(pod)
        if owner is not None:
            self.expectations.creation_observed(owner)
            if pod.metadata.HasField("deletion_timestamp"):
                self.expectations.deletion_observed(owner, key_of(pod))
            self.queue.add(owner)
        elif podutil.controller_ref(pod) is None:
            self._enqueue_matching(pod)

    def _pod_updated(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        if new.metadata.resource_version == old.metadata.resource_version:
            return
        owner = self._owner_key(new)
        if owner is not None:
            if new.metadata.HasField("deletion_timestamp"):
                self.expectations.deletion_observed(owner, key_of(new))
            self.queue.add(owner)
            ds = self.daemonsets.store.get(owner)
            if ds is not None and ds.spec.min_ready_seconds > 0 and podutil.is_ready(new) \
                    and not podutil.is_ready(old):
                # Available only minReadySeconds after it turned ready: look again then.
                self.queue.add_after(owner, ds.spec.min_ready_seconds + 0.5)
        elif podutil.controller_ref(new) is None:
            self._enqueue_matching(new)
        old_owner = self._owner_key(old)
        if old_owner is not None and old_owner != owner:
            self.queue.add(old_owner)

    def _pod_deleted(self, pod: core_pb2.Pod) -> None:
        owner = self._owner_key(pod)
        if owner is not None:
            self.expectations.deletion_observed(owner, key_of(pod))
            self.queue.add(owner)

    def _node_updated(self, old: core_pb2.Node, new: core_pb2.Node) -> None:
        # Heartbeats change the status every few seconds; only what placement reads matters.
        if (old.metadata.labels != new.metadata.labels or list(old.spec.taints) != list(new.spec.taints)
                or old.spec.unschedulable != new.spec.unschedulable):
            self._enqueue_all()

    # ---------------------------------------------------------------- sync

    async def sync(self, key: str) -> None:
        ds = self.daemonsets.store.get(key)
        if ds is None:
            self.expectations.forget(key)
            return
        if ds.metadata.HasField("deletion_timestamp"):
            return  # the garbage collector removes its pods and revisions
        selector = selectors.from_message(ds.spec.selector)
        if selector.empty():
            self.recorder.event(ds, WARNING, "SelectingAll", "This daemon set is selecting all pods. "
                                "A non-empty selector is required.")
            return
        try:
            current, old = await self.history.record(ds, selector)
        except NotFound:
            return  # the DaemonSet went away mid-sync
        template_hash = history.hash_of(current)
        # Expectations before the pod list: pods arriving in between are seen by the next sync.
        satisfied = self.expectations.satisfied(key)
        node_pods = await self._claim_pods(ds, selector)
        nodes = self.nodes.store.list()
        daemon_pod = PodInfo.from_pod(daemonutil.daemon_pod_spec(ds))
        placements = {n.metadata.name: daemonutil.should_run(daemon_pod, n) for n in nodes}
        try:
            if satisfied:
                await self._manage(key, ds, placements, node_pods, template_hash)
                if self.expectations.satisfied(key) and ds.spec.update_strategy.type == "RollingUpdate":
                    wanted = [name for name, p in placements.items() if p.should_run]
                    plan = daemonutil.plan_rolling_update(ds, wanted, node_pods, template_hash)
                    await self._sync_nodes(key, ds, plan.delete, plan.create_on, template_hash)
                await self._cleanup_history(ds, old, node_pods)
        except NamespaceTerminating:
            pass  # the namespace controller is deleting this DaemonSet: nothing more to create
        await self._update_status(key, ds, placements, node_pods, template_hash)

    # ---------------------------------------------------------------- history

    async def _cleanup_history(self, ds: apps_pb2.DaemonSet, old: list[apps_pb2.ControllerRevision],
                               node_pods: dict[str, list[core_pb2.Pod]]) -> None:
        limit = ds.spec.revision_history_limit if ds.spec.HasField("revision_history_limit") else 10
        live = {history.hash_of(p) for pods in node_pods.values() for p in pods}
        for cr in history.to_delete(old, limit, live):
            await self.history.delete(cr)

    # ---------------------------------------------------------------- pods

    async def _claim_pods(self, ds: apps_pb2.DaemonSet,
                          selector: selectors.LabelSelector) -> dict[str, list[core_pb2.Pod]]:
        """The pods this DaemonSet controls, by the node each is for (terminating ones included)."""
        by_node: dict[str, list[core_pb2.Pod]] = {}
        for pod in self.pods.store.list_by_namespace(ds.metadata.namespace):
            ref = podutil.controller_ref(pod)
            matches = selector.matches(pod.metadata.labels)
            if ref is not None and ref.uid == ds.metadata.uid:
                if not matches:
                    await podutil.patch_owner(self.client, pod, release=ds)
                    continue
            elif ref is None and matches and not daemonutil.is_terminating(pod):
                if not await podutil.patch_owner(self.client, pod, adopt=ds):
                    continue
            else:
                continue
            node = daemonutil.target_node(pod)
            if node:
                by_node.setdefault(node, []).append(pod)
        return by_node

    async def _manage(self, key: str, ds: apps_pb2.DaemonSet, placements: dict[str, daemonutil.Placement],
                      node_pods: dict[str, list[core_pb2.Pod]], template_hash: str) -> None:
        """Create the missing daemon pods and delete the ones that must go (manage in Kubernetes)."""
        create_on: list[str] = []
        delete: list[core_pb2.Pod] = []
        for node, placement in placements.items():
            pods = node_pods.get(node, [])
            if placement.should_run and not pods:
                create_on.append(node)
            elif placement.should_continue_running:
                running = []
                for pod in pods:
                    if daemonutil.is_terminating(pod):
                        continue
                    if pod.status.phase == "Failed":
                        self.recorder.event(ds, WARNING, "FailedDaemonPod", f"Found failed daemon pod "
                                            f"{pod.metadata.namespace}/{pod.metadata.name} on node {node}, "
                                            "will try to kill it")
                        delete.append(pod)
                    elif pod.status.phase == "Succeeded":
                        delete.append(pod)
                    else:
                        running.append(pod)
                delete += daemonutil.surplus_on_node(ds, running, template_hash)
            else:
                delete += [p for p in pods if not daemonutil.is_terminating(p)]
        # Pods waiting for a node that is gone: the scheduler could never place them.
        for node, pods in node_pods.items():
            if node not in placements:
                delete += [p for p in pods if not p.spec.node_name and not daemonutil.is_terminating(p)]
        await self._sync_nodes(key, ds, delete, create_on, template_hash)

    async def _sync_nodes(self, key: str, ds: apps_pb2.DaemonSet, delete: list[core_pb2.Pod], create_on: list[str],
                          template_hash: str) -> None:
        if not delete and not create_on:
            return
        create_on = create_on[:BURST]
        self.expectations.expect(key, len(create_on), [key_of(p) for p in delete])
        results = await asyncio.gather(*(self._delete_pod(key, ds, p) for p in delete), return_exceptions=True)
        nodes: Iterator[str] = iter(create_on)
        created, error = await slow_start(len(create_on), lambda: self._create_pod(ds, template_hash, next(nodes)))
        if created < len(create_on):
            # The skipped and failed creates will never be observed: stop waiting for them.
            self.expectations.creation_observed(key, len(create_on) - created)
            if isinstance(error, NamespaceTerminating):
                raise error
            raise ApiError(f"created only {created} of {len(create_on)} daemon pods for {key}: {error}")
        for err in results:
            if isinstance(err, BaseException):
                raise err

    async def _create_pod(self, ds: apps_pb2.DaemonSet, template_hash: str, node: str) -> None:
        pod = daemonutil.new_pod(ds, template_hash, node)
        try:
            created = await self.client.create(pod)
        except NamespaceTerminating:
            raise
        except ApiError as err:
            self.recorder.event(ds, WARNING, "FailedCreate", f"Error creating: {err}")
            raise
        self.recorder.event(ds, NORMAL, "SuccessfulCreate", f"Created pod: {created.metadata.name}")

    async def _delete_pod(self, key: str, ds: apps_pb2.DaemonSet, pod: core_pb2.Pod) -> None:
        try:
            await self.client.delete(core_pb2.Pod, pod.metadata.name, pod.metadata.namespace, uid=pod.metadata.uid)
        except (NotFound, Conflict):
            # Already gone (or replaced by a namesake): no deletion event will come for it.
            self.expectations.deletion_observed(key, key_of(pod))
            return
        self.recorder.event(ds, NORMAL, "SuccessfulDelete", f"Deleted pod: {pod.metadata.name}")

    # ---------------------------------------------------------------- status

    async def _update_status(self, key: str, ds: apps_pb2.DaemonSet, placements: dict[str, daemonutil.Placement],
                             node_pods: dict[str, list[core_pb2.Pod]], template_hash: str) -> None:
        now = time.time()
        status = apps_pb2.DaemonSetStatus(observed_generation=ds.metadata.generation)
        for node, placement in placements.items():
            pods = node_pods.get(node, [])
            if not placement.should_run:
                status.number_misscheduled += 1 if pods else 0
                continue
            status.desired_number_scheduled += 1
            if not pods:
                continue
            status.current_number_scheduled += 1
            pod = daemonutil.by_age(pods)[0]
            if podutil.is_ready(pod):
                status.number_ready += 1
                if podutil.is_available(pod, ds.spec.min_ready_seconds, now):
                    status.number_available += 1
            if daemonutil.is_updated(pod, template_hash):
                status.updated_number_scheduled += 1
        status.number_unavailable = status.desired_number_scheduled - status.number_available
        if ds.status.HasField("collision_count"):
            status.collision_count = ds.status.collision_count
        status.conditions.extend(ds.status.conditions)
        if status != ds.status:
            new = copy(ds)
            new.status.CopyFrom(status)
            try:
                await self.client.update_status(new)
            except NotFound:
                return
        if ds.spec.min_ready_seconds > 0 and status.number_ready != status.number_available:
            self.queue.add_after(key, ds.spec.min_ready_seconds)
