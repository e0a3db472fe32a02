"""Server-side apply and managedFields: which manager owns which field of an object.

Every write through the HTTP API names a field manager (`?fieldManager=`, else
the client's User-Agent). The apiserver records, in `metadata.managedFields`, the
set of fields each manager set: one entry per manager with its operation
(`Apply` for server-side apply, `Update` for create/update/patch), the API
version, the time and the fields in Kubernetes' FieldsV1 format:

    {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers":
        {"k:{\\"name\\":\\"nginx\\"}": {".": {}, "f:image": {}}}}}}}

`f:<name>` is a field or map key, `k:{...}` the element of a list keyed by its
list-map keys (containers by name, ports by containerPort and protocol),
`v:<json>` a value of a set (finalizers), and `.` marks a node that is owned
itself as well as holding owned children.

`apply` is server-side apply (`kubectl apply --server-side`, controllers that
apply): the applied configuration is merged into the live object and its fields
become the applier's; fields the applier owned before and no longer applies are
removed unless another manager owns them; changing a field another manager owns
is a 409 Conflict naming each field and manager, unless the applier forces, and
then ownership moves. `update` is the bookkeeping of every other write: the
fields it added or changed become its manager's, and every other manager loses
them (an ordinary write never conflicts).

Sets are tuples of path elements (`("f:spec", "f:replicas")`); the schema that
says which list is keyed by what is the .proto tags (`list_type`,
`list_map_keys`), read through proto/patchmeta.py as strategic merge patch does.
Fields the server owns (name, uid, resourceVersion ...) are nobody's, and a
kind's status belongs to its status subresource. Pure functions on Kubernetes
JSON dicts; the registry stores what they return. `update`'s parts (`members`
of a field, `owned`, `compare`, `record`) are public too: the HTTP API runs
them on the parts of its messages that changed (http/managedfields.py).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from proto import kinds, patchmeta
from proto.errors import BadRequest, Conflict
from proto.strategicpatch import Schema, field_schema, interleave

APPLY = "Apply"
UPDATE = "Update"
FIELDS_V1 = "FieldsV1"
# Owner of everything in an object that had no managedFields when it was first applied to.
BEFORE_FIRST_APPLY = "before-first-apply"

Path = tuple[str, ...]

# Set by the server, owned by no manager (Kubernetes strips them from every set).
SERVER_FIELDS: frozenset[Path] = frozenset({
    ("f:apiVersion",), ("f:kind",), ("f:metadata",),
    *(("f:metadata", f"f:{name}") for name in (
        "name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName", "generation",
        "managedFields", "resourceVersion")),
})
# List-map keys Kubernetes defaults, so an applied `{containerPort: 80}` is the stored `{..., protocol: TCP}`.
_KEY_DEFAULTS = {"protocol": "TCP"}
# A member that is a list element, a set value or a map itself rather than a value.
_NODE = object()


class ApplyConflict(Conflict):
    """Server-side apply would change fields other managers own; `causes` holds (field path, manager) lines."""

    def __init__(self, message: str, causes: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.causes = causes
        self.cause_type = "FieldManagerConflict"


@dataclass
class Manager:
    """One managedFields entry, its fields as a set of paths."""

    manager: str
    operation: str
    api_version: str
    time: str
    fields: set[Path] = field(default_factory=set)
    subresource: str = ""

    @property
    def identity(self) -> tuple[str, str, str, str]:
        # An applier is one entry whatever version it applied with; an updater, one per version.
        return self.manager, self.operation, "" if self.operation == APPLY else self.api_version, self.subresource

    def describe(self) -> str:
        """How Kubernetes names a manager in a conflict: `"kubectl-client-side-apply" using apps/v1`."""
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == UPDATE:
            text += f" using {self.api_version}"
        return text


# ---------------------------------------------------------------- the two operations


def apply(kind: kinds.Kind, live: dict[str, Any] | None, applied: dict[str, Any], manager: str, force: bool,
          *, subresource: str = "", now: dt.datetime | None = None) -> dict[str, Any]:
    """Server-side apply `applied` as `manager` to `live` (None: the object does not exist and is created).

    Returns the new object with metadata.managedFields updated; an apply that
    changes nothing returns `live` unchanged, timestamps included. Raises
    BadRequest for an applied configuration of another kind or carrying
    managedFields, and ApplyConflict (409) when it would change fields other
    managers own and `force` is false.
    """
    _check_applied(kind, applied, manager)
    try:
        return _apply(kind, live, applied, manager, force, subresource, now)
    except RecursionError:  # deeper than any object nests; refused, not a crash
        raise BadRequest("the applied configuration is nested too deeply") from None


def _apply(kind: kinds.Kind, live: dict[str, Any] | None, applied: dict[str, Any], manager: str, force: bool,
           subresource: str, now: dt.datetime | None) -> dict[str, Any]:
    desc = kind.message.DESCRIPTOR
    config = _without_nulls(applied)
    stamp = timestamp(now)
    base: dict[str, Any] = copy.deepcopy(live) if live is not None else {}
    managers = _decode(_entries(live)) if live is not None else []
    if live is not None and not managers:
        # Everything already there was set by someone: the first applier must not silently take it.
        managers = [Manager(BEFORE_FIRST_APPLY, UPDATE, kind.api_version, stamp,
                             set(_tracked(kind, _flatten(base, desc, maps=True), subresource)))]
    me = Manager(manager, APPLY, kind.api_version, stamp,
                  set(_tracked(kind, _flatten(config, desc, maps=False), subresource)), subresource)
    previous = next((m for m in managers if m.identity == me.identity), None)
    others = [m for m in managers if m is not previous]

    merged = _merge(base, config, patchmeta.NONE, desc)
    if previous is not None:
        _prune(merged, previous.fields - me.fields, me.fields.union(*(m.fields for m in others)), desc)

    added, modified, removed = compare(_tracked(kind, _flatten(base, desc, maps=True), subresource),
                                        _tracked(kind, _flatten(merged, desc, maps=True), subresource))
    conflicts = [(m, path) for m in others for path in sorted(m.fields & (added | modified))]
    if conflicts and not force:
        raise _conflict_error(conflicts)
    for m in others:  # forced: the conflicting fields move to the applier
        m.fields -= added | modified | removed
    managers = [m for m in [*others, me] if m.fields]
    _store(merged, managers)
    if live is not None and _same_but_times(live, merged):
        return copy.deepcopy(live)
    return merged


def update(kind: kinds.Kind, old: dict[str, Any] | None, new: dict[str, Any], manager: str,
           operation: str = UPDATE, *, subresource: str = "", now: dt.datetime | None = None) -> dict[str, Any]:
    """Record in `new`'s managedFields which fields an ordinary write (create: `old` None) set, under `manager`.

    The fields it added or changed become the manager's (entries of one manager,
    operation and version merge) and every other manager loses them. `new`
    keeps managedFields a client set itself; an empty list (or `[{}]`) clears them.
    """
    try:
        return _update(kind, old, new, manager, operation, subresource, now)
    except RecursionError:
        raise BadRequest("the object is nested too deeply") from None


def _update(kind: kinds.Kind, old: dict[str, Any] | None, new: dict[str, Any], manager: str, operation: str,
            subresource: str, now: dt.datetime | None) -> dict[str, Any]:
    desc = kind.message.DESCRIPTOR
    result = copy.deepcopy(new)
    requested = result.get("metadata", {}).get("managedFields") if isinstance(result.get("metadata"), dict) else None
    if _is_reset(requested):
        managers: list[Manager] = []
    else:
        managers = _decode(requested) if requested else []
        if not managers:  # a client that does not know managedFields must not wipe them
            managers = _decode(_entries(old))
    added, modified, removed = compare(_tracked(kind, _flatten(old or {}, desc, maps=True), subresource),
                                       _tracked(kind, _flatten(result, desc, maps=True), subresource))
    writer = Manager(manager, operation, kind.api_version, timestamp(now), set(), subresource)
    _store(result, record(managers, writer, added | modified, removed))
    return result


def record(managers: list[Manager], writer: Manager, changed: set[Path] | frozenset[Path],
           removed: set[Path] | frozenset[Path]) -> list[Manager]:
    """The entries after an ordinary write by `writer` that added or modified `changed` and removed `removed`.

    The writer's entry (one per manager, operation, version and subresource) gains
    what changed and the write's time; every other entry loses it; everyone loses
    what was removed. Entries left with no fields go. `managers` is changed in place.
    """
    for m in managers:
        m.fields -= removed if m.identity == writer.identity else changed | removed
    if changed:
        entry = next((m for m in managers if m.identity == writer.identity), None)
        if entry is None:
            managers.append(entry := writer)
        entry.fields |= changed
        entry.time = writer.time
    return [m for m in managers if m.fields]


# ---------------------------------------------------------------- the applied configuration


def _check_applied(kind: kinds.Kind, applied: Any, manager: str) -> None:
    if not manager:
        raise BadRequest("fieldManager is required for apply requests")
    if not isinstance(applied, dict):
        raise BadRequest("error decoding YAML: an applied configuration must be an object")
    if applied.get("apiVersion") != kind.api_version:
        raise BadRequest(f"Incorrect version specified in apply patch. Specified patch version: "
                         f"{applied.get('apiVersion', '')}, expected: {kind.api_version}")
    if applied.get("kind") != kind.kind:
        raise BadRequest(f"Incorrect kind specified in apply patch. Specified patch kind: "
                         f"{applied.get('kind', '')}, expected: {kind.kind}")
    metadata = applied.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise BadRequest("metadata must be an object")
    if metadata and metadata.get("managedFields") is not None:
        raise BadRequest("metadata.managedFields must be nil")


def _without_nulls(value: Any) -> Any:
    """An applied `null` says nothing: it neither sets nor owns the field."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


