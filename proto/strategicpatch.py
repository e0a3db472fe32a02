"""Strategic merge patch: how `kubectl apply`, `set image`, `edit`, `cordon` ... change an object.

A JSON merge patch (RFC 7386) replaces every list it touches, so it cannot say
"set the image of the container named nginx". Kubernetes' strategic merge patch
can: the object's schema says, per list, whether a patch merges it element by
element (and by which key: containers by `name`, ports by `containerPort`) or
replaces it, and a few directives in the patch say the rest:

- `null` deletes a field; maps merge recursively;
- `$patch: replace` in a map replaces the map, `$patch: delete` deletes it; in a
  list element, `delete` removes the element with that merge key and `replace`
  replaces the whole list with the patch's elements;
- `$setElementOrder/<list>` gives the order of a merged list (kubectl apply sends
  it for every list it patches);
- `$retainKeys` (fields tagged retainKeys, e.g. a Deployment's strategy) clears
  every field of the map it does not name;
- `$deleteFromPrimitiveList/<list>` removes values from a merged list of values
  (finalizers).

The rules are Kubernetes' documented ones (the community "strategic merge patch"
page and the "preserve order" proposal), error texts included; the schema is
Flotilla's .proto tags, read through proto/patchmeta.py. A field the schema does
not know is merged as a map or replaced as a list. Everything here works on
Kubernetes-JSON dicts and never mutates its arguments.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from typing import Any

from proto import patchmeta
from proto.errors import BadRequest, Invalid

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
SET_ELEMENT_ORDER = "$setElementOrder/"
DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList/"

# Kubernetes' message for a patch it understands but cannot apply to this object (HTTP 422).
UNPROCESSABLE = "the server rejected our request due to an error in our request"

# A message descriptor, or None where the schema says nothing (map values, unknown fields).
Schema = Any
_MISSING = object()


def unprocessable(detail: str) -> Invalid:
    """A 422 as Kubernetes words it for a patch that does not apply, with the reason as its one cause."""
    error = Invalid("", [("", detail)])
    error.message = UNPROCESSABLE
    error.args = (UNPROCESSABLE,)
    return error


def strategic_merge_patch(original: dict[str, Any], patch: Any, schema: Schema) -> dict[str, Any]:
    """`original` with `patch` merged in by the strategic rules of `schema` (a message, its class or descriptor).

    Raises BadRequest for a malformed patch and Invalid (422) for one whose
    content contradicts itself; neither argument is changed.
    """
    if not isinstance(patch, dict):
        raise BadRequest(f"a strategic merge patch must be a JSON object, got {json_type(patch)}")
    desc = getattr(schema, "DESCRIPTOR", schema)
    return _merge_map(copy.deepcopy(original), copy.deepcopy(patch), desc)


def json_type(value: Any) -> str:
    """How an error names a JSON value's type: 'an object', 'a list', ..."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def field_schema(desc: Schema, field: str) -> tuple[patchmeta.PatchMeta, Schema]:
    """A field's tags and its (element's) message descriptor; nothing for fields the schema does not declare."""
    if desc is None:
        return patchmeta.NONE, None
    try:
        return patchmeta.lookup(desc, field), patchmeta.element(desc, field)
    except KeyError:
        return patchmeta.NONE, None


def _replaces(meta: patchmeta.PatchMeta) -> bool:
    return "replace" in meta.strategy.split(",")


