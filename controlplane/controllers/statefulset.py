"""The StatefulSet controller: pods with stable names, hostnames and claims, made and replaced in order.

For each StatefulSet a sync, as Kubernetes' pkg/controller/statefulset:

1. records the template as a ControllerRevision (revisions.py): the *update
   revision*; the *current revision* is the one status names (the template the
   pods ran before the last change), or the update revision on a fresh set;
2. claims its pods (adopting matching orphans, releasing strays) and splits the
   ones named as its members into *replicas* (ordinals in [start, start +
   replicas)) and *condemned* (ordinals beyond, to be removed);
3. walks the replicas in ordinal order: a missing pod is created — its claims
   first (statefulsetutil.new_claims), then the pod of the current revision if
   its ordinal is below a RollingUpdate's partition, else of the update
   revision; a failed pod is deleted to be recreated. With `OrderedReady` the
   walk stops at the first pod it created or that is not yet Running and Ready
   (web-1 is created only once web-0 is Ready); with `Parallel` it goes on;
4. removes the condemned pods from the highest ordinal down (OrderedReady: one
   at a time, each once the previous one is gone), first handing their claims
   to them when `whenScaled: Delete`;
5. with `updateStrategy: RollingUpdate`, once every replica exists, deletes the
   highest-ordinal pod at or above the partition that does not run the update
   revision — one at a time, waiting until the replacement is Ready; with
   `OnDelete`, only pods someone deleted come back with the new template;
6. writes status (replicas, ready, available, current and updated counts and
   revisions; once every pod runs the update revision and is Ready it becomes
   the current one) and deletes revisions beyond revisionHistoryLimit that no
   pod uses.

Pod names are deterministic, so a sync on a stale cache at worst asks for a pod
or claim that exists (AlreadyExists: fine) or deletes one already gone (the
delete carries the uid it saw): no expectations are needed. The controller never
deletes a claim; the garbage collector does, when the retention policy made the
set or a condemned pod its owner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from client import Client, InformerFactory, key_of
from client.controller import Controller, copy
from client.events import NORMAL, WARNING, EventRecorder
from controlplane.controllers import podutil
from controlplane.controllers import statefulsetutil as util
from controlplane.controllers.replicaset import slow_start
from controlplane.controllers.revisions import ControllerHistory
from proto import apps_pb2, core_pb2, selectors
from proto.errors import AlreadyExists, ApiError, Conflict, NamespaceTerminating, NotFound

log = logging.getLogger(__name__)


class _Wait(Exception):
    """OrderedReady must wait for a pod: this sync does nothing more to pods."""


class StatefulSetController(Controller):
    name = "statefulset"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 workers: int = 2) -> None:
        super().__init__(client, factory, workers=workers)
        self.recorder = recorder
        self.sets = factory.informer(apps_pb2.StatefulSet)
        self.pods = factory.informer(core_pb2.Pod)
        self.revisions = factory.informer(apps_pb2.ControllerRevision)
        self.claims = factory.informer(core_pb2.PersistentVolumeClaim)
        self.informers = [self.sets, self.pods, self.revisions, self.claims]
        self.history = ControllerHistory(client, self.revisions)
        self.sets.add_handler(on_add=self._enqueue, on_update=lambda _o, n: self._enqueue(n),
                              on_delete=self._enqueue)
        self.pods.add_handler(on_add=self._pod_changed, on_update=self._pod_updated, on_delete=self._pod_changed)
        self.revisions.add_handler(on_add=self._revision_changed, on_update=lambda _o, n: self._revision_changed(n),
                                   on_delete=self._revision_deleted)

    # ---------------------------------------------------------------- handlers: only keys

    def _enqueue(self, sts: apps_pb2.StatefulSet) -> None:
        self.queue.add(key_of(sts))

    def _owner_key(self, obj: core_pb2.Pod | apps_pb2.ControllerRevision) -> str | None:
        return podutil.controller_key(obj, "StatefulSet", self.sets.store)

    def _enqueue_matching(self, obj: core_pb2.Pod | apps_pb2.ControllerRevision) -> None:
        """An orphan changed: every StatefulSet that might adopt it takes a look."""
        for key in podutil.selecting_owners(obj, self.sets.store):
            self.queue.add(key)

    def _pod_changed(self, pod: core_pb2.Pod) -> None:
        owner = self._owner_key(pod)
        if owner is not None:
            self.queue.add(owner)
        elif podutil.controller_ref(pod) is None:
            self._enqueue_matching(pod)

    def _pod_updated(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        if new.metadata.resource_version == old.metadata.resource_version:
            return
        self._pod_changed(new)
        old_owner = self._owner_key(old)
        if old_owner is not None and old_owner != self._owner_key(new):
            self.queue.add(old_owner)
        owner = self._owner_key(new)
        sts = self.sets.store.get(owner) if owner is not None else None
        if owner is not None and sts is not None and sts.spec.min_ready_seconds > 0 \
                and podutil.is_ready(new) and not podutil.is_ready(old):
            # Available only minReadySeconds after it turned ready: look again then.
            self.queue.add_after(owner, sts.spec.min_ready_seconds + 0.5)

    def _revision_changed(self, cr: apps_pb2.ControllerRevision) -> None:
        owner = self._owner_key(cr)
        if owner is not None:
            self.queue.add(owner)
        elif podutil.controller_ref(cr) is None:
            self._enqueue_matching(cr)

    def _revision_deleted(self, cr: apps_pb2.ControllerRevision) -> None:
        self.history.written.forget(cr)
        self._revision_changed(cr)

    # ---------------------------------------------------------------- sync

    async def sync(self, key: str) -> None:
        sts = self.sets.store.get(key)
        if sts is None or sts.metadata.HasField("deletion_timestamp"):
            return  # the garbage collector removes its pods, revisions and owned claims
        selector = selectors.from_message(sts.spec.selector)
        if selector.empty():
            self.recorder.event(sts, WARNING, "SelectingAll", "This statefulset is selecting all pods. "
                                "A non-empty selector is required.")
            return
        try:
            update, others = await self.history.record(sts, selector)
        except NotFound:
            return  # the StatefulSet went away mid-sync
        current = next((cr for cr in others if cr.metadata.name == sts.status.current_revision), update)
        pods = await self._claim_pods(sts, selector)
        try:
            await self._update_pods(sts, current, update, pods)
        except _Wait:
            pass
        except NamespaceTerminating:
            pass  # the namespace controller is deleting this set: nothing more to create
        await self._update_status(key, sts, current, update, pods)
        limit = sts.spec.revision_history_limit if sts.spec.HasField("revision_history_limit") else 10
        live = {current.metadata.name, update.metadata.name, *(util.revision_of(p) for p in pods)}
        await self.history.truncate(others, limit, live)

    async def _claim_pods(self, sts: apps_pb2.StatefulSet, selector: selectors.LabelSelector) -> list[core_pb2.Pod]:
        """The pods this set controls after adopting matching orphans and releasing strays."""
        owned: list[core_pb2.Pod] = []
        for pod in self.pods.store.list_by_namespace(sts.metadata.namespace):
            ref = podutil.controller_ref(pod)
            matches = selector.matches(pod.metadata.labels)
            if ref is not None and ref.uid == sts.metadata.uid:
                if matches:
                    owned.append(pod)
                else:
                    await podutil.patch_owner(self.client, pod, release=sts)
            elif ref is None and matches and not util.is_terminating(pod):
                if await podutil.patch_owner(self.client, pod, adopt=sts):
                    owned.append(pod)
        return owned

    # ---------------------------------------------------------------- pods, in order

    async def _update_pods(self, sts: apps_pb2.StatefulSet, current: apps_pb2.ControllerRevision,
                           update: apps_pb2.ControllerRevision, pods: list[core_pb2.Pod]) -> None:
        """Steps 3 to 5 of the module docstring; raises _Wait where OrderedReady must stop."""
        ordered = sts.spec.pod_management_policy != "Parallel"
        wanted = util.replica_range(sts)
        replicas: dict[int, core_pb2.Pod] = {}
        condemned: list[tuple[int, core_pb2.Pod]] = []
        for member in pods:
            index = util.ordinal_of(sts, member)
            if index is None:
                continue  # matches the selector but is not named as a member: left alone
            if index in wanted:
                replicas[index] = member
            else:
                condemned.append((index, member))
        condemned.sort(key=lambda pair: pair[0], reverse=True)

        missing: list[int] = []
        for ordinal in wanted:
            pod = replicas.get(ordinal)
            if pod is not None and util.is_finished(pod) and not util.is_terminating(pod):
                self.recorder.event(sts, NORMAL, "RecreatingFailedPod" if pod.status.phase == "Failed"
                                    else "RecreatingTerminatedPod",
                                    f"StatefulSet {sts.metadata.namespace}/{sts.metadata.name} is recreating "
                                    f"{'failed' if pod.status.phase == 'Failed' else 'terminated'} Pod "
                                    f"{pod.metadata.name}")
                await self._delete_pod(sts, pod)
                if ordered:
                    raise _Wait
                continue
            if pod is None:
                if ordered:
                    await self._create_pod(sts, current, update, ordinal)
                    raise _Wait  # the next ordinal only once this one is Running and Ready
                missing.append(ordinal)
                continue
            if not self._settled(sts, pod):
                if ordered:
                    raise _Wait
                continue
            await self._sync_claims(sts, ordinal, pod, condemned=False)
        if missing:
            await self._create_parallel(sts, current, update, missing)

        # Condemned pods go from the highest ordinal down; OrderedReady waits for each to be gone.
        first_unhealthy = next((p for _, p in condemned if not util.is_healthy(p)), None)
        for ordinal, doomed in condemned:
            if util.is_terminating(doomed):
                if ordered:
                    raise _Wait
                continue
            if ordered and doomed is not first_unhealthy and not self._settled(sts, doomed):
                raise _Wait
            await self._sync_claims(sts, ordinal, doomed, condemned=True)
            await self._delete_pod(sts, doomed)
            if ordered:
                raise _Wait

        if sts.spec.update_strategy.type == "RollingUpdate" and not missing:
            await self._roll(sts, update, replicas)

    def _settled(self, sts: apps_pb2.StatefulSet, pod: core_pb2.Pod) -> bool:
        """Running, Ready for minReadySeconds, not terminating: OrderedReady may go on past it."""
        return util.is_healthy(pod) and podutil.is_available(pod, sts.spec.min_ready_seconds, time.time())

    async def _roll(self, sts: apps_pb2.StatefulSet, update: apps_pb2.ControllerRevision,
                    replicas: dict[int, core_pb2.Pod]) -> None:
        """One step of a RollingUpdate: replace the highest outdated pod at or above the partition, one at a
        time, each only after the ones above it are healthy on the update revision."""
        wanted = util.replica_range(sts)
        lowest = wanted.start + sts.spec.update_strategy.rolling_update.partition
        for ordinal in reversed(wanted):
            if ordinal < lowest:
                break
            pod = replicas[ordinal]
            if util.revision_of(pod) != update.metadata.name and not util.is_terminating(pod):
                await self._delete_pod(sts, pod)
                return
            if not util.is_healthy(pod):
                return  # wait for the replacement before touching the next ordinal

    async def _create_parallel(self, sts: apps_pb2.StatefulSet, current: apps_pb2.ControllerRevision,
                               update: apps_pb2.ControllerRevision, ordinals: list[int]) -> None:
        """Parallel: every missing ordinal at once, in slow-start batches (a refused template costs one call)."""
        pending: Iterator[int] = iter(ordinals)
        created, error = await slow_start(len(ordinals),
                                          lambda: self._create_pod(sts, current, update, next(pending)))
        if error is not None:
            if isinstance(error, NamespaceTerminating):
                raise error
            raise ApiError(f"created only {created} of {len(ordinals)} pods of StatefulSet "
                           f"{sts.metadata.namespace}/{sts.metadata.name}: {error}")

    async def _create_pod(self, sts: apps_pb2.StatefulSet, current: apps_pb2.ControllerRevision,
                          update: apps_pb2.ControllerRevision, ordinal: int) -> None:
        """Ordinal `ordinal`'s claims, then its pod (CreateStatefulPod)."""
        name = util.pod_name(sts, ordinal)
        await self._create_claims(sts, ordinal, name)
        revision = current if util.uses_current_revision(sts, ordinal) else update
        pod = util.new_pod(sts, util.template_for(sts, revision), ordinal, revision.metadata.name)
        try:
            await self.client.create(pod)
        except AlreadyExists:
            return  # made by a sync our cache has not caught up with
        except NamespaceTerminating:
            raise
        except ApiError as err:
            self.recorder.event(sts, WARNING, "FailedCreate", f"create Pod {name} in StatefulSet "
                                f"{sts.metadata.name} failed error: {err}")
            raise
        self.recorder.event(sts, NORMAL, "SuccessfulCreate",
                            f"create Pod {name} in StatefulSet {sts.metadata.name} successful")

    async def _create_claims(self, sts: apps_pb2.StatefulSet, ordinal: int, pod_name: str) -> None:
        for claim in util.new_claims(sts, ordinal):
            existing = self.claims.store.get_by_name(claim.metadata.namespace, claim.metadata.name)
            if existing is not None:
                if util.is_terminating(existing):
                    # Mounting a claim on its way out would lose the pod its data a moment later.
                    raise ApiError(f"pod {pod_name} cannot be created until claim {claim.metadata.name} "
                                   "is gone (it is being deleted)")
                continue
            owners = util.claim_owners(sts, claim, None, condemned=False)
            if owners is not None:
                claim.metadata.owner_references.extend(owners)
            try:
                await self.client.create(claim)
            except AlreadyExists:
                continue
            except NamespaceTerminating:
                raise
            except ApiError as err:
                self.recorder.event(sts, WARNING, "FailedCreate", f"create Claim {claim.metadata.name} for Pod "
                                    f"{pod_name} in StatefulSet {sts.metadata.name} failed error: {err}")
                raise
            self.recorder.event(sts, NORMAL, "SuccessfulCreate", f"create Claim {claim.metadata.name} Pod "
                                f"{pod_name} in StatefulSet {sts.metadata.name} success")

    async def _sync_claims(self, sts: apps_pb2.StatefulSet, ordinal: int, pod: core_pb2.Pod, *,
                           condemned: bool) -> None:
        """A live pod's claims exist (re-made if someone deleted one) and are owned as the retention policy says."""
        if not condemned:
            missing = [c for c in util.new_claims(sts, ordinal)
                       if self.claims.store.get_by_name(c.metadata.namespace, c.metadata.name) is None]
            if missing:
                await self._create_claims(sts, ordinal, pod.metadata.name)
        for template in sts.spec.volume_claim_templates:
            claim = self.claims.store.get_by_name(sts.metadata.namespace, util.claim_name(template, sts, ordinal))
            if claim is None or util.is_terminating(claim):
                continue
            owners = util.claim_owners(sts, claim, pod, condemned)
            if owners is None:
                continue
            new = copy(claim)
            del new.metadata.owner_references[:]
            new.metadata.owner_references.extend(owners)
            try:
                await self.client.update(new)
            except NotFound:
                continue
            # A Conflict (the binder or scheduler wrote the claim meanwhile) fails the sync, to be
            # retried: a condemned pod must not go before its claim names it as owner, or the claim
            # would outlive it for good.

    async def _delete_pod(self, sts: apps_pb2.StatefulSet, pod: core_pb2.Pod) -> None:
        try:
            await self.client.delete(core_pb2.Pod, pod.metadata.name, pod.metadata.namespace, uid=pod.metadata.uid)
        except (NotFound, Conflict):
            return  # gone already, or replaced by a namesake
        self.recorder.event(sts, NORMAL, "SuccessfulDelete",
                            f"delete Pod {pod.metadata.name} in StatefulSet {sts.metadata.name} successful")

    # ---------------------------------------------------------------- status

    async def _update_status(self, key: str, sts: apps_pb2.StatefulSet, current: apps_pb2.ControllerRevision,
                             update: apps_pb2.ControllerRevision, pods: list[core_pb2.Pod]) -> None:
        now = time.time()
        status = apps_pb2.StatefulSetStatus(observed_generation=sts.metadata.generation,
                                            current_revision=current.metadata.name,
                                            update_revision=update.metadata.name)
        for pod in pods:
            if util.ordinal_of(sts, pod) is None:
                continue
            if util.is_created(pod):
                status.replicas += 1
            if util.is_running_and_ready(pod):
                status.ready_replicas += 1
                if podutil.is_available(pod, sts.spec.min_ready_seconds, now):
                    status.available_replicas += 1
            if util.is_created(pod) and not util.is_terminating(pod):
                revision = util.revision_of(pod)
                status.current_replicas += revision == current.metadata.name
                status.updated_replicas += revision == update.metadata.name
        if status.updated_replicas == status.replicas == status.ready_replicas == sts.spec.replicas:
            # Every pod runs the update revision and is Ready: it is now the current one.
            status.current_revision = status.update_revision
            status.current_replicas = status.updated_replicas
        if sts.status.HasField("collision_count"):
            status.collision_count = sts.status.collision_count
        status.conditions.extend(sts.status.conditions)
        if status != sts.status:
            new = copy(sts)
            new.status.CopyFrom(status)
            try:
                await self.client.update_status(new)
            except NotFound:
                return
        if sts.spec.min_ready_seconds > 0 and status.ready_replicas != status.available_replicas:
            self.queue.add_after(key, sts.spec.min_ready_seconds)