def _merge(live: Any, applied: Any, meta: patchmeta.PatchMeta, desc: Schema) -> Any:
    """The applied configuration over the live object: maps merge, keyed lists and sets merge, the rest is replaced."""
    if isinstance(applied, dict) and isinstance(live, dict):
        out = dict(live)
        for key, value in applied.items():
            sub_meta, sub = schema(desc, key)
            out[key] = _merge(live[key], value, sub_meta, sub) if key in live else copy.deepcopy(value)
        return out
    if isinstance(applied, list) and isinstance(live, list):
        if _is_list_map(meta, live + applied):
            def ident(item: Any) -> str:
                return _key_element(item, meta.list_map_keys)
            wanted = {ident(item): item for item in applied}
            merged = [_merge(item, wanted[ident(item)], patchmeta.NONE, desc) if ident(item) in wanted else item
                      for item in live]
            have = {ident(item) for item in live}
            merged += [copy.deepcopy(item) for item in applied if ident(item) not in have]
            return interleave([i for i in merged if ident(i) in wanted], [i for i in merged if ident(i) not in wanted],
                              applied, live, ident)
        if _is_set(meta, live + applied):
            union = live + [v for v in applied if v not in live]
            return interleave([v for v in union if v in applied], [v for v in union if v not in applied],
                              applied, live, lambda v: v)
    return copy.deepcopy(applied)


