"""ControllerRevisions: the history a DaemonSet (or StatefulSet) keeps of its pod templates.

A Deployment remembers old templates in its old ReplicaSets. A DaemonSet has no
ReplicaSets, so, as Kubernetes' pkg/controller/history, it writes each template it
has run into an apps/v1 ControllerRevision it owns:

- `data` is a strategic merge patch that puts the template back:
  `{"spec": {"template": {..., "$patch": "replace"}}}`. kubectl's `rollout undo`
  sends exactly that patch to the DaemonSet, and `rollout history --revision=N`
  applies it to show the template;
- `revision` numbers the templates; the current one always has the highest
  (rolling back renumbers the old revision rather than copying it);
- the name is `<owner>-<hash>` and the label `controller-revision-hash` carries
  the hash of the template (the Deployment's pod-template-hash function, with the
  owner's collision count), and every pod of that template carries the same label,
  which is how a controller tells updated pods from old ones.

These helpers are pure (no API calls): building a revision, reading its template
back, comparing it with a template, and choosing which old ones to delete.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message

from controlplane.controllers import podutil
from controlplane.controllers.deployment import compute_hash, templates_equal
from proto import apps_pb2, core_pb2, manifest
from proto.errors import ApiError

LABEL_CONTROLLER_REVISION_HASH = "controller-revision-hash"
# A StatefulSet or DaemonSet revision name is at most this long before "-<hash>" (a label value's limit less room).
_MAX_PREFIX = 223


def revision_name(prefix: str, template_hash: str) -> str:
    return f"{prefix[:_MAX_PREFIX]}-{template_hash}"


def template_hash(template: core_pb2.PodTemplateSpec, collision_count: int) -> str:
    """The value of `controller-revision-hash` for `template` (Kubernetes' controller.ComputeHash)."""
    return compute_hash(template, collision_count)


def template_patch(template: core_pb2.PodTemplateSpec) -> dict[str, Any]:
    """The revision data of a template: a strategic merge patch replacing spec.template.

    Shaped as Go's encoding/json writes the template, since kubectl's `rollout undo`
    compares these bytes with its own encoding of the DaemonSet to decide "skipped
    rollback": the zero creationTimestamp is `null` and every container has
    `resources` (both are structs in Go, which omitempty never drops).
    """
    body = manifest.to_dict(template)
    body.setdefault("metadata", {})["creationTimestamp"] = None
    spec = body.setdefault("spec", {})
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(field, []):
            container.setdefault("resources", {})
    body["$patch"] = "replace"
    return {"spec": {"template": body}}


def patch_bytes(patch: dict[str, Any]) -> bytes:
    """JSON as Go's json.Marshal writes a map: compact, keys sorted, UTF-8, <>& escaped."""
    text = json.dumps(patch, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode()


def data_of(revision: apps_pb2.ControllerRevision) -> dict[str, Any]:
    try:
        data = json.loads(revision.data.raw) if revision.data.raw else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def template_of(revision: apps_pb2.ControllerRevision) -> core_pb2.PodTemplateSpec | None:
    """The pod template a DaemonSet revision records; None if its data holds none (or not one we read)."""
    template = data_of(revision).get("spec", {}).get("template")
    if not isinstance(template, dict):
        return None
    template = {k: v for k, v in template.items() if k != "$patch"}
    try:
        # Read as the DaemonSet it patches, so the template is parsed exactly as a manifest's.
        ds = manifest.from_dict({"apiVersion": "apps/v1", "kind": "DaemonSet", "spec": {"template": template}})
    except ApiError:
        return None  # someone else's data: not a template we can use
    assert isinstance(ds, apps_pb2.DaemonSet)
    return ds.spec.template


def matches(revision: apps_pb2.ControllerRevision, template: core_pb2.PodTemplateSpec) -> bool:
    """Whether `revision` records `template` (what Kubernetes' history.Match compares as bytes)."""
    recorded = template_of(revision)
    return recorded is not None and templates_equal(recorded, template)


def new_revision(owner: Message, template: core_pb2.PodTemplateSpec, revision: int,
                 collision_count: int) -> apps_pb2.ControllerRevision:
    """The ControllerRevision recording `template` as revision `revision` of `owner`.

    Labelled as the template's pods are (plus the hash), annotated as the owner is
    (so `kubernetes.io/change-cause` shows up in `rollout history`).
    """
    meta: Any = getattr(owner, "metadata")  # noqa: B009
    digest = template_hash(template, collision_count)
    cr = apps_pb2.ControllerRevision(api_version="apps/v1", kind="ControllerRevision", revision=revision)
    cr.metadata.name = revision_name(meta.name, digest)
    cr.metadata.namespace = meta.namespace
    cr.metadata.labels.update(template.metadata.labels)
    cr.metadata.labels[LABEL_CONTROLLER_REVISION_HASH] = digest
    cr.metadata.annotations.update(meta.annotations)
    cr.data.raw = patch_bytes(template_patch(template))
    podutil.set_controller(cr, owner)
    return cr


def max_revision(revisions: Iterable[apps_pb2.ControllerRevision]) -> int:
    return max((r.revision for r in revisions), default=0)


def hash_of(obj: Message) -> str:
    return str(getattr(obj, "metadata").labels.get(LABEL_CONTROLLER_REVISION_HASH, ""))  # noqa: B009


def to_delete(old: list[apps_pb2.ControllerRevision], limit: int,
              live_hashes: set[str]) -> list[apps_pb2.ControllerRevision]:
    """Old revisions beyond `limit`, oldest first, sparing any a live pod still runs."""
    excess = len(old) - limit
    doomed: list[apps_pb2.ControllerRevision] = []
    for revision in sorted(old, key=lambda r: r.revision):
        if excess <= 0:
            break
        if hash_of(revision) in live_hashes:
            continue
        doomed.append(revision)
        excess -= 1
    return doomed
