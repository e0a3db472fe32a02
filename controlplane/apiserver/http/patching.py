"""PATCH requests and field managers: what a write says about who made it, and what a patch does.

The patch algorithms are controlplane/apiserver/patch.py's (JSON patch, merge
patch, strategic merge patch) and fieldmanager.py's (server-side apply, and the
managedFields bookkeeping of every other write). This module only reads the
request: the body, its Content-Type, `fieldManager`, `force` and
`fieldValidation`, and returns the function the request core applies to the
object as stored now (on every retry after a lost race, so a patch always lands
on the latest object).

Every write names a field manager, as in Kubernetes: `?fieldManager=`, else the
client's User-Agent up to its first `/` (`kubectl-client-side-apply`,
`kubectl-edit`, `OpenAPI-Generator` for the Python client). Creates, updates
and patches record what they changed under that manager with operation
`Update` (`track`, managedfields.py); server-side apply records `Apply`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.message import Message

from controlplane.apiserver import fieldmanager, patch
from controlplane.apiserver.http import codec
from controlplane.apiserver.http.managedfields import track
from proto import kinds
from proto.errors import BadRequest, Invalid

JSON_PATCH = patch.JSON_PATCH
MERGE_PATCH = patch.MERGE_PATCH
STRATEGIC_MERGE_PATCH = patch.STRATEGIC_MERGE_PATCH
APPLY_PATCH = patch.APPLY_PATCH
MAX_FIELD_MANAGER_BYTES = 128  # Kubernetes' limit on a manager's name

Transform = Callable[[Message | None], Message]
__all__ = ["track"]  # managedfields.py's, re-exported: every write handler records through here


def media_type(content_type: str) -> str:
    return patch.media_type(content_type)


def field_manager(query: Mapping[str, str], headers: Mapping[str, str], options: str) -> str:
    """The manager a write is recorded under; `options` names the request's options kind in errors.

    An explicit `fieldManager` must be printable and at most 128 bytes (Kubernetes'
    ValidateFieldManager, a 422 on e.g. `PatchOptions.meta.k8s.io ""`); one taken
    from the User-Agent is cut to fit, as kube-apiserver does.
    """
    manager = query.get("fieldManager")
    if manager is not None:
        what = f'{options}.meta.k8s.io ""'
        if len(manager.encode("utf-8", "surrogatepass")) > MAX_FIELD_MANAGER_BYTES:
            raise Invalid(what, [("fieldManager", f"Too long: may not be more than {MAX_FIELD_MANAGER_BYTES} "
                                                  "bytes")])
        if not manager.isprintable():
            raise Invalid(what, [("fieldManager", f"Invalid value: {manager!r}: must consist of printable "
                                                  "characters")])
        if manager:
            return manager
    agent = headers.get("User-Agent", "").split("/", 1)[0]
    agent = "".join(c for c in agent if c.isprintable())
    return agent.encode()[:MAX_FIELD_MANAGER_BYTES].decode(errors="ignore")


def apply(kind: kinds.Kind, current: dict[str, Any], body: bytes, content_type: str) -> dict[str, Any]:
    """A JSON, merge or strategic merge patch applied to an object's JSON (patch.py; 415 for other types)."""
    return patch.apply_patch(kind, current, body, content_type)


def transform(kind: kinds.Kind, body: bytes, content_type: str, query: Mapping[str, str], validation: str,
              warnings: list[str], *, manager: str, subresource: str = "") -> Transform:
    """What a PATCH does to the stored object (None: there is none, which only apply may create)."""
    media = media_type(content_type)
    if media == APPLY_PATCH:
        if not query.get("fieldManager"):
            raise BadRequest("PATCH /apply requires fieldManager to be set")
        force = _force(query)
        applied = codec.load(body, media)

        def apply_config(current: Message | None) -> Message:
            live = codec.object_dict(current) if current is not None else None
            merged = fieldmanager.apply(kind, live, copy.deepcopy(applied), manager, force, subresource=subresource)
            obj, found = codec.to_object(kind, merged, validation)
            warnings[:] = found
            return obj
        return apply_config
    if media not in patch.PATCH_TYPES:
        raise patch.unsupported_media_type()
    if "force" in query:
        raise Invalid('PatchOptions.meta.k8s.io ""', [("force", "Forbidden: may not be specified for non-apply "
                                                                "patch")])

    def patch_object(current: Message | None) -> Message:
        if current is None:  # only apply creates; the request core never asks others to
            raise BadRequest("a patch needs an object to patch")
        patched = apply(kind, codec.object_dict(current), body, media)
        obj, found = codec.to_object(kind, patched, validation)
        warnings[:] = found
        return track(kind, current, obj, manager, subresource=subresource)
    return patch_object


def _force(query: Mapping[str, str]) -> bool:
    value = query.get("force", "")
    if value.lower() not in ("", "true", "false", "1", "0"):
        raise BadRequest(f'force: invalid value "{value}": must be true or false')
    return value.lower() in ("true", "1")