def _prune(obj: dict[str, Any], dropped: set[Path], owned: set[Path], desc: Schema) -> None:
    """Remove the fields an applier stopped applying, keeping any that someone (or something below them) owns."""
    kept = {path[:n] for path in owned for n in range(1, len(path) + 1)}
    # Shallowest first: an element goes whole, before its key fields could be taken from under it.
    for path in sorted(dropped - kept, key=len):
        _remove(obj, path, desc)


def _remove(obj: dict[str, Any], path: Path, desc: Schema) -> None:
    node: Any = obj
    meta = patchmeta.NONE
    for i, element in enumerate(path):
        last = i == len(path) - 1
        kind, _, text = element.partition(":")
        if kind == "f" and isinstance(node, dict) and text in node:
            if last:
                del node[text]
                return
            meta, desc = schema(desc, text)
            node = node[text]
        elif kind == "k" and isinstance(node, list):
            at = next((n for n, item in enumerate(node)
                       if isinstance(item, dict) and _key_element(item, meta.list_map_keys) == element), None)
            if at is None:
                return
            if last:
                del node[at]
                return
            node, meta = node[at], patchmeta.NONE
        elif kind == "v" and last and isinstance(node, list):
            value = json.loads(text)
            node[:] = [v for v in node if v != value]
            return
        else:
            return  # already gone


# ---------------------------------------------------------------- field sets


def _flatten(obj: dict[str, Any], desc: Schema, *, maps: bool) -> dict[Path, Any]:
    """Every member of an object's field set, with its value (`_NODE` for list elements, set values and maps).

    Leaves are values: scalars, atomic lists, empty maps. With `maps`, a map (labels,
    annotations, data) is a member too, as Kubernetes records it for ordinary writes.
    """
    out: dict[Path, Any] = {}
    _walk_fields(obj, desc, (), out, maps, is_map=False)
    return out


def _walk_fields(obj: dict[str, Any], desc: Schema, prefix: Path, out: dict[Path, Any], maps: bool,
                 *, is_map: bool) -> None:
    if not obj:
        if prefix:
            out[prefix] = {}
        return
    if maps and is_map and prefix:
        out[prefix] = _NODE
    for key, value in obj.items():
        if value is not None:
            meta, sub = schema(desc, key)
            _walk_value(value, meta, sub, (*prefix, f"f:{key}"), out, maps)


