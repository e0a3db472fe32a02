"""PATCH bodies: the three patch types Kubernetes' HTTP API accepts besides server-side apply.

A PATCH names its patch type in its Content-Type, and each client picks one:

- `application/json-patch+json` — RFC 6902 operations (`kubectl rollout undo`,
  `kubectl patch --type json`, the Python client given a list), applied with the
  `jsonpatch` library;
- `application/merge-patch+json` — RFC 7386 (`kubectl label`, `annotate`,
  `scale`): maps merge, `null` deletes, lists are replaced;
- `application/strategic-merge-patch+json` — Kubernetes' own, lists merged by
  their merge keys (`kubectl apply`, `set image`, `edit`, `cordon`, the Python
  client given a dict): proto/strategicpatch.py.

`application/apply-patch+yaml` (server-side apply) is not a patch of the object
but an applied configuration with an owner: the HTTP layer decodes it and hands
it to fieldmanager.apply. Any other type is a 415.

`apply_patch` only computes the patched object. The registry then validates it as
an update, so a patch cannot change an immutable field or an object's name
behind the registry's back.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer
import orjson

from proto import kinds
from proto.errors import BadRequest, TooLarge, UnsupportedMediaType
from proto.strategicpatch import json_type, strategic_merge_patch, unprocessable

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
# What a PATCH endpoint accepts, in the order Kubernetes lists them in its 415.
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)
# Kubernetes refuses longer JSON patches before applying any of them.
MAX_JSON_PATCH_OPERATIONS = 10000
_OPERATIONS = ("add", "remove", "replace", "move", "copy", "test")


def media_type(content_type: str) -> str:
    """The patch type a Content-Type names: parameters (`; charset=utf-8`) dropped, lower case."""
    return content_type.split(";", 1)[0].strip().lower()


def unsupported_media_type() -> UnsupportedMediaType:
    """Kubernetes' 415 for a PATCH whose body is none of the patch types."""
    return UnsupportedMediaType("the body of the request was in an unknown format - accepted media types include: "
                                + ", ".join(PATCH_TYPES))


def apply_patch(kind: kinds.Kind, current: dict[str, Any], body: bytes, content_type: str) -> dict[str, Any]:
    """The object `current` (Kubernetes JSON) with the patch in `body` applied; `current` is not changed.

    Raises BadRequest for a malformed patch, Invalid (422) for one that does not
    apply to this object (a failed JSON-patch `test`, a missing path),
    TooLarge for over 10,000 JSON-patch operations, and UnsupportedMediaType for
    any other Content-Type. Server-side apply is fieldmanager.apply's, not this.
    """
    try:
        return _apply(kind, current, body, media_type(content_type))
    except RecursionError:  # a patch nested deeper than any object; refused, not a crash
        raise BadRequest("the patch is nested too deeply") from None


def _apply(kind: kinds.Kind, current: dict[str, Any], body: bytes, patch_type: str) -> dict[str, Any]:
    if patch_type == JSON_PATCH:
        return _json_patch(current, _decode_json(body, "JSON patch"))
    if patch_type == MERGE_PATCH:
        patch = _decode_json(body, "merge patch")
        if not isinstance(patch, dict):
            raise BadRequest(f"a merge patch must be a JSON object, got {json_type(patch)}")
        return _merge_patch(copy.deepcopy(current), patch)
    if patch_type == STRATEGIC_MERGE_PATCH:
        return strategic_merge_patch(current, _decode_json(body, "strategic merge patch"), kind.message)
    raise unsupported_media_type()


def _decode_json(body: bytes, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the {what} is not valid JSON: {exc}") from exc


def _json_patch(current: dict[str, Any], operations: Any) -> dict[str, Any]:
    """RFC 6902: malformed operations are a 400; operations that do not fit the object a 422."""
    if not isinstance(operations, list):
        raise BadRequest(f"a JSON patch must be a list of operations, got {json_type(operations)}")
    if len(operations) > MAX_JSON_PATCH_OPERATIONS:
        raise TooLarge(f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, "
                       f"got {len(operations)}")
    for i, op in enumerate(operations):
        _check_operation(i, op)
    patched: Any = copy.deepcopy(current)
    # One operation at a time, so a failure names its operation and path (and never the object's content).
    for op in operations:
        try:
            patched = jsonpatch.JsonPatch([op]).apply(patched, in_place=True)
        except jsonpatch.InvalidJsonPatch as exc:
            raise BadRequest(f"invalid JSON patch: {exc}") from exc
        except jsonpatch.JsonPatchTestFailed as exc:
            raise unprocessable(f"testing value {op['path']} failed") from exc
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            where = op["path"] if op["op"] not in ("move", "copy") else f"{op['from']} (from)"
            raise unprocessable(f"jsonpatch {op['op']} operation does not apply: doc is missing path: {where}") \
                from exc
    if not isinstance(patched, dict):
        raise unprocessable(f"the patched document is {json_type(patched)}, not an object")
    return patched


def _check_operation(i: int, op: Any) -> None:
    """One operation's shape, checked before any is applied so the error names the bad one."""
    where = f"operation {i}"
    if not isinstance(op, dict):
        raise BadRequest(f"invalid JSON patch: {where} is {json_type(op)}, not an object")
    name = op.get("op")
    if name not in _OPERATIONS:
        raise BadRequest(f"invalid JSON patch: {where} has op {name!r}, not one of {', '.join(_OPERATIONS)}")
    if not isinstance(op.get("path"), str):
        raise BadRequest(f'invalid JSON patch: {where} ({name}) needs a "path" string')
    if name in ("add", "replace", "test") and "value" not in op:
        raise BadRequest(f'invalid JSON patch: {where} ({name}) needs a "value"')
    if name in ("move", "copy") and not isinstance(op.get("from"), str):
        raise BadRequest(f'invalid JSON patch: {where} ({name}) needs a "from" string')


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: an object patch merges key by key (null deletes); anything else replaces the target."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge_patch(merged.get(key), value)
    return merged
