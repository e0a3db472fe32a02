"""The StatefulSet controller's pure parts: identities, claims and revisions (Kubernetes' stateful_set_utils.go).

A StatefulSet's pod is not interchangeable: ordinal `i` is always

- named `<set>-<i>`, with `hostname` = that name and `subdomain` = the set's
  serviceName, so DNS answers `<set>-<i>.<service>.<ns>.svc.cluster.local`;
- labelled `statefulset.kubernetes.io/pod-name` (a Service can select one pod)
  and `apps.kubernetes.io/pod-index`, and `controller-revision-hash` = the name
  of the ControllerRevision whose template it runs;
- given, for each volumeClaimTemplate `t`, the claim `<t>-<set>-<i>` as the
  volume named `t`. The claim is made before the pod and never deleted by the
  controller, so a pod recreated for the same ordinal (after a delete, an
  update, a node failure) mounts the same data — and, through the local-path
  volume's node affinity, lands on the same node.

Which claims the garbage collector may take is the set's
persistentVolumeClaimRetentionPolicy, expressed as owner references
(`claim_owners`): whenDeleted Delete makes the set an owner, whenScaled Delete
makes the pod of a condemned ordinal one; Retain adds nothing.
"""

from __future__ import annotations

import re
from typing import Any

from controlplane.controllers import podutil
from controlplane.controllers.history import LABEL_CONTROLLER_REVISION_HASH, template_of
from proto import apps_pb2, core_pb2, meta_pb2

LABEL_POD_NAME = "statefulset.kubernetes.io/pod-name"
LABEL_POD_INDEX = "apps.kubernetes.io/pod-index"
RETAIN, DELETE = "Retain", "Delete"

_ORDINAL = re.compile(r"^(.*)-([0-9]+)$")


def pod_name(sts: apps_pb2.StatefulSet, ordinal: int) -> str:
    return f"{sts.metadata.name}-{ordinal}"


def ordinal_of(sts: apps_pb2.StatefulSet, pod: core_pb2.Pod) -> int | None:
    """The ordinal in a pod's name, if it is named as one of this set's pods (isMemberOf)."""
    match = _ORDINAL.match(pod.metadata.name)
    if match is None or match.group(1) != sts.metadata.name:
        return None
    return int(match.group(2))


def start_ordinal(sts: apps_pb2.StatefulSet) -> int:
    return sts.spec.ordinals.start


def replica_range(sts: apps_pb2.StatefulSet) -> range:
    """The ordinals the set should run: [start, start + replicas)."""
    start = start_ordinal(sts)
    return range(start, start + sts.spec.replicas)


def claim_name(template: core_pb2.PersistentVolumeClaim, sts: apps_pb2.StatefulSet, ordinal: int) -> str:
    return f"{template.metadata.name}-{pod_name(sts, ordinal)}"


def new_claims(sts: apps_pb2.StatefulSet, ordinal: int) -> list[core_pb2.PersistentVolumeClaim]:
    """The claims ordinal `ordinal` mounts, labelled with the set's matchLabels too (getPersistentVolumeClaims)."""
    claims = []
    for template in sts.spec.volume_claim_templates:
        claim = core_pb2.PersistentVolumeClaim(api_version="v1", kind="PersistentVolumeClaim")
        claim.metadata.CopyFrom(template.metadata)
        claim.metadata.name = claim_name(template, sts, ordinal)
        claim.metadata.namespace = sts.metadata.namespace
        claim.metadata.labels.update(sts.spec.selector.match_labels)
        claim.spec.CopyFrom(template.spec)
        claims.append(claim)
    return claims