def _walk_value(value: Any, meta: patchmeta.PatchMeta, sub: Schema, path: Path, out: dict[Path, Any],
                maps: bool) -> None:
    if isinstance(value, dict):
        _walk_fields(value, sub, path, out, maps, is_map=sub is None)
    elif isinstance(value, list) and value and _is_list_map(meta, value):
        for item in value:
            item_path = (*path, _key_element(item, meta.list_map_keys))
            out[item_path] = _NODE
            _walk_fields(item, sub, item_path, out, maps, is_map=False)
    elif isinstance(value, list) and value and _is_set(meta, value):
        for item in value:
            out[(*path, f"v:{_json(item)}")] = _NODE
    else:
        out[path] = value


def _is_list_map(meta: patchmeta.PatchMeta, items: list[Any]) -> bool:
    return meta.list_type == "map" and bool(meta.list_map_keys) and all(isinstance(i, dict) for i in items)


def _is_set(meta: patchmeta.PatchMeta, items: list[Any]) -> bool:
    return meta.list_type == "set" and not any(isinstance(i, (dict, list)) for i in items)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _key_element(item: dict[str, Any], keys: Iterable[str]) -> str:
    """`k:{"containerPort":80,"protocol":"TCP"}`: an element by its list-map keys, in name order."""
    key = {name: item.get(name, _KEY_DEFAULTS.get(name)) for name in keys}
    return "k:" + _json({name: v for name, v in key.items() if v is not None})


def schema(desc: Schema, name: str) -> tuple[patchmeta.PatchMeta, Schema]:
    """A field's tags and its (element's) message descriptor (strategicpatch.field_schema, remembered)."""
    if desc is None:  # inside a map or a raw JSON value: the names are data, not schema
        return patchmeta.NONE, None
    return _schema(desc, name)


@lru_cache(maxsize=4096)
def _schema(desc: Schema, name: str) -> tuple[patchmeta.PatchMeta, Schema]:
    # field_schema searches the message's fields by name; a pod's walk asks ~60 times.
    return field_schema(desc, name)


def members(value: Any, desc: Schema, name: str, path: Path) -> dict[Path, Any]:
    """The members (with values) an ordinary write records for field `name` of a `desc` message at `path`.

    `value` is the field's JSON; maps are members too, as in `update`.
    """
    out: dict[Path, Any] = {}
    meta, sub = schema(desc, name)
    _walk_value(value, meta, sub, path, out, True)
    return out


def reachable(kind: kinds.Kind, subresource: str, name: str) -> bool:
    """Whether a write through this endpoint can own anything under the object's top-level field `name`."""
    if name in ("apiVersion", "kind"):
        return False
    if subresource == "status":
        return name == "status"
    return not (kind.has_status and name == "status")


def owned(kind: kinds.Kind, subresource: str, path: Path) -> bool:
    """Whether a write through this endpoint can own this member: not the server's, status only through status."""
    if path in SERVER_FIELDS:
        return False
    if subresource == "status":
        return path[0] == "f:status"
    return not (kind.has_status and path[0] == "f:status")


def _tracked(kind: kinds.Kind, flat: dict[Path, Any], subresource: str) -> dict[Path, Any]:
    """The members a write through this endpoint can own."""
    return {path: value for path, value in flat.items() if owned(kind, subresource, path)}


def compare(old: dict[Path, Any], new: dict[Path, Any]) -> tuple[set[Path], set[Path], set[Path]]:
    """(added, modified, removed) members between two flattened objects (or the same parts of both)."""
    added = new.keys() - old.keys()
    removed = old.keys() - new.keys()
    modified = {p for p in new.keys() & old.keys() if new[p] is not _NODE and new[p] != old[p]}
    return set(added), modified, set(removed)


def path_string(path: Path) -> str:
    """A path as Kubernetes prints it in conflicts: `.spec.template.spec.containers[name="nginx"].image`."""
    parts = []
    for element in path:
        kind, _, text = element.partition(":")
        if kind == "f":
            parts.append(f".{text}")
        elif kind == "k":
            parts.append("[" + ",".join(f"{k}={_json(v)}" for k, v in json.loads(text).items()) + "]")
        elif kind == "v":
            parts.append(f"[={text}]")
        else:
            parts.append(f"[{text}]")
    return "".join(parts)


