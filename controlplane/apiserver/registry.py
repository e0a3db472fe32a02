"""The registry: what create, update, delete, bind and watch mean for an object.

This is kube-apiserver's generic registry (its Store): it sets server-owned
metadata (uid, creationTimestamp, generation, resourceVersion), runs each write
through the kind's strategy (strategies/: defaults, validation, the status/spec
split, graceful deletion, allocations) and the admission chain (admission/),
runs graceful deletion with finalizers, and turns etcd changes into
ADDED/MODIFIED/DELETED events filtered by selectors. It never asks which kind
it holds: what differs between kinds is the strategy's. Storage is below it;
the gRPC service is above it.

One job — an object's life in storage — so one module, a little over 600 lines;
what could stand alone already does: continue tokens (pagination.py), history
compaction (storage.py), per-kind rules (strategies/), admission (admission/).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from controlplane.apiserver import admission, pagination, strategies
from controlplane.apiserver.allocators import ServiceAllocator
from controlplane.apiserver.auth import Attributes
from controlplane.apiserver.cacher import Cacher, Event, NotFresh
from controlplane.apiserver.memory import MemoryStore
from controlplane.apiserver.storage import Change, Storage, Stored, prefix_end
from controlplane.apiserver.strategies.base import spec_bytes
from controlplane.apiserver.strategies.core import bind
from controlplane.apiserver.validation.field import Errors
from proto import core_pb2, kinds
from proto.errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    Timeout,
    TooLarge,
)
from proto.selectors import FieldSelector, LabelSelector, parse_field_selector, parse_label_selector

log = logging.getLogger(__name__)

REGISTRY = b"/registry/"
MAX_OBJECT_BYTES = 3 * 1024 * 1024 // 2  # etcd's request limit is 1.5 MiB, as in Kubernetes
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# kube-apiserver's generateName alphabet: no vowels (no words) and no look-alikes.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_CONFLICT_RETRIES = 16


# A decided write, not yet made: GuaranteedUpdate runs it and retries on a lost race.
Commit = Callable[[], Awaitable[Message]]


def _key(kind: kinds.Kind, namespace: str, name: str) -> bytes:
    if kind.namespaced:
        return f"/registry/{kind.storage_resource}/{namespace}/{name}".encode()
    return f"/registry/{kind.storage_resource}/{name}".encode()


def _prefix(kind: kinds.Kind, namespace: str) -> bytes:
    if kind.namespaced and namespace:
        return f"/registry/{kind.storage_resource}/{namespace}/".encode()
    return f"/registry/{kind.storage_resource}/".encode()


def _noun(kind: kinds.Kind) -> str:
    """How Kubernetes names a resource in messages: `pods`, `deployments.apps`."""
    return kind.qualified_resource


def _now_seconds() -> int:
    return int(time.time())


class Registry:
    """Object semantics over Storage, for every kind in proto/kinds.py."""

    def __init__(self, storage: Storage, *, watch_cache_size: int = 0) -> None:
        """`watch_cache_size`: events kept per resource by the watch cache (cacher/); 0 serves every list and
        watch from etcd, as the apiserver did before it (`--watch-cache=false`)."""
        self.storage = storage
        self.cacher = (Cacher(storage, decode=self.decode, encode=self._with_version, capacity=watch_cache_size)
                       if watch_cache_size > 0 else None)
        self.memory = MemoryStore()  # metrics.k8s.io reports (kinds with in_memory=True)
        self._namespaces = admission.NamespaceLifecycle(self._stored_namespace)
        self.admission = admission.new_chain(
            namespaces=self._namespaces, stored_pods=self.stored_pods, stored_objects=self.stored_objects,
            pods_on_node=lambda node: self.stored_pods("", f"spec.nodeName={node}"),
            update_quota_status=lambda quota: self.update(
                kinds.resolve("resourcequotas"), quota.metadata.namespace, quota, subresource="status"))
        # What strategies' storage hooks may touch: Services' clusterIPs and node ports
        # (in etcd), and the namespace cache NamespaceLifecycle admission reads.
        self._store_context = strategies.StoreContext(ServiceAllocator(storage), self._namespaces.observe)

    # ---------------------------------------------------------------- codec

    def decode(self, kind: kinds.Kind, stored: Stored) -> Message:
        obj = kind.message()
        obj.ParseFromString(stored.value)
        meta = obj.metadata  # type: ignore[attr-defined]
        meta.resource_version = str(stored.revision)
        return obj

    def _decode_bytes(self, kind: kinds.Kind, raw: bytes, revision: int) -> Message:
        return self.decode(kind, Stored(b"", raw, revision))

    @staticmethod
    def _encode(obj: Message) -> bytes:
        """Bytes for etcd: resourceVersion is the key's revision, so it is not stored."""
        meta = obj.metadata  # type: ignore[attr-defined]
        version = meta.resource_version
        meta.resource_version = ""
        raw = obj.SerializeToString(deterministic=True)
        meta.resource_version = version
        if len(raw) > MAX_OBJECT_BYTES:
            raise TooLarge(f"Request entity too large: limit is {MAX_OBJECT_BYTES} bytes, "
                           f"the object is {len(raw)} bytes")
        return raw

    # ---------------------------------------------------------------- namespaces

    async def ensure(self, objects: Iterable[Message]) -> None:
        """Create the bootstrap objects that are missing; existing ones (maybe edited) stay as they are."""
        for obj in objects:
            with contextlib.suppress(AlreadyExists):
                await self.create(kinds.for_message(obj), "", obj)

    async def ensure_system_namespaces(self) -> None:
        namespaces = []
        for name in SYSTEM_NAMESPACES:
            ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
            ns.metadata.name = name
            namespaces.append(ns)
        await self.ensure(namespaces)

    async def _stored_namespace(self, name: str) -> Message | None:
        """A Namespace as stored now, for NamespaceLifecycle admission on a cache miss."""
        namespaces = kinds.resolve("namespaces")
        stored = await self.storage.get(_key(namespaces, "", name))
        return None if stored is None else self.decode(namespaces, stored)

    # ---------------------------------------------------------------- create / get

    async def create(self, kind: kinds.Kind, namespace: str, obj: Message, *, dry_run: bool = False,
                     caller: Attributes | None = None) -> Message:
        """Store a new object; `caller` is who asked (None: the apiserver itself)."""
        meta = obj.metadata  # type: ignore[attr-defined]
        request = admission.Request(admission.CREATE, kind, obj, dry_run=dry_run, caller=caller)
        if kind.in_memory:
            meta.namespace = namespace or meta.namespace
            async with self.admission.validate(request):
                return obj if dry_run else self.memory.put(kind, obj)
        if kind.namespaced:
            if meta.namespace and namespace and meta.namespace != namespace:
                raise BadRequest(f"the namespace of the object ({meta.namespace}) does not match "
                                 f"the namespace on the request ({namespace})")
            meta.namespace = namespace or meta.namespace or "default"
        else:
            meta.namespace = ""
        if not meta.name and meta.generate_name:
            meta.name = meta.generate_name + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
        obj.api_version, obj.kind = kind.api_version, kind.kind  # type: ignore[attr-defined]
        meta.uid = str(uuid.uuid4())
        meta.resource_version = ""
        meta.creation_timestamp.FromSeconds(_now_seconds())
        meta.ClearField("deletion_timestamp")
        meta.ClearField("deletion_grace_period_seconds")
        meta.generation = 1
        strategy = strategies.for_kind(kind)
        strategy.prepare_for_create(obj, caller.user if caller is not None else None)
        strategy.default(obj)
        self.admission.admit(request)
        self._raise_invalid(kind, obj, strategy.validate(kind, obj))
        key = _key(kind, meta.namespace, meta.name)
        try:
            async with self.admission.validate(request):
                if dry_run:  # admitted, quota and allocations included, but not written
                    await self._dry_allocations(strategy, obj, None)
                    return obj
                async with strategy.allocations(self._store_context, obj, None):
                    revision = await self.storage.create(key, self._encode(obj))
        except AlreadyExists:
            raise AlreadyExists(f'{_noun(kind)} "{meta.name}" already exists') from None
        meta.resource_version = str(revision)
        await strategy.after_write(self._store_context, obj)
        return obj

    async def _read(self, kind: kinds.Kind, namespace: str, name: str) -> tuple[Message, Stored]:
        if not name:
            raise BadRequest("resource name may not be empty")
        stored = await self.storage.get(_key(kind, namespace, name))
        if stored is None:
            raise NotFound(f'{_noun(kind)} "{name}" not found')
        return self.decode(kind, stored), stored

    async def get(self, kind: kinds.Kind, namespace: str, name: str) -> Message:
        if kind.in_memory:
            return self.memory.get(kind, namespace, name)
        obj, _ = await self._read(kind, namespace, name)
        return obj

    # ---------------------------------------------------------------- list

    async def list(self, kind: kinds.Kind, namespace: str, label_selector: str = "",
                   field_selector: str = "", limit: int = 0, continue_token: str = "", *,
                   skip_unreadable: bool = False, resource_version: str = "") -> tuple[list[bytes], int, str, int]:
        """(encoded items, revision, continue token, remaining count) for one page.

        Items come back encoded: a list is the apiserver's biggest job, and the
        stored bytes need no decoding unless a selector must look inside. The watch
        cache answers first pages (resourceVersion "" consistent, "0" any, N not
        older than N); etcd answers continue tokens and whatever the cache cannot.
        """
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector)
        if kind.in_memory:
            found = self.memory.list(kind, namespace, labels, fields)
            return [o.SerializeToString() for o in found], self.memory.version, "", 0
        if limit < 0:
            raise BadRequest("limit must not be negative")
        if self.cacher is not None and not continue_token and self.cacher.cacheable(kind):
            with contextlib.suppress(NotFresh):
                return await self.cacher.resource(kind).list(
                    namespace if kind.namespaced else "", labels, fields, limit, resource_version)
        selective = not (labels.empty() and fields.empty())
        prefix = _prefix(kind, namespace)
        end = prefix_end(prefix)
        start, revision = prefix, 0
        if continue_token:
            start, revision = pagination.decode_continue(continue_token, prefix)
        items: list[bytes] = []
        chunk = min(max(limit, 500), 10_000) if limit else 0
        while True:
            try:
                page = await self.storage.range(start, end, limit=chunk, revision=revision,
                                                skip_unreadable=skip_unreadable)
            except Gone:
                raise Gone("The provided continue parameter is too old to display a consistent list "
                           "result. You can start a new list without the continue parameter.") from None
            revision = revision or page.revision
            for index, stored in enumerate(page.items):
                if selective and not self._matches(self.decode(kind, stored), labels, fields):
                    continue
                items.append(self._with_version(kind, stored))
                if limit and len(items) == limit:
                    if not page.more and index == len(page.items) - 1:
                        return items, revision, "", 0
                    # The token resumes right after this key at the same revision, so
                    # every page comes from one consistent snapshot. The remaining count
                    # is only known (and only given, as in Kubernetes) without selectors.
                    token = pagination.encode_continue(stored.key + b"\0", revision)
                    return items, revision, token, 0 if selective else page.count - index - 1
            if not page.more or not page.items:
                return items, revision, "", 0
            start = page.items[-1].key + b"\0"

    @staticmethod
    def _with_version(kind: kinds.Kind, stored: Stored) -> bytes:
        """The stored bytes with metadata.resourceVersion set, without decoding them.

        Protobuf merges concatenated messages, so appending an encoded object that
        holds only metadata.resourceVersion sets that one field of the stored object.
        Those few bytes are written by hand (a list appends them to every item):
        metadata is field 1 and resourceVersion field 6 of it in every kind, as in
        Kubernetes' generated.proto; `_version_suffix_fits` checks that once per kind.
        """
        if not _version_suffix_fits(kind.message.DESCRIPTOR):
            suffix = kind.message()
            suffix.metadata.resource_version = str(stored.revision)  # type: ignore[attr-defined]
            return stored.value + suffix.SerializeToString()
        version = b"%d" % stored.revision
        # Both lengths fit one varint byte: a revision has at most 19 digits.
        return stored.value + bytes((_METADATA_TAG, len(version) + 2, _RESOURCE_VERSION_TAG, len(version))) + version

    @staticmethod
    def _matches(obj: Message, labels: LabelSelector, fields: FieldSelector) -> bool:
        return labels.matches(obj.metadata.labels) and fields.matches(obj)  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- update

    async def update(self, kind: kinds.Kind, namespace: str, obj: Message, *, subresource: str = "",
                     dry_run: bool = False, caller: Attributes | None = None) -> Message:
        """Replace an object (or only its status); Conflict when resourceVersion is stale."""
        strategy = strategies.for_kind(kind)
        if subresource not in ("", "status", *strategy.subresources):
            raise BadRequest(f'unknown subresource "{subresource}"')
        if subresource == "status" and not kind.has_status:
            raise NotFound(f"{_noun(kind)} have no status subresource")
        meta = obj.metadata  # type: ignore[attr-defined]
        namespace = (namespace or meta.namespace) if kind.namespaced else ""
        if kind.in_memory:
            meta.namespace = namespace
            return obj if dry_run else self.memory.put(kind, obj)

        async def try_update(old: Message, revision: int) -> Message | Commit:
            new = self._prepare_update(kind, strategy, old, obj, subresource)
            if new.SerializeToString(deterministic=True) == old.SerializeToString(deterministic=True):
                return old  # a no-op write changes nothing, not even resourceVersion
            request = admission.Request(admission.UPDATE, kind, new, old, subresource, dry_run, caller)
            self.admission.admit(request)

            async def commit() -> Message:
                async with self.admission.validate(request):
                    if dry_run:  # every check a real update passes, and nothing written
                        await self._dry_allocations(strategy, new, old)
                        return new
                    async with strategy.allocations(self._store_context, new, old):
                        return await self._write(kind, new, revision)
            return commit

        return await self._guaranteed_update(kind, namespace, meta.name, try_update, caller=caller,
                                             resource_version=meta.resource_version)

    def _prepare_update(self, kind: kinds.Kind, strategy: strategies.Strategy, old: Message, incoming: Message,
                        subresource: str) -> Message:
        """The object to store: `incoming` over `old` as the strategy allows, defaulted and validated."""
        if subresource:
            updated = strategy.prepare_for_subresource_update(kind, old, incoming, subresource)
            incoming_fields = incoming.metadata.managed_fields  # type: ignore[attr-defined]
            if incoming_fields:  # they record this write too (Kubernetes' ResetObjectMetaForStatus keeps them)
                updated.metadata.ClearField("managed_fields")  # type: ignore[attr-defined]
                updated.metadata.managed_fields.extend(incoming_fields)  # type: ignore[attr-defined]
            self._raise_invalid(kind, updated, strategy.validate_status_update(kind, updated, old))
            return updated
        new = kind.message()
        new.CopyFrom(incoming)
        new_meta, old_meta = new.metadata, old.metadata  # type: ignore[attr-defined]
        new.api_version, new.kind = kind.api_version, kind.kind  # type: ignore[attr-defined]
        strategy.prepare_for_update(kind, new, old)
        # Server-owned metadata survives whatever the client sent.
        new_meta.namespace = old_meta.namespace
        new_meta.uid = old_meta.uid
        new_meta.creation_timestamp.CopyFrom(old_meta.creation_timestamp)
        new_meta.generation = old_meta.generation
        new_meta.resource_version = old_meta.resource_version
        if old_meta.HasField("deletion_timestamp"):
            new_meta.deletion_timestamp.CopyFrom(old_meta.deletion_timestamp)
            if old_meta.HasField("deletion_grace_period_seconds"):
                new_meta.deletion_grace_period_seconds = old_meta.deletion_grace_period_seconds
        else:
            new_meta.ClearField("deletion_timestamp")
            new_meta.ClearField("deletion_grace_period_seconds")
        if not new_meta.name:
            new_meta.name = old_meta.name
        strategy.default(new)
        self._raise_invalid(kind, new, strategy.validate_update(kind, new, old))
        if spec_bytes(new) != spec_bytes(old):
            new_meta.generation = old_meta.generation + 1
        return new

    # ---------------------------------------------------------------- writes

    async def _guaranteed_update(self, kind: kinds.Kind, namespace: str, name: str,
                                 try_update: Callable[[Message, int], Awaitable[Message | Commit]], *,
                                 caller: Attributes | None = None, uid: str = "",
                                 resource_version: str = "") -> Message:
        """Read, decide, compare-and-swap on the mod revision; on a lost race, all again (GuaranteedUpdate).

        `try_update(current, revision)` returns either the answer (nothing to write:
        a no-op or a dry run) or a `Commit` that writes, guarded by `revision`. Admission
        of the stored object and the preconditions (uid, resourceVersion) are checked
        on every fresh copy. With a resourceVersion precondition a lost race is the
        caller's Conflict; without one, the change is decided again on the newer object.

        The first attempt starts from the watch cache's copy when it has one, as
        Kubernetes' GuaranteedUpdate does with its cached existing object: the
        compare-and-swap still guards the write, so a stale copy only costs a second
        attempt, from etcd; anything else decided on the copy (a no-op, a failed
        precondition, an error) is decided again on a fresh read before it is answered.
        """
        for attempt in range(_CONFLICT_RETRIES):
            guess = self._cached_copy(kind, namespace, name) if attempt == 0 else None
            if guess is not None:
                with contextlib.suppress(ApiError):
                    outcome = await self._update_once(kind, name, self.decode(kind, guess), guess, try_update,
                                                      caller, uid, resource_version)
                    if not isinstance(outcome, Message):
                        return await outcome()
                continue
            current, stored = await self._read(kind, namespace, name)
            outcome = await self._update_once(kind, name, current, stored, try_update, caller, uid, resource_version)
            if isinstance(outcome, Message):
                return outcome
            try:
                return await outcome()
            except Conflict:
                if resource_version:
                    raise self._conflict(kind, name) from None
            except NotFound:
                raise NotFound(f'{_noun(kind)} "{name}" not found') from None
        raise self._conflict(kind, name)

    async def _update_once(self, kind: kinds.Kind, name: str, current: Message, stored: Stored,
                           try_update: Callable[[Message, int], Awaitable[Message | Commit]],
                           caller: Attributes | None, uid: str, resource_version: str) -> Message | Commit:
        """One attempt's checks of the copy it starts from, then the caller's decision."""
        self.admission.validate_stored(caller, current)  # e.g. node restriction: only its own pods
        current_uid = current.metadata.uid  # type: ignore[attr-defined]
        if uid and current_uid != uid:
            raise Conflict(f"Precondition failed: UID in precondition: {uid}, UID in object meta: {current_uid}")
        if resource_version and resource_version != str(stored.revision):
            raise self._conflict(kind, name)
        return await try_update(current, stored.revision)

    def _cached_copy(self, kind: kinds.Kind, namespace: str, name: str) -> Stored | None:
        if self.cacher is None or not self.cacher.cacheable(kind) or not name:
            return None
        return self.cacher.stored(kind, _key(kind, namespace, name))

    async def _write(self, kind: kinds.Kind, new: Message, expected_revision: int) -> Message:
        """Store an updated object, or delete it once a terminating object has no one left to wait for."""
        meta = new.metadata  # type: ignore[attr-defined]
        key = _key(kind, meta.namespace, meta.name)
        strategy = strategies.for_kind(kind)
        if meta.HasField("deletion_timestamp") and not self._held(strategy, new):
            revision = await self.storage.delete(key, expected_revision)
            await strategy.after_delete(self._store_context, new)
            meta.resource_version = str(revision)
            return new
        revision = await self.storage.update(key, self._encode(new), expected_revision)
        meta.resource_version = str(revision)
        await strategy.after_write(self._store_context, new)
        return new

    async def _dry_allocations(self, strategy: strategies.Strategy, new: Message, old: Message | None) -> None:
        """A dry run's allocations: taken as a real write takes them (so a taken clusterIP or node port is
        refused, and the answer shows what would be assigned), then given back at once."""
        with contextlib.suppress(_DryRun):
            async with strategy.allocations(self._store_context, new, old):
                raise _DryRun  # the strategy gives back what it took, as for a failed write

    @staticmethod
    def _raise_invalid(kind: kinds.Kind, obj: Message, errors: Errors) -> None:
        if errors:
            raise Invalid(f'{kind.kind} "{obj.metadata.name}"', errors)  # type: ignore[attr-defined]

    @staticmethod
    def _conflict(kind: kinds.Kind, name: str) -> Conflict:
        return Conflict(f'Operation cannot be fulfilled on {_noun(kind)} "{name}": the object has been '
                        "modified; please apply your changes to the latest version and try again")

    # ---------------------------------------------------------------- delete

    @staticmethod
    def _held(strategy: strategies.Strategy, obj: Message) -> bool:
        """Whether a terminating object must stay until someone finishes it.

        Finalizers hold any object; past them, the strategy decides (a namespace
        waits for its spec finalizers, a bound pod for its kubelet).
        """
        return bool(obj.metadata.finalizers) or strategy.held(obj)  # type: ignore[attr-defined]

    async def delete(self, kind: kinds.Kind, namespace: str, name: str, *, grace_period: int | None = None,
                     propagation_policy: str = "", uid: str = "", resource_version: str = "",
                     dry_run: bool = False, caller: Attributes | None = None) -> Message:
        if propagation_policy not in ("", "Background", "Foreground", "Orphan"):
            raise BadRequest(f'Unsupported value: "{propagation_policy}": supported values: '
                             '"Background", "Foreground", "Orphan"')
        if grace_period is not None and grace_period < 0:
            raise BadRequest("gracePeriodSeconds must not be negative")
        if kind.in_memory:
            return self.memory.get(kind, namespace, name) if dry_run else self.memory.delete(kind, namespace, name)
        strategy = strategies.for_kind(kind)

        async def try_delete(obj: Message, revision: int) -> Message | Commit:
            request = admission.Request(admission.DELETE, kind, obj, dry_run=dry_run, caller=caller)
            graceful = self._begin_graceful_deletion(strategy, obj, grace_period, propagation_policy)

            async def commit() -> Message:
                async with self.admission.validate(request):
                    if dry_run:
                        return obj
                    if graceful:
                        return await self._write(kind, obj, revision)
                    meta = obj.metadata  # type: ignore[attr-defined]
                    deleted = await self.storage.delete(_key(kind, meta.namespace, meta.name), revision)
                await strategy.after_delete(self._store_context, obj)
                meta.resource_version = str(deleted)
                return obj
            return commit

        return await self._guaranteed_update(kind, namespace, name, try_delete, caller=caller, uid=uid,
                                             resource_version=resource_version)

    @staticmethod
    def _begin_graceful_deletion(strategy: strategies.Strategy, obj: Message, grace_period: int | None,
                                 propagation_policy: str) -> bool:
        """Mark the object terminating if someone must finish it; False means delete now."""
        meta = obj.metadata  # type: ignore[attr-defined]
        if propagation_policy == "Orphan" and "orphan" not in meta.finalizers:
            meta.finalizers.append("orphan")
        elif propagation_policy == "Foreground" and "foregroundDeletion" not in meta.finalizers:
            meta.finalizers.append("foregroundDeletion")
        if strategy.begin_graceful_delete(obj, grace_period):
            return True
        if meta.finalizers:
            if not meta.HasField("deletion_timestamp"):
                meta.deletion_timestamp.FromSeconds(_now_seconds())
                meta.deletion_grace_period_seconds = 0
            return True
        return False

    # ---------------------------------------------------------------- binding

    async def bind(self, namespace: str, binding: core_pb2.Binding) -> core_pb2.Pod:
        """pods/binding: the scheduler's decision, accepted exactly once per pod."""
        pods = kinds.resolve("pods")
        name, node = binding.metadata.name, binding.target.name
        if not node:
            raise Invalid(f'Binding "{name}"', [("target.name", "Required value")])
        if binding.target.kind and binding.target.kind != "Node":
            raise Invalid(f'Binding "{name}"', [("target.kind", 'must be "Node"')])

        async def try_bind(pod: Message, revision: int) -> Commit:
            bind(pod, binding)  # type: ignore[arg-type]
            return lambda: self._write(pods, pod, revision)

        result = await self._guaranteed_update(pods, namespace or binding.metadata.namespace, name, try_bind)
        return result  # type: ignore[return-value]

    # ---------------------------------------------------------------- watch

    async def watch(self, kind: kinds.Kind, namespace: str, resource_version: str,
                    label_selector: str = "", field_selector: str = "",
                    bookmark_interval: float = 0.0) -> AsyncIterator[Event]:
        """ADDED/MODIFIED/DELETED events in revision order, filtered by the selectors.

        With no resourceVersion every existing object comes first as ADDED. An
        object that stops matching the selectors is DELETED for this watcher and
        one that starts matching is ADDED, as Kubernetes does.
        """
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector)
        if kind.in_memory:
            raise BadRequest(f"{kind.qualified_resource} cannot be watched: they are polled reports")
        cache = self.cacher.resource(kind) if self.cacher is not None and self.cacher.cacheable(kind) else None
        start = None if resource_version in ("", "0") else self._watch_start(resource_version)
        if cache is not None and await cache.serves_watch(start):
            async for served in cache.watch(
                    namespace if kind.namespaced else "", resource_version, labels, fields, bookmark_interval, start):
                yield served
            return
        prefix = _prefix(kind, namespace)
        if resource_version in ("", "0"):
            items, revision, _, _ = await self.list(kind, namespace, label_selector, field_selector)
            for raw in items:
                yield Event("ADDED", raw, revision)
        else:
            revision = self._watch_start(resource_version)
            current = await self.storage.revision()
            if revision > current:
                # A version from the future (another cluster, a typo) would wait forever: Kubernetes answers 504.
                raise Timeout(f"Too large resource version: {revision}, current: {current}")
        changes = self.storage.watch(prefix, revision + 1).__aiter__()
        last_sent = revision
        next_change: asyncio.Task[Change] | None = None
        try:
            while True:
                if next_change is None:
                    next_change = asyncio.ensure_future(changes.__anext__())
                timeout = bookmark_interval if bookmark_interval > 0 else None
                done, _ = await asyncio.wait({next_change}, timeout=timeout)
                if not done:
                    # Quiet: tell the watcher how far it is known to be up to date, so a
                    # restart resumes near here instead of far back (bookmarks).
                    if revision > last_sent:
                        last_sent = revision
                        yield Event("BOOKMARK", b"", revision)
                    continue
                try:
                    change = next_change.result()
                except StopAsyncIteration:
                    return
                next_change = None
                revision = change.revision
                event = self._to_event(kind, change, labels, fields)
                if event is not None:
                    last_sent = revision
                    yield event
        finally:
            if next_change is not None:
                # The pending read must have finished before the stream can close (aclose of a
                # running generator is an error): a watcher cancelled mid-wait lands here.
                next_change.cancel()
                await asyncio.gather(next_change, return_exceptions=True)
            await changes.aclose()  # type: ignore[attr-defined]

    @staticmethod
    def _watch_start(resource_version: str) -> int:
        try:
            revision = int(resource_version)
        except ValueError:
            raise BadRequest(f'invalid resource version "{resource_version}"') from None
        if not 0 <= revision < 2**63 - 1:  # etcd revisions are int64 and the watch starts at revision + 1
            raise BadRequest(f'invalid resource version "{resource_version}"')
        return revision

    def _to_event(self, kind: kinds.Kind, change: Change, labels: LabelSelector,
                  fields: FieldSelector) -> Event | None:
        new = self._decode_bytes(kind, change.value, change.revision) if change.type == "PUT" else None
        old = self._decode_bytes(kind, change.previous, change.revision) if change.previous else None
        new_ok = new is not None and self._matches(new, labels, fields)
        old_ok = old is not None and self._matches(old, labels, fields)
        if new is not None and new_ok:
            return Event("MODIFIED" if old_ok else "ADDED", new.SerializeToString(), change.revision)
        if old_ok:
            # Deleted, or no longer selected: the watcher sees the last state it would know.
            last = new if new is not None else old
            assert last is not None
            return Event("DELETED", last.SerializeToString(), change.revision)
        return None

    # ---------------------------------------------------------------- housekeeping

    async def mirror(self, kind: kinds.Kind, on_event: Callable[[str, Message], None],
                     on_reset: Callable[[], None], synced: asyncio.Event | None = None) -> None:
        """Feed an in-apiserver cache from this registry: list, then watch, relisting on failure.

        The apiserver's own caches (namespaces, RBAC policy, admission policy) use
        this instead of the client informers, since they live beside the registry.
        `on_reset` empties the cache before each (re)list, so deletions missed while
        the watch was down do not linger.
        """
        while True:
            try:
                # A Secret sealed under a key this apiserver lacks must not keep its own caches (bootstrap
                # tokens, RBAC, admission policy) from filling, nor the apiserver from starting.
                items, revision, _, _ = await self.list(kind, "", skip_unreadable=True)
                on_reset()
                for raw in items:
                    on_event("ADDED", _parse(kind, raw))
                if synced is not None:
                    synced.set()
                async for event in self.watch(kind, "", str(revision)):
                    if event.type != "BOOKMARK":
                        on_event(event.type, _parse(kind, event.object))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s cache: watch ended (%s); relisting", kind.resource, exc)
                await asyncio.sleep(1)

    async def stored_objects(self, kind: kinds.Kind, namespace: str) -> Sequence[Message]:
        """One namespace's objects of a kind as stored now (ResourceQuota admission counts them)."""
        items, _, _, _ = await self.list(kind, namespace)
        return [_parse(kind, raw) for raw in items]

    async def stored_pods(self, namespace: str, field_selector: str = "") -> Sequence[core_pb2.Pod]:
        """Pods as stored now (for admission and node restriction, which must not trust a cache)."""
        items, _, _, _ = await self.list(kinds.resolve("pods"), namespace, field_selector=field_selector)
        pods = []
        for raw in items:
            pod = core_pb2.Pod()
            pod.ParseFromString(raw)
            pods.append(pod)
        return pods

    async def watch_admission_policy(self) -> None:
        """Keep admission plugins' policy caches (LimitRanges, ResourceQuotas) current."""
        await asyncio.gather(*(self.mirror(plugin.policy_kind, plugin.observe, plugin.reset)
                               for plugin in self.admission.policy_watchers))

    async def watch_namespaces(self) -> None:
        """Keep NamespaceLifecycle's namespace cache current (it falls back to etcd on a miss)."""
        await self.mirror(kinds.resolve("namespaces"), self._namespaces.observe, self._namespaces.reset)


# Wire tags (field number << 3 | 2, length-delimited): Kind.metadata = 1, ObjectMeta.resource_version = 6.
_METADATA_TAG = 1 << 3 | 2
_RESOURCE_VERSION_TAG = 6 << 3 | 2


@functools.cache
def _version_suffix_fits(message: Descriptor) -> bool:
    """Whether the kind's message numbers metadata and resourceVersion as `_with_version` writes them."""
    metadata = message.fields_by_name.get("metadata")
    if metadata is None or metadata.number != 1 or metadata.message_type is None:
        return False
    version = metadata.message_type.fields_by_name.get("resource_version")
    return version is not None and version.number == 6 and version.type == version.TYPE_STRING


class _DryRun(Exception):
    """Ends a dry run's allocations the way a failed write ends them: everything taken is released."""


def _parse(kind: kinds.Kind, raw: bytes) -> Message:
    """An object as the API serves it (resourceVersion already inside)."""
    obj = kind.message()
    obj.ParseFromString(raw)
    return obj