def _merge_map(original: dict[str, Any], patch: dict[str, Any], desc: Schema) -> dict[str, Any]:
    """Merge `patch` into `original` (both owned by the caller) and return the result."""
    if DIRECTIVE in patch:
        directive = patch.pop(DIRECTIVE)
        if directive == "replace":
            return _merge_map({}, patch, desc)  # the patch's own map, its directives resolved
        if directive == "delete":
            return {}
        if directive != "merge":
            raise BadRequest(f"unknown patch type: {directive} in map: {_show(patch)}")
    if RETAIN_KEYS in patch:
        _retain_keys(original, patch, patch.pop(RETAIN_KEYS))

    orders = {key[len(SET_ELEMENT_ORDER):]: patch.pop(key) for key in list(patch)
              if key.startswith(SET_ELEMENT_ORDER)}
    deletions = {key[len(DELETE_FROM_PRIMITIVE_LIST):]: patch.pop(key) for key in list(patch)
                 if key.startswith(DELETE_FROM_PRIMITIVE_LIST)}
    unknown = sorted(key for key in patch if key.startswith("$"))
    if unknown:
        raise BadRequest(f"unknown patch directive {unknown[0]!r}: a strategic merge patch knows "
                         f"{DIRECTIVE}, {RETAIN_KEYS}, {SET_ELEMENT_ORDER}<list> and "
                         f"{DELETE_FROM_PRIMITIVE_LIST}<list>")

    for field, values in deletions.items():
        if not isinstance(values, list) or any(isinstance(v, (dict, list)) for v in values):
            raise BadRequest("invalid patch format of primitive list")
        current = original.get(field)
        if isinstance(current, list):
            original[field] = [v for v in current if v not in values]

    for field, value in patch.items():
        meta, sub = field_schema(desc, field)
        if value is None:
            original.pop(field, None)
            continue
        current = original.get(field, _MISSING)
        if isinstance(value, dict):
            if isinstance(value.get(DIRECTIVE), str) and value[DIRECTIVE] == "delete":
                original.pop(field, None)  # "$patch: delete" on a map deletes the map
            elif isinstance(current, dict) and not _replaces(meta):
                original[field] = _merge_map(current, value, sub)
            else:  # new, replaced, or of another type: the patch's value, its directives resolved
                original[field] = _merge_map({}, value, sub)
        elif isinstance(value, list):
            base = current if isinstance(current, list) else []
            original[field] = _merge_list(base, value, meta, sub, field, orders.pop(field, None))
        else:
            original[field] = value

    # Orders for lists the patch reorders without changing them.
    for field, order in orders.items():
        current = original.get(field)
        if isinstance(current, list):
            meta, sub = field_schema(desc, field)
            original[field] = _merge_list(current, [], meta, sub, field, order)
    return original


def _retain_keys(original: dict[str, Any], patch: dict[str, Any], retain: Any) -> None:
    """Clear every field of `original` that `$retainKeys` does not name (a union type switching members)."""
    if retain is None:
        retain = []
    if not isinstance(retain, list) or any(not isinstance(k, str) for k in retain):
        raise BadRequest("invalid patch format of retainKeys")
    # A patch may not set what it says it does not keep.
    for key, value in patch.items():
        if not key.startswith("$") and value is not None and key not in retain:
            raise unprocessable("patch content doesn't match retainKeys list")
    for key in list(original):
        if key not in retain:
            del original[key]


def _merge_list(original: list[Any], patch: list[Any], meta: patchmeta.PatchMeta, sub: Schema, field: str,
                order: Any) -> list[Any]:
    """Merge or replace a list as its tags say, then order it."""
    if order is not None and not isinstance(order, list):
        raise BadRequest("invalid patch format of setElementOrder list")
    if not meta.merges:
        if order is None:
            return patch
        # A replaced list takes the patch's elements; $setElementOrder still orders them.
        original = []
    if not original and not patch:
        return []

    items = original + patch + (order or [])
    if all(isinstance(item, dict) for item in items):
        if not meta.merge_key:
            if not meta.merges:
                return patch
            raise BadRequest(f"cannot merge lists without merge key for {field}")
        return _merge_map_list(original, patch, meta.merge_key, sub, order)
    if any(isinstance(item, (dict, list)) for item in items):
        if any(isinstance(item, list) for item in items):
            raise unprocessable("lists of lists are not supported")
        raise BadRequest(f"invalid patch format of {field}: a list mixes objects and values")
    return _merge_value_list(original, patch, order)


def _merge_value_list(original: list[Any], patch: list[Any], order: list[Any] | None) -> list[Any]:
    """A merged list of values is the union of both, each value once."""
    merged: list[Any] = []
    for value in original + patch:
        if value not in merged:
            merged.append(value)
    wanted = order if order is not None else patch
    if order is not None:
        _check_order(patch, order, lambda v: v)
    return _ordered(merged, wanted, original, lambda v: v)


