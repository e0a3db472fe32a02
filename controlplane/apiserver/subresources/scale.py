"""The `scale` subresource: a Deployment or ReplicaSet seen as an autoscaling/v1 Scale.

`kubectl scale deployment web --replicas=3` PATCHes `.../deployments/web/scale` with
the merge patch `{"spec":{"replicas":3}}`; the HPA controller reads and writes the same
view. The request core reads the object, turns it into a Scale (`to_scale`), patches
that, and writes back the object with the Scale's replicas (`apply_scale`) through the
ordinary update path, so admission, validation and the resourceVersion check apply as
to any update. A stale resourceVersion in the Scale is a 409 Conflict, which kubectl
retries.

Which kinds scale is the kinds table's `scalable` flag; every scalable kind keeps its
desired count in `spec.replicas`, its observed count in `status.replicas` and its pod
selector in `spec.selector`, as Kubernetes' workload kinds do.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from proto import autoscaling_pb2, manifest, meta_pb2, selectors
from proto.errors import BadRequest, Conflict, Invalid, NotFound
from proto.kinds import Kind

# The Scale body's codec entry: not a resource of its own, only what manifest.from_dict needs.
SCALE = Kind("Scale", "scale", "scale", "autoscaling/v1", autoscaling_pb2.Scale, True, has_status=False)


def scalable(kind: Kind) -> bool:
    """Whether `kind` serves a `scale` subresource."""
    return kind.scalable


def selector_string(selector: meta_pb2.LabelSelector) -> str:
    """A label selector as Kubernetes prints it in a Scale: `app=web,tier in (a,b)`, sorted by key."""
    parsed = selectors.from_message(selector)
    requirements = sorted(parsed.requirements, key=lambda r: r.key)  # stable: matchLabels first, as Kubernetes
    return str(selectors.LabelSelector(tuple(
        selectors.Requirement(r.key, r.operator, tuple(sorted(r.values))) if r.operator in ("in", "notin") else r
        for r in requirements)))


def _check(kind: Kind) -> None:
    if not kind.scalable:
        raise NotFound(f'the server could not find the requested resource ({kind.resource}/scale)')


def to_scale(kind: Kind, obj: Message) -> dict[str, Any]:
    """The autoscaling/v1 Scale of a scalable object, as Kubernetes JSON."""
    _check(kind)
    meta = obj.metadata  # type: ignore[attr-defined]
    spec, status = obj.spec, obj.status  # type: ignore[attr-defined]
    metadata: dict[str, Any] = {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid,
                                "resourceVersion": meta.resource_version}
    if meta.HasField("creation_timestamp"):
        metadata["creationTimestamp"] = meta.creation_timestamp.ToJsonString()
    scale_status: dict[str, Any] = {"replicas": status.replicas}
    if spec.HasField("selector"):
        scale_status["selector"] = selector_string(spec.selector)
    return {"kind": "Scale", "apiVersion": SCALE.api_version,
            "metadata": {k: v for k, v in metadata.items() if v},
            "spec": {"replicas": spec.replicas}, "status": scale_status}


def apply_scale(kind: Kind, obj: Message, scale: dict[str, Any]) -> Message:
    """A copy of `obj` with the replicas `scale` asks for, ready for an ordinary update.

    The Scale must name the object (an empty name means this one); its uid, if set, must
    be the object's (else 409); its resourceVersion, if set, becomes the update's
    precondition, as in Kubernetes. Bad input raises before anything is built.
    """
    _check(kind)
    meta = obj.metadata  # type: ignore[attr-defined]
    if not isinstance(scale, dict):
        raise BadRequest(f"a Scale must be a JSON object, not {type(scale).__name__}")
    what = f'Scale.autoscaling "{meta.name}"'
    if scale.get("apiVersion", SCALE.api_version) != SCALE.api_version or scale.get("kind", "Scale") != "Scale":
        raise BadRequest(f'expected autoscaling/v1 Scale, got {scale.get("apiVersion")} {scale.get("kind")}')
    parsed = manifest.from_dict(scale, SCALE, what=what)
    assert isinstance(parsed, autoscaling_pb2.Scale)
    if parsed.metadata.name and parsed.metadata.name != meta.name:
        raise BadRequest(f"the name of the object ({parsed.metadata.name}) does not match the name on the URL "
                         f"({meta.name})")
    if parsed.metadata.namespace and parsed.metadata.namespace != meta.namespace:
        raise BadRequest(f"the namespace of the object ({parsed.metadata.namespace}) does not match the namespace "
                         f"on the URL ({meta.namespace})")
    if parsed.metadata.uid and parsed.metadata.uid != meta.uid:
        raise Conflict(f"Precondition failed: UID in precondition: {parsed.metadata.uid}, "
                       f"UID in object meta: {meta.uid}")
    if parsed.spec.replicas < 0:
        raise Invalid(what, [("spec.replicas", f"Invalid value: {parsed.spec.replicas}: "
                                               "must be greater than or equal to 0")])
    scaled = type(obj)()
    scaled.CopyFrom(obj)
    scaled.spec.replicas = parsed.spec.replicas  # type: ignore[attr-defined]
    if parsed.metadata.resource_version:
        scaled.metadata.resource_version = parsed.metadata.resource_version  # type: ignore[attr-defined]
    return scaled
