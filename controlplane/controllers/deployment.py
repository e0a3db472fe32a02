"""The Deployment controller: rolls a pod template out through ReplicaSets, and back.

A Deployment owns one ReplicaSet per pod template it has run, named
`<deployment>-<pod-template-hash>` (the hash of the template, so the same
template always maps to the same ReplicaSet: rolling back to an old template
scales its old ReplicaSet up again instead of creating a new one). Each
ReplicaSet carries `deployment.kubernetes.io/revision`; the newest template has
the highest, and `revisionHistoryLimit` old, scaled-down ReplicaSets are kept
for `kctl rollout undo`.

Each sync makes one step and waits for the ReplicaSet controller's status to
report progress (the next ReplicaSet event brings it back):

- RollingUpdate: scale the new ReplicaSet up as far as `maxSurge` allows above
  `replicas`, and the old ones down as far as `maxUnavailable` allows below it,
  counting only *available* pods, so a rollout never drops below
  `replicas - maxUnavailable` serving pods.
- Recreate: scale every old ReplicaSet to 0, wait until their pods are gone,
  then scale the new one up.
- paused: scale, but start no new rollout.
- Progressing=False/ProgressDeadlineExceeded when no progress was made for
  `progressDeadlineSeconds`.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from client import Client, InformerFactory, key_of
from client.controller import Controller, MutationCache, copy
from client.events import NORMAL, WARNING, EventRecorder
from controlplane.controllers import podutil
from proto import apps_pb2, core_pb2, selectors
from proto.errors import AlreadyExists, Conflict, NamespaceTerminating, NotFound
from proto.wellknown import (
    ANNOTATION_CHANGE_CAUSE,
    ANNOTATION_DESIRED_REPLICAS,
    ANNOTATION_MAX_REPLICAS,
    ANNOTATION_REVISION,
    LABEL_POD_TEMPLATE_HASH,
    revision_of,
)

log = logging.getLogger(__name__)

# kube's rand.SafeEncodeString alphabet: no vowels, no look-alikes (no bad words in names).
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


class DeploymentController(Controller):
    name = "deployment"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 workers: int = 5) -> None:
        super().__init__(client, factory, workers=workers)
        self.recorder = recorder
        self.deployments = factory.informer(apps_pb2.Deployment)
        self.replicasets = factory.informer(apps_pb2.ReplicaSet)
        self.pods = factory.informer(core_pb2.Pod)
        self.informers = [self.deployments, self.replicasets, self.pods]
        # ReplicaSets as we last wrote them: the next sync must not act on an older view.
        self.written = MutationCache()
        self.deployments.add_handler(on_add=self._enqueue, on_update=lambda _o, n: self._enqueue(n),
                                     on_delete=self._enqueue)
        self.replicasets.add_handler(on_add=self._rs_changed, on_update=self._rs_updated,
                                     on_delete=self._rs_deleted)
        self.pods.add_handler(on_delete=self._pod_deleted)

    # ---------------------------------------------------------------- handlers

    def _enqueue(self, d: apps_pb2.Deployment) -> None:
        self.queue.add(key_of(d))

    def _owner_key(self, rs: apps_pb2.ReplicaSet) -> str | None:
        return podutil.controller_key(rs, "Deployment", self.deployments.store)

    def _rs_changed(self, rs: apps_pb2.ReplicaSet) -> None:
        owner = self._owner_key(rs)
        if owner is not None:
            self.queue.add(owner)
        elif podutil.controller_ref(rs) is None:
            for key in podutil.selecting_owners(rs, self.deployments.store):
                self.queue.add(key)

    def _rs_deleted(self, rs: apps_pb2.ReplicaSet) -> None:
        self.written.forget(rs)
        self._rs_changed(rs)

    def _rs_updated(self, old: apps_pb2.ReplicaSet, new: apps_pb2.ReplicaSet) -> None:
        if old.metadata.resource_version == new.metadata.resource_version:
            return
        old_owner = self._owner_key(old)
        if old_owner is not None and old_owner != self._owner_key(new):
            self.queue.add(old_owner)
        self._rs_changed(new)

    def _pod_deleted(self, pod: core_pb2.Pod) -> None:
        # Recreate waits for the old pods to be gone: their deletion is its cue.
        ref = podutil.controller_ref(pod)
        if ref is not None and ref.kind == "ReplicaSet":
            rs = self.replicasets.store.get_by_name(pod.metadata.namespace, ref.name)
            if rs is not None:
                owner = self._owner_key(rs)
                if owner is not None:
                    self.queue.add(owner)

    # ---------------------------------------------------------------- sync

    async def sync(self, key: str) -> None:
        cached = self.deployments.store.get(key)
        if cached is None:
            return
        d = copy(cached)
        selector = selectors.from_message(d.spec.selector)
        if selector.empty():
            self.recorder.event(d, WARNING, "SelectingAll", "This deployment is selecting all pods. "
                                "A non-empty selector is required.")
            return
        rs_list = await self._claim_replicasets(d, selector)
        if d.metadata.HasField("deletion_timestamp"):
            await self._sync_status(d, find_new_rs(d, rs_list), rs_list)
            return
        if d.spec.paused or self._is_scaling_event(d, rs_list):
            new_rs, old_rss, d = await self._all_rs_and_sync_revision(d, rs_list, create=False)
            rs_list = await self._scale(d, new_rs, old_rss)
            if d.spec.paused:
                new_uid = new_rs.metadata.uid if new_rs is not None else ""
                await self._cleanup(d, [rs for rs in rs_list if rs.metadata.uid != new_uid])
            await self._sync_status(d, find_new_rs(d, rs_list), rs_list)
            return
        try:
            if d.spec.strategy.type == "Recreate":
                await self._rollout_recreate(d, rs_list)
            else:
                await self._rollout_rolling(d, rs_list)
        except NamespaceTerminating:
            pass  # the namespace controller is deleting this Deployment: nothing to roll out

    async def _claim_replicasets(self, d: apps_pb2.Deployment,
                                 selector: selectors.LabelSelector) -> list[apps_pb2.ReplicaSet]:
        owned: list[apps_pb2.ReplicaSet] = []
        deleting = d.metadata.HasField("deletion_timestamp")
        namespace = d.metadata.namespace
        for rs in self.written.merge(self.replicasets.store.list_by_namespace(namespace), namespace):
            ref = podutil.controller_ref(rs)
            matches = selector.matches(rs.metadata.labels)
            if ref is not None and ref.uid == d.metadata.uid:
                if matches:
                    owned.append(rs)
                    continue
                new = copy(rs)
                podutil.remove_owner(new, d.metadata.uid)
            elif ref is None and matches and not deleting and not rs.metadata.HasField("deletion_timestamp"):
                new = copy(rs)
                podutil.set_controller(new, d)
            else:
                continue
            try:
                updated = await self.client.update(new)
            except (Conflict, NotFound):
                continue
            self.written.remember(updated)
            if ref is None:
                owned.append(updated)
        return owned

    def _is_scaling_event(self, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet]) -> bool:
        """Only `replicas` changed: some active ReplicaSet was sized for another desired count."""
        for rs in rs_list:
            desired = rs.metadata.annotations.get(ANNOTATION_DESIRED_REPLICAS)
            if rs.spec.replicas > 0 and desired is not None and desired != str(d.spec.replicas):
                return True
        return False

    # ---------------------------------------------------------------- revisions and the new ReplicaSet

    async def _all_rs_and_sync_revision(
        self, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet], *, create: bool
    ) -> tuple[apps_pb2.ReplicaSet | None, list[apps_pb2.ReplicaSet], apps_pb2.Deployment]:
        """(new ReplicaSet or None, old ones, the deployment with its revision annotation current)."""
        new_rs = find_new_rs(d, rs_list)
        old_rss = [rs for rs in rs_list if rs is not new_rs]
        revision = max((revision_of(rs) for rs in old_rss), default=0) + 1
        if new_rs is not None:
            if revision_of(new_rs) < revision:
                # A rollback to an old template: its ReplicaSet becomes the newest revision.
                updated = copy(new_rs)
                updated.metadata.annotations[ANNOTATION_REVISION] = str(revision)
                _copy_change_cause(d, updated)
                new_rs = await self.client.update(updated)
                self.written.remember(new_rs)
            else:
                revision = revision_of(new_rs)
        elif create:
            new_rs = await self._create_new_rs(d, rs_list, revision)
        if new_rs is not None and d.metadata.annotations.get(ANNOTATION_REVISION) != str(revision):
            d.metadata.annotations[ANNOTATION_REVISION] = str(revision)
            d = await self.client.update(d)
        return new_rs, old_rss, d

    async def _create_new_rs(self, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet],
                             revision: int) -> apps_pb2.ReplicaSet:
        template_hash = compute_hash(d.spec.template, d.status.collision_count)
        rs = apps_pb2.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
        rs.metadata.name = f"{d.metadata.name}-{template_hash}"
        rs.metadata.namespace = d.metadata.namespace
        rs.spec.template.CopyFrom(d.spec.template)
        rs.spec.template.metadata.labels[LABEL_POD_TEMPLATE_HASH] = template_hash
        rs.metadata.labels.update(rs.spec.template.metadata.labels)
        rs.spec.selector.CopyFrom(d.spec.selector)
        rs.spec.selector.match_labels[LABEL_POD_TEMPLATE_HASH] = template_hash
        rs.spec.min_ready_seconds = d.spec.min_ready_seconds
        rs.spec.replicas = new_rs_replicas(d, rs_list, None)
        rs.metadata.annotations[ANNOTATION_REVISION] = str(revision)
        rs.metadata.annotations[ANNOTATION_DESIRED_REPLICAS] = str(d.spec.replicas)
        rs.metadata.annotations[ANNOTATION_MAX_REPLICAS] = str(d.spec.replicas + max_surge(d))
        _copy_change_cause(d, rs)
        podutil.set_controller(rs, d)
        try:
            created = await self.client.create(rs)
        except AlreadyExists:
            existing = await self.client.get(apps_pb2.ReplicaSet, rs.metadata.name, rs.metadata.namespace)
            ref = podutil.controller_ref(existing)
            if ref is not None and ref.uid == d.metadata.uid and templates_equal(
                    existing.spec.template, d.spec.template):
                self.written.remember(existing)
                return existing  # ours, created by an earlier sync our cache has not caught up with
            # Someone else's ReplicaSet has our name: hash again with a bumped collision count.
            status = copy(d)
            status.status.collision_count = d.status.collision_count + 1
            await self.client.update_status(status)
            raise Conflict(f'hash collision for ReplicaSet "{rs.metadata.name}"; retrying') from None
        self.written.remember(created)
        if created.spec.replicas > 0:
            self.recorder.event(d, NORMAL, "ScalingReplicaSet",
                                f"Scaled up replica set {created.metadata.name} to {created.spec.replicas}")
        return created

    # ---------------------------------------------------------------- strategies

    async def _rollout_rolling(self, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet]) -> None:
        new_rs, old_rss, d = await self._all_rs_and_sync_revision(d, rs_list, create=True)
        assert new_rs is not None
        all_rss = [new_rs, *old_rss]
        # Step 1: scale up the new ReplicaSet within maxSurge.
        target = d.spec.replicas if new_rs.spec.replicas > d.spec.replicas else new_rs_replicas(d, all_rss, new_rs)
        if target != new_rs.spec.replicas:
            new_rs = await self._scale_rs(d, new_rs, target)
            await self._sync_status(d, new_rs, [new_rs, *old_rss])
            return
        # Step 2: scale down old ReplicaSets within maxUnavailable.
        old_rss, scaled = await self._reconcile_old(d, new_rs, old_rss)
        if not scaled and deployment_complete(d, new_rs, old_rss):
            await self._cleanup(d, old_rss)
        await self._sync_status(d, new_rs, [new_rs, *old_rss])

    async def _reconcile_old(self, d: apps_pb2.Deployment, new_rs: apps_pb2.ReplicaSet,
                             old_rss: list[apps_pb2.ReplicaSet]) -> tuple[list[apps_pb2.ReplicaSet], bool]:
        if sum(rs.spec.replicas for rs in old_rss) == 0:
            return old_rss, False
        all_pods = new_rs.spec.replicas + sum(rs.spec.replicas for rs in old_rss)
        min_available = d.spec.replicas - max_unavailable(d)
        new_unavailable = max(new_rs.spec.replicas - new_rs.status.available_replicas, 0)
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return old_rss, False
        old_rss = sorted(old_rss, key=lambda rs: (rs.metadata.creation_timestamp.seconds, rs.metadata.name))
        # Old pods that are not available cost nothing to remove: those go first.
        total = 0
        for i, rs in enumerate(old_rss):
            if total >= max_scaled_down:
                break
            unhealthy = rs.spec.replicas - min(rs.status.available_replicas, rs.spec.replicas)
            if rs.spec.replicas == 0 or unhealthy == 0:
                continue
            down = min(max_scaled_down - total, unhealthy)
            old_rss[i] = await self._scale_rs(d, rs, rs.spec.replicas - down)
            total += down
        # Then available ones, as far as the floor of available pods allows. A ReplicaSet's
        # status lags its spec, so it never counts for more available pods than it asks for.
        available = sum(min(rs.status.available_replicas, rs.spec.replicas) for rs in [new_rs, *old_rss])
        budget = available - min_available
        for i, rs in enumerate(old_rss):
            if budget <= 0:
                break
            if rs.spec.replicas == 0:
                continue
            down = min(rs.spec.replicas, budget)
            old_rss[i] = await self._scale_rs(d, rs, rs.spec.replicas - down)
            budget -= down
            total += down
        return old_rss, total > 0

    async def _rollout_recreate(self, d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet]) -> None:
        new_rs, old_rss, d = await self._all_rs_and_sync_revision(d, rs_list, create=False)
        scaled = False
        for i, rs in enumerate(old_rss):
            if rs.spec.replicas > 0:
                old_rss[i] = await self._scale_rs(d, rs, 0)
                scaled = True
        old_uids = {rs.metadata.uid for rs in old_rss}
        old_running = any(
            (ref := podutil.controller_ref(p)) is not None and ref.uid in old_uids
            and p.status.phase not in ("Succeeded", "Failed")
            for p in self.pods.store.list_by_namespace(d.metadata.namespace))
        if scaled or old_running:
            await self._sync_status(d, new_rs, [*([new_rs] if new_rs else []), *old_rss])
            return
        if new_rs is None:
            new_rs, old_rss, d = await self._all_rs_and_sync_revision(d, rs_list, create=True)
            assert new_rs is not None
        if new_rs.spec.replicas != d.spec.replicas:
            new_rs = await self._scale_rs(d, new_rs, d.spec.replicas)
        elif deployment_complete(d, new_rs, old_rss):
            await self._cleanup(d, old_rss)
        await self._sync_status(d, new_rs, [new_rs, *old_rss])

    async def _scale(self, d: apps_pb2.Deployment, new_rs: apps_pb2.ReplicaSet | None,
                     old_rss: list[apps_pb2.ReplicaSet]) -> list[apps_pb2.ReplicaSet]:
        """A change of `replicas` alone: resize the active ReplicaSets in proportion (Kubernetes' scale())."""
        all_rss = [*([new_rs] if new_rs is not None else []), *old_rss]
        active = [rs for rs in all_rss if rs.spec.replicas > 0]
        if not active:
            latest = new_rs or max(all_rss, key=revision_of, default=None)
            if latest is not None and d.spec.replicas > 0:
                return _replaced(all_rss, await self._scale_rs(d, latest, d.spec.replicas))
            return all_rss
        if len(active) == 1:
            return _replaced(all_rss, await self._scale_rs(d, active[0], d.spec.replicas))
        if new_rs is not None and new_rs.spec.replicas == d.spec.replicas \
                and new_rs.status.available_replicas >= d.spec.replicas:
            for rs in old_rss:
                if rs.spec.replicas:
                    all_rss = _replaced(all_rss, await self._scale_rs(d, rs, 0))
            return all_rss
        # Several active ReplicaSets mid-rollout: each grows or shrinks by the ratio of the new
        # total to the total it was last sized for (its max-replicas annotation), as Kubernetes'
        # GetProportion does. Recorded per ReplicaSet, so a sync that failed halfway resumes
        # without scaling the finished ones twice.
        allowed = d.spec.replicas + (max_surge(d) if d.spec.strategy.type != "Recreate" else 0)
        if d.spec.replicas == 0:
            allowed = 0
        current = sum(rs.spec.replicas for rs in active)
        to_add = allowed - current
        # Larger first; ties go to the newer on the way up and the older on the way down.
        active.sort(key=lambda rs: (-rs.spec.replicas, -revision_of(rs) if to_add > 0 else revision_of(rs)))
        targets: list[int] = []
        added = 0
        for rs in active:
            if to_add == 0:
                # Nothing to move, but each ReplicaSet is still re-annotated with the new desired
                # count: a stale annotation would make every later sync a "scaling event" again,
                # and the rollout would never take its next step.
                targets.append(rs.spec.replicas)
                continue
            sized_for = _int_annotation(rs, ANNOTATION_MAX_REPLICAS) or current
            share = round(rs.spec.replicas * allowed / sized_for) - rs.spec.replicas
            share = min(share, to_add - added) if to_add > 0 else max(share, to_add - added)
            targets.append(rs.spec.replicas + share)
            added += share
        targets[0] += to_add - added  # rounding leftovers go to the largest
        for rs, target in zip(active, targets, strict=True):
            all_rss = _replaced(all_rss, await self._scale_rs(d, rs, max(target, 0)))
        return all_rss

    async def _scale_rs(self, d: apps_pb2.Deployment, rs: apps_pb2.ReplicaSet, replicas: int) -> apps_pb2.ReplicaSet:
        desired, surge = str(d.spec.replicas), str(d.spec.replicas + max_surge(d))
        if rs.spec.replicas == replicas and rs.metadata.annotations.get(ANNOTATION_DESIRED_REPLICAS) == desired:
            return rs
        new = copy(rs)
        new.spec.replicas = replicas
        new.metadata.annotations[ANNOTATION_DESIRED_REPLICAS] = desired
        new.metadata.annotations[ANNOTATION_MAX_REPLICAS] = surge
        updated = await self.client.update(new)
        self.written.remember(updated)
        if rs.spec.replicas != replicas:
            direction = "up" if replicas > rs.spec.replicas else "down"
            self.recorder.event(d, NORMAL, "ScalingReplicaSet",
                                f"Scaled {direction} replica set {rs.metadata.name} to {replicas} "
                                f"from {rs.spec.replicas}")
        return updated

    async def _cleanup(self, d: apps_pb2.Deployment, old_rss: list[apps_pb2.ReplicaSet]) -> None:
        """Delete the oldest scaled-down ReplicaSets beyond revisionHistoryLimit."""
        limit = d.spec.revision_history_limit if d.spec.HasField("revision_history_limit") else 10
        idle = [rs for rs in old_rss if rs.spec.replicas == 0 and rs.status.replicas == 0
                and not rs.metadata.HasField("deletion_timestamp")]
        idle.sort(key=revision_of)
        for rs in idle[:max(len(idle) - limit, 0)]:
            try:
                await self.client.delete(apps_pb2.ReplicaSet, rs.metadata.name, rs.metadata.namespace,
                                         uid=rs.metadata.uid)
            except (NotFound, Conflict):
                pass
            self.written.forget(rs)

    # ---------------------------------------------------------------- status

    async def _sync_status(self, d: apps_pb2.Deployment, new_rs: apps_pb2.ReplicaSet | None,
                           all_rss: list[apps_pb2.ReplicaSet]) -> None:
        now = time.time()
        status = apps_pb2.DeploymentStatus(
            observed_generation=d.metadata.generation,
            replicas=sum(rs.status.replicas for rs in all_rss),
            updated_replicas=new_rs.status.replicas if new_rs is not None else 0,
            ready_replicas=sum(rs.status.ready_replicas for rs in all_rss),
            available_replicas=sum(rs.status.available_replicas for rs in all_rss))
        status.unavailable_replicas = max(d.spec.replicas - status.available_replicas, 0)
        if d.status.HasField("collision_count"):
            status.collision_count = d.status.collision_count
        status.conditions.extend(d.status.conditions)
        if status.available_replicas >= d.spec.replicas - max_unavailable(d):
            _set_condition(status, "Available", "True", "MinimumReplicasAvailable",
                           "Deployment has minimum availability.", now)
        else:
            _set_condition(status, "Available", "False", "MinimumReplicasUnavailable",
                           "Deployment does not have minimum availability.", now)
        rs_name = new_rs.metadata.name if new_rs is not None else ""
        progressing = _condition(status, "Progressing")
        deadline = d.spec.progress_deadline_seconds if d.spec.HasField("progress_deadline_seconds") else 600
        recheck = 0.0
        if d.spec.paused:
            _set_condition(status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", now)
        elif progressing is not None and progressing.reason == "DeploymentPaused":
            _set_condition(status, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed", now)
        elif new_rs is not None and _complete_status(d, status):
            _set_condition(status, "Progressing", "True", "NewReplicaSetAvailable",
                           f'ReplicaSet "{rs_name}" has successfully progressed.', now)
        elif new_rs is not None and (progressing is None or _made_progress(d.status, status)
                                     or progressing.reason == "NewReplicaSetAvailable"):
            _set_condition(status, "Progressing", "True", "ReplicaSetUpdated",
                           f'ReplicaSet "{rs_name}" is progressing.', now)
            recheck = deadline
        elif progressing is not None and progressing.reason != "ProgressDeadlineExceeded":
            waited = now - progressing.last_update_time.seconds
            if waited > deadline:
                _set_condition(status, "Progressing", "False", "ProgressDeadlineExceeded",
                               f'ReplicaSet "{rs_name}" has timed out progressing.', now)
            else:
                recheck = deadline - waited
        if recheck > 0:
            self.queue.add_after(key_of(d), recheck + 1)
        if status != d.status:
            new = copy(d)
            new.status.CopyFrom(status)
            try:
                await self.client.update_status(new)
            except NotFound:
                pass


# ---------------------------------------------------------------- pure helpers


def find_new_rs(d: apps_pb2.Deployment, rs_list: list[apps_pb2.ReplicaSet]) -> apps_pb2.ReplicaSet | None:
    """The ReplicaSet running the deployment's current template (the oldest, if several do)."""
    matching = [rs for rs in rs_list if templates_equal(rs.spec.template, d.spec.template)]
    matching.sort(key=lambda rs: (rs.metadata.creation_timestamp.seconds, rs.metadata.name))
    return matching[0] if matching else None


def _canonical(template: core_pb2.PodTemplateSpec) -> core_pb2.PodTemplateSpec:
    """The template as Kubernetes compares it: an empty `resources` is no `resources`.

    A container's resources are a value in Kubernetes (never absent), so clients
    send `resources: {}` whenever they echo a template back — kubectl's
    `rollout undo` copies the old ReplicaSet's template that way. In a message
    that empty field is present, and would make the same template look new.
    """
    canonical = copy(template)
    for c in (*canonical.spec.init_containers, *canonical.spec.containers):
        if c.HasField("resources") and not c.resources.ByteSize():
            c.ClearField("resources")
    return canonical


def templates_equal(a: core_pb2.PodTemplateSpec, b: core_pb2.PodTemplateSpec) -> bool:
    """Equal but for the pod-template-hash label, which the ReplicaSet adds."""
    x, y = _canonical(a), _canonical(b)
    x.metadata.labels.pop(LABEL_POD_TEMPLATE_HASH, None)
    y.metadata.labels.pop(LABEL_POD_TEMPLATE_HASH, None)
    return bool(x == y)


def compute_hash(template: core_pb2.PodTemplateSpec, collision_count: int) -> str:
    """pod-template-hash: FNV-1a of the template (and the collision count), safe-encoded."""
    h = 0x811C9DC5
    data = _canonical(template).SerializeToString(deterministic=True)
    if collision_count:
        data += str(collision_count).encode()
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_ALPHANUMS[ord(c) % len(_ALPHANUMS)] for c in str(h))



def resolve_int_or_percent(value: str, total: int, *, round_up: bool) -> int:
    if value.endswith("%"):
        scaled = int(value[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value or 0)


def _fenceposts(d: apps_pb2.Deployment) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as pod counts; both zero would deadlock, so unavailable becomes 1."""
    if d.spec.strategy.type == "Recreate":
        return 0, d.spec.replicas
    rolling = d.spec.strategy.rolling_update
    surge = resolve_int_or_percent(rolling.max_surge or "25%", d.spec.replicas, round_up=True)
    unavailable = resolve_int_or_percent(rolling.max_unavailable or "25%", d.spec.replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, d.spec.replicas)


def max_surge(d: apps_pb2.Deployment) -> int:
    return _fenceposts(d)[0]


def max_unavailable(d: apps_pb2.Deployment) -> int:
    return _fenceposts(d)[1]


def new_rs_replicas(d: apps_pb2.Deployment, all_rss: list[apps_pb2.ReplicaSet],
                    new_rs: apps_pb2.ReplicaSet | None) -> int:
    """How big the new ReplicaSet may be now: up to replicas + maxSurge pods in all."""
    if d.spec.strategy.type == "Recreate":
        return d.spec.replicas
    current_new = new_rs.spec.replicas if new_rs is not None else 0
    current = sum(rs.spec.replicas for rs in all_rss if rs is not new_rs) + current_new
    max_total = d.spec.replicas + max_surge(d)
    if current >= max_total:
        return current_new
    return min(current_new + max_total - current, d.spec.replicas)


def deployment_complete(d: apps_pb2.Deployment, new_rs: apps_pb2.ReplicaSet,
                        old_rss: list[apps_pb2.ReplicaSet]) -> bool:
    return (new_rs.spec.replicas == d.spec.replicas
            and new_rs.status.available_replicas >= d.spec.replicas
            and all(rs.spec.replicas == 0 for rs in old_rss))


def _complete_status(d: apps_pb2.Deployment, status: apps_pb2.DeploymentStatus) -> bool:
    return (status.updated_replicas == d.spec.replicas and status.replicas == d.spec.replicas
            and status.available_replicas == d.spec.replicas
            and status.observed_generation >= d.metadata.generation)


def _made_progress(old: apps_pb2.DeploymentStatus, new: apps_pb2.DeploymentStatus) -> bool:
    return (new.updated_replicas > old.updated_replicas or new.ready_replicas > old.ready_replicas
            or new.available_replicas > old.available_replicas or new.replicas < old.replicas
            or new.observed_generation > old.observed_generation)


def _condition(status: apps_pb2.DeploymentStatus, type_: str) -> apps_pb2.DeploymentCondition | None:
    return next((c for c in status.conditions if c.type == type_), None)


def _set_condition(status: apps_pb2.DeploymentStatus, type_: str, value: str, reason: str,
                   message: str, now: float) -> None:
    cond = _condition(status, type_)
    if cond is None:
        cond = status.conditions.add(type=type_)
    if cond.status == value and cond.reason == reason and cond.message == message:
        return
    if cond.status != value:
        cond.last_transition_time.FromSeconds(int(now))
    cond.status, cond.reason, cond.message = value, reason, message
    cond.last_update_time.FromSeconds(int(now))


def _int_annotation(rs: apps_pb2.ReplicaSet, name: str) -> int:
    try:
        return int(rs.metadata.annotations.get(name, "0"))
    except ValueError:
        return 0


def _copy_change_cause(d: apps_pb2.Deployment, rs: apps_pb2.ReplicaSet) -> None:
    cause = d.metadata.annotations.get(ANNOTATION_CHANGE_CAUSE)
    if cause is not None:
        rs.metadata.annotations[ANNOTATION_CHANGE_CAUSE] = cause


def _replaced(rss: list[Any], new: Any) -> list[Any]:
    return [new if rs.metadata.uid == new.metadata.uid else rs for rs in rss]