def _merge_map_list(original: list[Any], patch: list[dict[str, Any]], key: str, sub: Schema,
                    order: list[Any] | None) -> list[Any]:
    """Merge lists of objects element by element, matched by the merge key."""
    plain: list[dict[str, Any]] = []
    replace = False
    for item in patch:
        directive = item.get(DIRECTIVE, _MISSING)
        if directive is _MISSING:
            plain.append(item)
        elif directive == "delete":
            if key not in item:
                raise BadRequest(f"map: {_show(item)} does not contain declared merge key: {key}")
            original = [e for e in original if not (isinstance(e, dict) and e.get(key) == item[key])]
        elif directive == "replace":
            replace = True  # the list becomes the patch's other elements
        elif directive == "merge":
            raise BadRequest("merging lists cannot yet be specified in the patch")
        else:
            raise BadRequest(f"unknown patch type: {directive} in map: {_show(item)}")
    if replace:
        original, plain = [_merge_map({}, item, sub) for item in plain], []

    def merge_key(item: Any) -> Any:
        return item.get(key, _MISSING) if isinstance(item, dict) else _MISSING

    merged = list(original)
    for item in plain:
        if key not in item:
            raise BadRequest(f"map: {_show(item)} does not contain declared merge key: {key}")
        at = next((i for i, e in enumerate(merged) if merge_key(e) == item[key]), None)
        if at is None:
            merged.append(_merge_map({}, item, sub))
        else:
            merged[at] = _merge_map(merged[at], item, sub)

    if order is not None:
        if any(not isinstance(e, dict) or key not in e for e in order):
            raise BadRequest("invalid patch format of setElementOrder list")
        _check_order(plain, order, merge_key)
    return _ordered(merged, order if order is not None else plain, original, merge_key)


def _check_order(patch: Sequence[Any], order: Sequence[Any], ident: Callable[[Any], Any]) -> None:
    """The patch's elements must appear in `$setElementOrder`, in the same relative order."""
    wanted = [ident(e) for e in order]
    at = 0
    for item in patch:
        name = ident(item)
        while at < len(wanted) and wanted[at] != name:
            at += 1
        if at == len(wanted):
            raise BadRequest(f"the order in patch list {_show(list(patch))} doesn't match "
                             f"$setElementOrder list {_show(list(order))}")
        at += 1


def _index(order: Sequence[Any], item: Any, ident: Callable[[Any], Any]) -> int:
    name = ident(item)
    for i, element in enumerate(order):
        if ident(element) == name:
            return i
    return -1


def _ordered(merged: list[Any], wanted: Sequence[Any], live: Sequence[Any], ident: Callable[[Any], Any]) -> list[Any]:
    """Order a merged list: its patched elements as `wanted` says, the live-only ones kept where they were."""
    named = [e for e in merged if _index(wanted, e, ident) >= 0]
    live_only = [e for e in merged if _index(wanted, e, ident) < 0]
    return interleave(named, live_only, wanted, live, ident)


def interleave(named: list[Any], live_only: list[Any], wanted: Sequence[Any], live: Sequence[Any],
               ident: Callable[[Any], Any]) -> list[Any]:
    """Interleave the elements a patch names (in `wanted` order) with the live-only ones (in `live` order).

    Each keeps its own relative order; between the two, an element goes first
    only when both are in the live list and it came first there. (So an element
    new to the list comes before the live-only elements next to it, as in
    Kubernetes.) Server-side apply orders merged lists the same way.
    """
    def rank(order: Sequence[Any]) -> Callable[[Any], int]:
        def key(item: Any) -> int:
            i = _index(order, item, ident)
            return i if i >= 0 else len(order)
        return key

    right = sorted(named, key=rank(wanted))
    left = sorted(live_only, key=rank(live))
    out: list[Any] = []
    i = j = 0
    while i < len(left) or j < len(right):
        if j >= len(right):
            out.append(left[i])
            i += 1
        elif i >= len(left):
            out.append(right[j])
            j += 1
        else:
            li, ri = _index(live, left[i], ident), _index(live, right[j], ident)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out
