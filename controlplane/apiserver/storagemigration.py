"""Storage migration: rewrite objects older apiservers left in etcd into today's encoding.

Flotilla stores objects as protobuf. Format 1 used Flotilla's own field numbers;
format 2 uses Kubernetes' (so kubectl's protobuf bodies decode, see proto/wire.py).
Field names did not change, so an old object is decoded with the format-1
descriptors kept in proto/legacy/storage_v1.binpb, carried over by field name
(protobuf JSON), and written back, each with a compare-and-swap on its mod revision
so a concurrent writer is never overwritten. This is Kubernetes' storage version
migration in miniature, run once by the apiserver at start-up, before it serves.

A marker key under the prefix records the format; with it present `migrate` costs
one read. Without it every object is looked at, and each is told apart by decoding
it both ways and keeping the one whose metadata.name matches its key, so a run
that stopped half way is simply run again. An object neither format explains is
left untouched and logged: never lose data to a guess.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message

from controlplane.apiserver.storage import Storage, prefix_end
from proto import kinds
from proto.errors import Conflict, NotFound

log = logging.getLogger(__name__)

FORMAT = b"2"  # the storage format this apiserver writes
MARKER = b"flotilla.storage-format"  # under the prefix, so etcd snapshots carry it; no resource has a dot
LEGACY_DESCRIPTORS = Path(__file__).resolve().parents[2] / "proto" / "legacy" / "storage_v1.binpb"
_PAGE = 500
_RETRIES = 8


@cache
def _legacy_pool() -> descriptor_pool.DescriptorPool:
    files = descriptor_pb2.FileDescriptorSet.FromString(LEGACY_DESCRIPTORS.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    return pool


@cache
def _legacy_class(full_name: str) -> type[Message]:
    return message_factory.GetMessageClass(_legacy_pool().FindMessageTypeByName(full_name))


def _kind_of(key: bytes, prefix: bytes) -> kinds.Kind | None:
    """The kind stored at `key` (`<prefix><resource>/...`); None for non-object keys (IP ranges)."""
    resource = key[len(prefix):].split(b"/", 1)[0].decode(errors="replace")
    try:
        kind = kinds.resolve(resource)
    except NotFound:  # ranges/ and anything else that is not an object
        return None
    return kind if kind.resource == resource else None


def _named(obj: Message, name: str) -> bool:
    return bool(obj.metadata.name == name)  # type: ignore[attr-defined]


def upgrade(kind: kinds.Kind, key: bytes, value: bytes) -> bytes | None:
    """The format-2 bytes for one stored value; None if it is format 2 already (or unreadable)."""
    name = key.rsplit(b"/", 1)[-1].decode(errors="replace")
    current = kind.message()
    try:
        current.ParseFromString(value)
        if _named(current, name):
            return None  # already in today's numbering
    except DecodeError:
        pass
    old = _legacy_class(kind.message.DESCRIPTOR.full_name)()
    try:
        old.ParseFromString(value)
        readable = _named(old, name)
    except DecodeError:
        readable = False
    if not readable:
        log.warning("storage migration: %s decodes in neither storage format; left as it is", key.decode())
        return None
    new = kind.message()
    # Same field names, new numbers: JSON carries the values across. Fields a
    # message lost (a Condition's observedGeneration on a ReplicaSet) are dropped.
    json_format.ParseDict(json_format.MessageToDict(old), new, ignore_unknown_fields=True)
    return new.SerializeToString(deterministic=True)


async def _migrate_key(etcd: Storage, kind: kinds.Kind, key: bytes, value: bytes, revision: int) -> bool:
    for _ in range(_RETRIES):
        upgraded = upgrade(kind, key, value)
        if upgraded is None:
            return False
        try:
            await etcd.update(key, upgraded, revision)
            return True
        except NotFound:
            return False  # deleted meanwhile: nothing left to migrate
        except Conflict:
            stored = await etcd.get(key)  # written meanwhile (an old apiserver still running): redo
            if stored is None:
                return False
            value, revision = stored.value, stored.revision
    raise Conflict(f"storage migration: {key.decode()} kept changing; retry the apiserver start")


async def migrate(etcd: Storage, prefix: bytes = b"/registry/") -> int:
    """Bring every object under `prefix` to today's storage format; returns how many were rewritten.

    Idempotent; a single read once the marker is there. On an empty store it only
    writes the marker, so that objects this apiserver writes are never taken for old ones.
    """
    marker = prefix + MARKER
    stored = await etcd.get(marker)
    if stored is not None and stored.value == FORMAT:
        return 0
    rewritten = 0
    start, end = prefix, prefix_end(prefix)
    while True:
        page = await etcd.range(start, end, limit=_PAGE)
        for item in page.items:
            kind = _kind_of(item.key, prefix) if item.key != marker else None
            if kind is not None and not kind.in_memory:
                rewritten += await _migrate_key(etcd, kind, item.key, item.value, item.revision)
        if not page.more or not page.items:
            break
        start = page.items[-1].key + b"\0"
    if stored is None:
        try:
            await etcd.create(marker, FORMAT)
        except Exception:  # another apiserver finished first
            log.info("storage migration: the format marker was written concurrently")
    else:
        await etcd.update(marker, FORMAT, stored.revision)
    if rewritten:
        log.info("storage migration: rewrote %d objects to storage format %s", rewritten, FORMAT.decode())
    return rewritten