def _conflict_error(conflicts: list[tuple[Manager, Path]]) -> ApplyConflict:
    causes = [(path_string(path), f"conflict with {m.describe()}") for m, path in conflicts]
    if len(conflicts) == 1:
        m, path = conflicts[0]
        return ApplyConflict(f"Apply failed with 1 conflict: conflict with {m.describe()}: {path_string(path)}",
                             causes)
    lines: list[str] = []
    for m in sorted({m.identity: m for m, _ in conflicts}.values(), key=lambda m: m.identity):
        lines.append(f"conflicts with {m.describe()}:")
        lines += [f"- {path_string(path)}" for other, path in conflicts if other is m]
    return ApplyConflict(f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines), causes)


# ---------------------------------------------------------------- metadata.managedFields


def timestamp(now: dt.datetime | None = None) -> str:
    """A managedFields entry's time: now (or `now`) to the second, as Kubernetes records it."""
    if now is None:
        return _second(int(time.time()))
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=2)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))  # every write in one second shares it


def _entries(obj: dict[str, Any] | None) -> Any:
    metadata = (obj or {}).get("metadata")
    return metadata.get("managedFields") if isinstance(metadata, dict) else None


def _is_reset(entries: Any) -> bool:
    """`managedFields: []` or `[{}]` in a write clears them (Kubernetes' documented way to strip them)."""
    return isinstance(entries, list) and (entries == [] or entries == [{}])


def _decode(entries: Any) -> list[Manager]:
    """managedFields as entries; anything malformed counts as none, as in Kubernetes."""
    if not isinstance(entries, list):
        return []
    managers: list[Manager] = []
    try:
        for entry in entries:
            if entry.get("fieldsType", FIELDS_V1) != FIELDS_V1 or entry.get("operation") not in (APPLY, UPDATE):
                return []
            managers.append(Manager(str(entry["manager"]), entry["operation"], str(entry.get("apiVersion", "")),
                                     str(entry.get("time") or ""), _paths(entry.get("fieldsV1") or {}, ()),
                                     str(entry.get("subresource") or "")))
    except (AttributeError, KeyError, TypeError, ValueError):
        return []
    return managers


def _paths(tree: dict[str, Any], prefix: Path) -> set[Path]:
    if not isinstance(tree, dict):
        raise ValueError("fieldsV1 nodes are objects")
    paths: set[Path] = set()
    for element, child in tree.items():
        if element == ".":
            paths.add(prefix)
        elif not child:
            paths.add((*prefix, element))
        else:
            paths |= _paths(child, (*prefix, element))
    return paths


def paths(tree: Any) -> set[Path]:
    """A FieldsV1 tree's paths (`fields_v1` backwards); ValueError if it is not one."""
    return _paths(tree, ())


def fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    """A set of paths in FieldsV1 form: nested `f:`/`k:`/`v:` objects, `.` where a node is owned and has children.

    Keys are in name order at every level: paths are inserted sorted, and "." (which
    sorts before "f:", "k:" and "v:") goes in first wherever a member is a node.
    """
    root: dict[str, Any] = {}
    nodes = []
    for path in sorted(set(paths)):
        node = root
        for element in path:
            node = node.setdefault(element, {})
        node["."] = {}  # a member; it stays only if children follow
        nodes.append(node)
    for node in nodes:
        if len(node) == 1:
            del node["."]
    return root


def ordered(managers: Iterable[Manager]) -> list[Manager]:
    """Entries in Kubernetes' order: Apply before Update, then oldest first."""
    return sorted(managers, key=lambda m: (m.operation, m.time, m.manager, m.api_version, m.subresource))


def _store(obj: dict[str, Any], managers: list[Manager]) -> None:
    """Write the entries into the object's metadata, in order."""
    entries = []
    for m in ordered(managers):
        entry = {"manager": m.manager, "operation": m.operation, "apiVersion": m.api_version, "time": m.time,
                 "fieldsType": FIELDS_V1, "fieldsV1": fields_v1(m.fields)}
        if not m.time:  # an entry a client wrote without one keeps none (time is optional)
            del entry["time"]
        if m.subresource:
            entry["subresource"] = m.subresource
        entries.append(entry)
    metadata = obj.setdefault("metadata", {})
    if entries:
        metadata["managedFields"] = entries
    else:
        metadata.pop("managedFields", None)


def _same_but_times(live: dict[str, Any], result: dict[str, Any]) -> bool:
    """Whether a write changed nothing but managedFields timestamps (then nothing is written, as in Kubernetes)."""
    def timeless(obj: dict[str, Any]) -> Any:
        entries = _entries(obj) or []
        rest = {k: v for k, v in obj.items() if k != "metadata"}
        metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
        return rest, metadata, [{k: v for k, v in e.items() if k != "time"} for e in entries if isinstance(e, dict)]
    return bool(timeless(live) == timeless(result))
