"""PATCH requests: which patch the Content-Type names, turned into a transform of the stored object.

The patch algorithms are controlplane/apiserver/patch.py's (JSON patch, merge
patch, strategic merge patch) and fieldmanager.py's (server-side apply with
managedFields). This module only reads the request: the body, its
Content-Type, `fieldManager`, `force` and `fieldValidation`, and returns the
function the request core applies to the object as stored now (on every retry
after a lost race, so a patch always lands on the latest object).

Until those modules are in the tree, JSON patch and merge patch are applied
here with jsonpatch and RFC 7386, and a strategic merge patch as a merge
patch (lists replaced whole); server-side apply then needs fieldmanager.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from google.protobuf.message import Message

from controlplane.apiserver.http import codec
from proto import kinds
from proto.errors import ApiError, BadRequest

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)


class UnsupportedMediaType(ApiError):
    reason = "UnsupportedMediaType"


def _media(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _fallback(current: dict[str, Any], body: bytes, media: str) -> dict[str, Any]:
    try:
        patch = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the patch is not valid JSON: {exc}") from None
    if media == JSON_PATCH:
        import jsonpatch

        if not isinstance(patch, list):
            raise BadRequest("a JSON patch must be a list of operations")
        try:
            result = jsonpatch.apply_patch(current, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise BadRequest(f"the JSON patch cannot be applied: {exc}") from None
        if not isinstance(result, dict):
            raise BadRequest("the JSON patch must leave an object")
        return result
    if not isinstance(patch, dict):
        raise BadRequest("a merge patch must be a JSON object")
    merged: dict[str, Any] = _merge(current, patch)
    return merged


def apply(kind: kinds.Kind, current: dict[str, Any], body: bytes, content_type: str) -> dict[str, Any]:
    """A JSON, merge or strategic merge patch applied to an object's JSON."""
    media = _media(content_type)
    if media not in (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH):
        raise UnsupportedMediaType(f'the body of the request was in an unknown format - accepted media types '
                                   f'include: {", ".join(PATCH_TYPES)}')
    try:
        from controlplane.apiserver import patch
    except ImportError:
        return _fallback(current, body, media)
    result: dict[str, Any] = patch.apply_patch(kind, current, body, media)
    return result


def transform(kind: kinds.Kind, body: bytes, content_type: str, query: Any, validation: str,
              warnings: list[str]) -> Callable[[Message | None], Message]:
    """What a PATCH does to the stored object (None: there is none, which only apply may create)."""
    media = _media(content_type)
    if media == APPLY_PATCH:
        manager = query.get("fieldManager", "")
        if not manager:
            raise BadRequest("PATCH /apply requires fieldManager to be set")
        force = str(query.get("force", "")).lower() == "true"
        applied = codec.load(body, media)
        if not isinstance(applied, dict):
            raise BadRequest("an applied configuration must be an object")
        from controlplane.apiserver import fieldmanager

        def apply_config(current: Message | None) -> Message:
            live = codec.object_dict(current) if current is not None else None
            merged = fieldmanager.apply(kind, live, applied, manager, force)
            obj, found = codec.to_object(kind, merged, validation)
            warnings[:] = found
            return obj
        return apply_config
    if media not in PATCH_TYPES:
        raise UnsupportedMediaType(f'the body of the request was in an unknown format - accepted media types '
                                   f'include: {", ".join(PATCH_TYPES)}')

    def patch_object(current: Message | None) -> Message:
        assert current is not None
        patched = apply(kind, codec.object_dict(current), body, media)
        obj, found = codec.to_object(kind, patched, validation)
        warnings[:] = found
        return obj
    return patch_object