def new_pod(sts: apps_pb2.StatefulSet, template: core_pb2.PodTemplateSpec, ordinal: int,
            revision: str) -> core_pb2.Pod:
    """Ordinal `ordinal`'s pod of `template` (the template of ControllerRevision `revision`)."""
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    name = pod_name(sts, ordinal)
    pod.metadata.name = name
    pod.metadata.namespace = sts.metadata.namespace
    pod.metadata.labels.update(template.metadata.labels)
    pod.metadata.labels[LABEL_POD_NAME] = name
    pod.metadata.labels[LABEL_POD_INDEX] = str(ordinal)
    pod.metadata.labels[LABEL_CONTROLLER_REVISION_HASH] = revision
    pod.metadata.annotations.update(template.metadata.annotations)
    pod.spec.CopyFrom(template.spec)
    pod.spec.hostname = name
    if sts.spec.service_name:
        pod.spec.subdomain = sts.spec.service_name
    # Each claim template is a volume of its name, replacing a template volume so named.
    claims = {t.metadata.name: claim_name(t, sts, ordinal) for t in sts.spec.volume_claim_templates}
    kept = [v for v in pod.spec.volumes if v.name not in claims]
    del pod.spec.volumes[:]
    pod.spec.volumes.extend(kept)
    for volume_name, claim in claims.items():
        pod.spec.volumes.add(name=volume_name).persistent_volume_claim.claim_name = claim
    podutil.set_controller(pod, sts)
    return pod


def revision_of(pod: core_pb2.Pod) -> str:
    return str(pod.metadata.labels.get(LABEL_CONTROLLER_REVISION_HASH, ""))


def template_for(sts: apps_pb2.StatefulSet, revision: apps_pb2.ControllerRevision) -> core_pb2.PodTemplateSpec:
    """The pod template a revision recorded (the set's own when it records nothing readable)."""
    template = template_of(revision)
    return template if template is not None else sts.spec.template


def uses_current_revision(sts: apps_pb2.StatefulSet, ordinal: int) -> bool:
    """Whether a new pod at `ordinal` runs the current revision rather than the update revision
    (newVersionedStatefulSetPod): only below a RollingUpdate's partition."""
    strategy = sts.spec.update_strategy
    return strategy.type == "RollingUpdate" and ordinal < start_ordinal(sts) + strategy.rolling_update.partition


def is_created(pod: core_pb2.Pod) -> bool:
    return bool(pod.status.phase)


def is_terminating(obj: core_pb2.Pod | core_pb2.PersistentVolumeClaim) -> bool:
    return obj.metadata.HasField("deletion_timestamp")


def is_running_and_ready(pod: core_pb2.Pod) -> bool:
    return pod.status.phase == "Running" and podutil.is_ready(pod)


def is_healthy(pod: core_pb2.Pod) -> bool:
    """Running, Ready and not terminating: OrderedReady waits for this before the next ordinal."""
    return is_running_and_ready(pod) and not is_terminating(pod)


def is_finished(pod: core_pb2.Pod) -> bool:
    return pod.status.phase in ("Failed", "Succeeded")


def _reference(owner: Any) -> meta_pb2.OwnerReference:
    """A plain owner reference: the claim is not *controlled* (nothing adopts claims), only collected."""
    ref = podutil.owner_reference(owner)
    ref.ClearField("controller")
    ref.ClearField("block_owner_deletion")
    return ref


def claim_owners(sts: apps_pb2.StatefulSet, claim: core_pb2.PersistentVolumeClaim, pod: core_pb2.Pod | None,
                 condemned: bool) -> list[meta_pb2.OwnerReference] | None:
    """The claim's owner references under the retention policy, or None when they are already right.

    whenDeleted Delete: the set owns the claim; whenScaled Delete: the pod of a condemned
    ordinal owns it (and then the set no longer does, so it goes with that pod). References
    to anything but this set and `pod` are kept as they are (updateClaimOwnerRefForSetAndPod).
    """
    policy = sts.spec.persistent_volume_claim_retention_policy
    ours = {sts.metadata.uid} | ({pod.metadata.uid} if pod is not None else set())
    scaled_away = condemned and policy.when_scaled == DELETE and pod is not None
    wanted: list[meta_pb2.OwnerReference] = []
    if scaled_away:
        assert pod is not None
        wanted.append(_reference(pod))
    elif policy.when_deleted == DELETE:
        wanted.append(_reference(sts))
    present = [r for r in claim.metadata.owner_references if r.uid in ours]
    if sorted(r.uid for r in present) == sorted(r.uid for r in wanted):
        return None
    return [r for r in claim.metadata.owner_references if r.uid not in ours] + wanted
