"""What controllers ask about pods and owners: ready, available, active, and who controls what.

Kept in one place so the ReplicaSet, Deployment, endpoints and HPA controllers
agree on what "ready" and "available" mean (Kubernetes' podutil and
controller_utils).
"""

from __future__ import annotations

import time
from typing import Any

from google.protobuf.message import Message

from client import Client, Store, key_of
from client.controller import copy
from proto import core_pb2, kinds, meta_pb2, selectors
from proto.errors import Conflict, NotFound


def condition(pod: core_pb2.Pod, type_: str) -> core_pb2.PodCondition | None:
    for cond in pod.status.conditions:
        if cond.type == type_:
            return cond
    return None


def is_ready(pod: core_pb2.Pod) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond.status == "True"


def is_available(pod: core_pb2.Pod, min_ready_seconds: int, now: float | None = None) -> bool:
    """Ready for at least minReadySeconds (a pod that just turned ready may still crash)."""
    cond = condition(pod, "Ready")
    if cond is None or cond.status != "True":
        return False
    if min_ready_seconds <= 0:
        return True
    since = cond.last_transition_time.seconds
    return since > 0 and since + min_ready_seconds <= (now if now is not None else time.time())


def is_active(pod: core_pb2.Pod) -> bool:
    """Counts toward replicas: not finished and not being deleted (FilterActivePods)."""
    return (pod.status.phase not in ("Succeeded", "Failed")
            and not pod.metadata.HasField("deletion_timestamp"))


def controller_ref(obj: Message) -> meta_pb2.OwnerReference | None:
    for ref in getattr(obj, "metadata").owner_references:  # noqa: B009
        if ref.HasField("controller") and ref.controller:
            return ref
    return None


def controller_key(obj: Message, kind: str, owners: Store[Any]) -> str | None:
    """The key of the `kind` controlling `obj`, if `owners` caches that very one (uid checked): Kubernetes'
    resolveControllerRef — a controller of the same name made anew is not the one that owns `obj`."""
    ref = controller_ref(obj)
    if ref is None or ref.kind != kind:
        return None
    owner = owners.get_by_name(getattr(obj, "metadata").namespace, ref.name)  # noqa: B009
    return key_of(owner) if owner is not None and owner.metadata.uid == ref.uid else None


def selecting_owners(obj: Message, owners: Store[Any]) -> list[str]:
    """Keys of the owners in `obj`'s namespace whose selector matches its labels: who might adopt an orphan."""
    meta: Any = getattr(obj, "metadata")  # noqa: B009
    return [key_of(owner) for owner in owners.list_by_namespace(meta.namespace)
            if selectors.from_message(owner.spec.selector).matches(meta.labels)]


def selecting_services(pod: core_pb2.Pod, services: Store[core_pb2.Service]) -> set[str]:
    """Keys of the Services (with a selector) in the pod's namespace that select it: whose endpoints it is."""
    return {key_of(svc) for svc in services.list_by_namespace(pod.metadata.namespace)
            if svc.spec.selector and selectors.from_match_labels(svc.spec.selector).matches(pod.metadata.labels)}


def owner_reference(owner: Message) -> meta_pb2.OwnerReference:
    """A controller reference to `owner`, blocking its foreground deletion until the dependent is gone."""
    kind = kinds.for_message(owner)
    meta: Any = getattr(owner, "metadata")  # noqa: B009
    return meta_pb2.OwnerReference(api_version=kind.api_version, kind=kind.kind, name=meta.name,
                                   uid=meta.uid, controller=True, block_owner_deletion=True)


def set_controller(obj: Message, owner: Message) -> None:
    getattr(obj, "metadata").owner_references.append(owner_reference(owner))  # noqa: B009


def remove_owner(obj: Message, uid: str) -> bool:
    """Drop the owner reference with `uid`; True if there was one."""
    refs = getattr(obj, "metadata").owner_references  # noqa: B009
    kept = [r for r in refs if r.uid != uid]
    if len(kept) == len(refs):
        return False
    del refs[:]
    refs.extend(kept)
    return True


async def patch_owner(client: Client, pod: core_pb2.Pod, *, adopt: Message | None = None,
                      release: Message | None = None) -> bool:
    """Adopt an orphan pod that matches `adopt`, or release one that no longer matches `release`
    (Kubernetes' ControllerRefManager); False if the pod changed or went away meanwhile."""
    new = copy(pod)
    if adopt is not None:
        set_controller(new, adopt)
    elif release is not None:
        remove_owner(new, getattr(release, "metadata").uid)  # noqa: B009
    try:
        await client.update(new)  # carries the cached resourceVersion: no blind overwrite
        return True
    except (Conflict, NotFound):
        return False  # it changed or went away; the informer brings the controller back
