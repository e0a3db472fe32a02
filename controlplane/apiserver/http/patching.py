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
`Update` (`track`); server-side apply records `Apply`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from controlplane.apiserver import fieldmanager, patch
from controlplane.apiserver.fieldmanager import Path
from controlplane.apiserver.http import codec
from proto import kinds, manifest
from proto.errors import BadRequest, Invalid

JSON_PATCH = patch.JSON_PATCH
MERGE_PATCH = patch.MERGE_PATCH
STRATEGIC_MERGE_PATCH = patch.STRATEGIC_MERGE_PATCH
APPLY_PATCH = patch.APPLY_PATCH
MAX_FIELD_MANAGER_BYTES = 128  # Kubernetes' limit on a manager's name

Transform = Callable[[Message | None], Message]


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
        entry.fields_v1.raw = fieldmanager.fields_v1_json(frozenset(m.fields))
    return tracked


def _decode(entries: Any) -> list[fieldmanager.Manager]:
    """Stored managedFields entries as fieldmanager's (its `_decode` of their JSON): malformed ones count as none."""
    managers = []
    for e in entries:
        if e.fields_type not in ("", fieldmanager.FIELDS_V1) or not e.manager or \
                e.operation not in (fieldmanager.APPLY, fieldmanager.UPDATE):
            return []
        try:
            fields = fieldmanager.fields_of(e.fields_v1.raw) if e.HasField("fields_v1") else frozenset()
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
    into field by field; anything else is walked whole from its JSON (each side's,
    made at most once per message).
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
        self._paths: fieldmanager.FieldSets[tuple[Any, bytes], frozenset[Path]] = fieldmanager.FieldSets(max_paths)

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
