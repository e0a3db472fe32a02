"""managedFields of the HTTP API's ordinary writes, computed on the messages the handlers hold.

Every create, update and patch through the HTTP API records what it changed
under its field manager (patching.py reads which one). What is recorded is
fieldmanager.py's `update` on the JSON of the object as stored and as written;
this module gets the same answer without converting and walking both whole
objects, which cost more than the rest of an HTTP create together:

- only fields that differ between the two messages are converted and walked
  (a status write or an annotation change touches a few members); equal fields
  have equal members, which no comparison reports;
- a create owns every member of what it sent: a top-level field's members are
  remembered by the field's bytes (metadata without what the server sets), so
  the replicas of a template, which share a spec and all but their names,
  find them instead of walking them;
- entries are decoded from and encoded to their FieldsV1 bytes through tables
  by those bytes and by the set of paths, and built as messages.

tests/test_fieldmanager.py requires the very message `update` on the JSON gives,
for random objects and changes of every kind.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Generic, TypeVar

import orjson
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from controlplane.apiserver import fieldmanager
from controlplane.apiserver.fieldmanager import Path
from controlplane.apiserver.http import codec
from proto import kinds, manifest
from proto.errors import BadRequest

K = TypeVar("K")
V = TypeVar("V")


class FieldSets(Generic[K, V]):
    """A table of field sets (or what is made from them), bounded by the paths it holds, not by entries.

    A pod's set is ~40 paths (~12 KB as tuples of strings), a big ConfigMap's
    thousands: a bound in entries would let a few big objects hold tens of MB in
    the apiserver. Started afresh when full (the sets of a cluster's templates and
    busy objects come back at once).
    """

    def __init__(self, max_paths: int) -> None:
        self.max_paths = max_paths
        self.paths = 0
        self._table: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._table.get(key)

    def put(self, key: K, value: V, paths: int) -> V:
        if paths <= self.max_paths // 8:  # a set too big to share the table is made each time
            if self.paths + paths > self.max_paths:
                self._table.clear()
                self.paths = 0
            self._table[key] = value
            self.paths += paths
        return value


def track(kind: kinds.Kind, old: Message | None, new: Message, manager: str, *, subresource: str = "") -> Message:
    """`new` with its managedFields recording what this write (by `manager`) changed from `old`.

    `fieldmanager.update` on the two objects' JSON, computed on the messages: only
    the fields that differ are converted and walked, a created object's fields are
    remembered by their bytes (a template's replicas own the same ones), and the
    entries are built as messages. Nothing is recorded without a manager
    (Kubernetes lets such writes through too).
    """
    if not manager:
        return new
    try:
        return _track(kind, old, new, manager, subresource)
    except RecursionError:
        raise BadRequest("the object is nested too deeply") from None


def _track(kind: kinds.Kind, old: Message | None, new: Message, manager: str, subresource: str) -> Message:
    requested = new.metadata.managed_fields  # type: ignore[attr-defined]
    managers: list[fieldmanager.Manager] = []
    if not (len(requested) == 1 and not requested[0].ListFields()):  # `[{}]` clears them
        managers = _decode(requested)
        if not managers and old is not None:  # a client that does not know managedFields must not wipe them
            managers = _decode(old.metadata.managed_fields)  # type: ignore[attr-defined]
    if old is None:
        added: set[Path] | frozenset[Path] = _created(kind, subresource, new)
        modified: set[Path] = set()
        removed: set[Path] = set()
    else:
        before: dict[Path, Any] = {}
        after: dict[Path, Any] = {}
        _changed_members(kind, subresource, old, new, (), before, after)
        added, modified, removed = fieldmanager.compare(
            {p: v for p, v in before.items() if fieldmanager.owned(kind, subresource, p)},
            {p: v for p, v in after.items() if fieldmanager.owned(kind, subresource, p)})
    writer = fieldmanager.Manager(manager, fieldmanager.UPDATE, kind.api_version, fieldmanager.timestamp(), set(),
                                  subresource)
    kept = fieldmanager.record(managers, writer, added | modified, removed)
    tracked = type(new)()
    tracked.CopyFrom(new)
    entries = tracked.metadata.managed_fields  # type: ignore[attr-defined]
    del entries[:]
    for m in fieldmanager.ordered(kept):
        entry = entries.add(manager=m.manager, operation=m.operation, api_version=m.api_version,
                            fields_type=fieldmanager.FIELDS_V1, subresource=m.subresource)
        if m.time:
            entry.time.seconds, entry.time.nanos = _time_value(m.time)
        entry.fields_v1.raw = fields_v1_json(frozenset(m.fields))
    return tracked


def _decode(entries: Any) -> list[fieldmanager.Manager]:
    """Stored managedFields entries as fieldmanager's (its `_decode` of their JSON): malformed ones count as none."""
    managers = []
    for e in entries:
        if e.fields_type not in ("", fieldmanager.FIELDS_V1) or not e.manager or \
                e.operation not in (fieldmanager.APPLY, fieldmanager.UPDATE):
            return []
        try:
            fields = fields_of(e.fields_v1.raw) if e.HasField("fields_v1") else frozenset()
        except (TypeError, ValueError):
            return []
        managers.append(fieldmanager.Manager(e.manager, e.operation, e.api_version,
                                             _time_text(e.time.seconds, e.time.nanos) if e.HasField("time") else "",
                                             set(fields), e.subresource))
    return managers


@lru_cache(maxsize=256)
def _time_text(seconds: int, nanos: int) -> str:
    """A Timestamp as its JSON (entries' times repeat: whole seconds, one per write)."""
    return str(Timestamp(seconds=seconds, nanos=nanos).ToJsonString())


@lru_cache(maxsize=256)
def _time_value(text: str) -> tuple[int, int]:
    stamp = Timestamp()
    stamp.FromJsonString(text)
    return stamp.seconds, stamp.nanos


# ---------------------------------------------------------------- the members a write changed


def _plain(fd: FieldDescriptor) -> bool:
    """A singular message field whose JSON is an object of its fields (not a time, raw JSON, map or list)."""
    return (fd.message_type is not None and not fd.is_repeated
            and not fd.message_type.full_name.startswith("google.protobuf.")
            and not manifest.is_raw_json(fd.message_type))


def _equal(fd: FieldDescriptor, a: Any, b: Any) -> bool:
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        # Map containers compare through Python's Mapping (dicts of both); by key is several times faster.
        return len(a) == len(b) and all(key in b and b[key] == a[key] for key in a)
    return bool(a == b)


def _changed_members(kind: kinds.Kind, subresource: str, old: Message, new: Message, prefix: Path,
                     before: dict[Path, Any], after: dict[Path, Any]) -> None:
    """The members of `old` and `new` under the fields that differ between them (fieldmanager.members).

    Equal fields have equal members, which no comparison would report: only the rest
    is converted to JSON and walked. Non-empty messages on both sides are descended
    into field by field; anything else (a map, a list, a scalar, a message on one side
    or empty) is converted alone and walked whole.
    """
    desc = new.DESCRIPTOR
    old_fields, new_fields = dict(old.ListFields()), dict(new.ListFields())
    for fd in old_fields.keys() | new_fields.keys():
        name = fd.json_name
        if not prefix and not fieldmanager.reachable(kind, subresource, name):
            continue
        a, b = old_fields.get(fd), new_fields.get(fd)
        if a is not None and b is not None and _equal(fd, a, b):
            continue
        path = (*prefix, f"f:{name}")
        if len(path) > 1 and path in fieldmanager.SERVER_FIELDS:
            continue  # uid, resourceVersion ...: values, never anyone's
        if a is not None and b is not None and _plain(fd) and a.ListFields() and b.ListFields():
            _changed_members(kind, subresource, a, b, path, before, after)
            continue
        if a is not None:
            before.update(fieldmanager.members(_field_json(old, fd), desc, name, path))
        if b is not None:
            after.update(fieldmanager.members(_field_json(new, fd), desc, name, path))


def _field_json(msg: Message, fd: FieldDescriptor) -> Any:
    """One field's JSON, as in codec.object_dict(msg), converting that field alone."""
    value = getattr(msg, fd.name)
    if _plain(fd):
        return codec.object_dict(value)
    alone = type(msg)()
    if fd.message_type is not None:  # a map, a list, a time or raw JSON
        if not fd.is_repeated:
            getattr(alone, fd.name).SetInParent()  # present even when empty (the epoch, `{}`)
        getattr(alone, fd.name).MergeFrom(value)
    elif fd.is_repeated:
        getattr(alone, fd.name).extend(value)
    else:
        setattr(alone, fd.name, value)
    return codec.object_dict(alone)[fd.json_name]


class _CreatedFields:
    """The members a create of each top-level field value records, by the value's bytes.

    The pods of a ReplicaSet share their spec and, but for name and uid, their
    metadata (labels, owner, generateName): their creates own the same fields.
    """

    def __init__(self, max_paths: int) -> None:
        self._paths: FieldSets[tuple[Any, bytes], frozenset[Path]] = FieldSets(max_paths)

    def paths(self, fd: FieldDescriptor, value: Message) -> frozenset[Path]:
        if fd.json_name == "metadata":  # what the server sets decides nothing here: leave it out of the key
            value = _without_server_fields(value)
        key = (fd, value.SerializeToString(deterministic=True))
        found = self._paths.get(key)
        if found is None:
            found = _owned_members(codec.object_dict(value), fd)
            self._paths.put(key, found, len(found))
        return found


_CREATED = _CreatedFields(20_000)
_METADATA_SERVER_FIELDS = tuple(path[1][2:] for path in fieldmanager.SERVER_FIELDS if path[0] == "f:metadata"
                                and len(path) == 2)


def _without_server_fields(metadata: Message) -> Message:
    copy = type(metadata)()
    copy.CopyFrom(metadata)
    desc = metadata.DESCRIPTOR
    for fd in desc.fields:
        if fd.json_name in _METADATA_SERVER_FIELDS:
            copy.ClearField(fd.name)
    return copy


def _owned_members(value: Any, fd: FieldDescriptor) -> frozenset[Path]:
    """A top-level field's members but the server's (what is reachable was decided before)."""
    name = fd.json_name
    return frozenset(path for path in fieldmanager.members(value, fd.containing_type, name, (f"f:{name}",))
                     if path not in fieldmanager.SERVER_FIELDS)


def _created(kind: kinds.Kind, subresource: str, new: Message) -> frozenset[Path]:
    """The members a create of `new` records (all of its own ones)."""
    parts = []
    new_json: dict[str, Any] | None = None
    for fd, value in new.ListFields():
        if not fieldmanager.reachable(kind, subresource, fd.json_name):
            continue
        if _plain(fd):
            parts.append(_CREATED.paths(fd, value))
        else:
            new_json = new_json if new_json is not None else codec.object_dict(new)
            parts.append(_owned_members(new_json[fd.json_name], fd))
    return frozenset().union(*parts)


# ---------------------------------------------------------------- FieldsV1 bytes


_DECODED: FieldSets[bytes, frozenset[Path]] = FieldSets(20_000)
_ENCODED: FieldSets[frozenset[Path], bytes] = FieldSets(20_000)


def fields_of(raw: bytes) -> frozenset[Path]:
    """The paths of a stored entry's FieldsV1 JSON bytes; ValueError if they are not FieldsV1.

    Remembered by the bytes: an object's entries are decoded again on every write to it.
    """
    found = _DECODED.get(raw)
    if found is None:
        tree = json.loads(raw) if raw else {}
        found = frozenset(fieldmanager.paths(tree or {}))
        _DECODED.put(raw, found, len(found))
    return found


def fields_v1_json(paths: frozenset[Path]) -> bytes:
    """A set of paths as the FieldsV1 bytes the registry stores (manifest.raw_json_bytes of `fields_v1`).

    Remembered by the set: the replicas of a template, and the same writer's repeated
    writes, own the same fields.
    """
    found = _ENCODED.get(paths)
    if found is None:
        tree = fieldmanager.fields_v1(paths)
        found = orjson.dumps(tree)
        # orjson writes what json.dumps writes except for non-ASCII, DEL and \u escapes: let json decide those.
        if not found.isascii() or b"\\u" in found or b"\x7f" in found:
            found = manifest.raw_json_bytes(tree)
        _ENCODED.put(paths, found, len(paths))
    return found
