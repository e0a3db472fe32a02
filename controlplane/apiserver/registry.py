"""The registry: what create, update, delete, bind and watch mean for an object.

This is the layer kube-apiserver calls a "strategy" plus its generic registry:
it sets server-owned metadata (uid, creationTimestamp, generation,
resourceVersion), applies defaults, validates every write, keeps status and
spec apart (the status subresource), runs graceful deletion with finalizers,
guards namespaces, and turns etcd changes into ADDED/MODIFIED/DELETED events
filtered by selectors. Storage is below it; the gRPC service is above it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from google.protobuf.message import Message

from controlplane.apiserver.admission import QUOTA_KIND, Admission, quota_status
from controlplane.apiserver.allocators import ServiceAllocator
from controlplane.apiserver.defaults import apply_defaults
from controlplane.apiserver.memory import MemoryStore
from controlplane.apiserver.storage import Change, Storage, Stored, prefix_end
from controlplane.apiserver.strategies import certificates
from controlplane.apiserver.validation import validate
from proto import core_pb2, kinds
from proto.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Gone,
    Invalid,
    NamespaceTerminating,
    NotFound,
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


@dataclass(frozen=True)
class Event:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: bytes
    revision: int


def _key(kind: kinds.Kind, namespace: str, name: str) -> bytes:
    if kind.namespaced:
        return f"/registry/{kind.resource}/{namespace}/{name}".encode()
    return f"/registry/{kind.resource}/{name}".encode()


def _prefix(kind: kinds.Kind, namespace: str) -> bytes:
    if kind.namespaced and namespace:
        return f"/registry/{kind.resource}/{namespace}/".encode()
    return f"/registry/{kind.resource}/".encode()


def _noun(kind: kinds.Kind) -> str:
    """How Kubernetes names a resource in messages: `pods`, `deployments.apps`."""
    return kind.qualified_resource


def _now_seconds() -> int:
    return int(time.time())


class Registry:
    """Object semantics over Storage, for every kind in proto/kinds.py."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        # NamespaceLifecycle admission reads namespaces from here on the hot path
        # (create), falling back to etcd on a miss so a just-created namespace works.
        self._namespaces: dict[str, bool] = {}  # name -> terminating
        self.memory = MemoryStore()  # metrics.k8s.io reports (kinds with in_memory=True)
        self.allocator = ServiceAllocator(storage)  # Services' clusterIPs and node ports, in etcd
        self.admission = Admission()  # LimitRange and ResourceQuota, fed by watch_admission_policy

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

    async def _check_namespace(self, kind: kinds.Kind, namespace: str) -> None:
        if not kind.namespaced:
            return
        if not namespace:
            raise BadRequest(f"{_noun(kind)} must be created in a namespace")
        terminating = self._namespaces.get(namespace)
        if terminating is None:
            stored = await self.storage.get(_key(kinds.resolve("namespaces"), "", namespace))
            if stored is None:
                raise NotFound(f'namespaces "{namespace}" not found')
            ns = core_pb2.Namespace()
            ns.ParseFromString(stored.value)
            terminating = ns.metadata.HasField("deletion_timestamp")
            self._namespaces[namespace] = terminating
        if terminating:
            raise NamespaceTerminating(
                f"unable to create new content in namespace {namespace} because it is being terminated")

    def _note_namespace(self, ns: Message, *, gone: bool = False) -> None:
        name = ns.metadata.name  # type: ignore[attr-defined]
        if gone:
            self._namespaces.pop(name, None)
        else:
            self._namespaces[name] = ns.metadata.HasField("deletion_timestamp")  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- create / get

    async def create(self, kind: kinds.Kind, namespace: str, obj: Message, *, dry_run: bool = False) -> Message:
        meta = obj.metadata  # type: ignore[attr-defined]
        if kind.in_memory:
            meta.namespace = namespace or meta.namespace
            await self._check_namespace(kind, meta.namespace)
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
        if kind.kind == "Pod":
            # A pod may carry nodeName at create (static placement), but its status is the kubelet's.
            obj.ClearField("status")
            obj.status.phase = "Pending"  # type: ignore[attr-defined]
        apply_defaults(kind, obj)
        if isinstance(obj, core_pb2.Pod):
            self.admission.apply_limit_ranges(obj)
        elif isinstance(obj, core_pb2.ResourceQuota):
            obj.status.hard.clear()
            obj.status.hard.update(obj.spec.hard)
        self._validate(kind, obj, None)
        await self._check_namespace(kind, meta.namespace)
        key = _key(kind, meta.namespace, meta.name)
        guard = (self.admission.quota_guard(obj, self.stored_pods, self._record_quota_usage, dry_run=dry_run)
                 if isinstance(obj, core_pb2.Pod) else contextlib.nullcontext())
        try:
            async with guard:
                if dry_run:  # admitted, quota included, but not written
                    return obj
                revision = await self._store_new(kind, key, obj)
        except AlreadyExists:
            raise AlreadyExists(f'{_noun(kind)} "{meta.name}" already exists') from None
        meta.resource_version = str(revision)
        if kind.kind == "Namespace":
            self._note_namespace(obj)
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
                   field_selector: str = "", limit: int = 0, continue_token: str = ""
                   ) -> tuple[list[bytes], int, str, int]:
        """(encoded items, revision, continue token, remaining count) for one page.

        Items come back encoded: a list is the apiserver's biggest job, and the
        stored bytes need no decoding unless a selector must look inside.
        """
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector)
        if kind.in_memory:
            found = self.memory.list(kind, namespace, labels, fields)
            return [o.SerializeToString() for o in found], self.memory.version, "", 0
        if limit < 0:
            raise BadRequest("limit must not be negative")
        selective = not (labels.empty() and fields.empty())
        prefix = _prefix(kind, namespace)
        end = prefix_end(prefix)
        start, revision = prefix, 0
        if continue_token:
            start, revision = self._decode_continue(continue_token, prefix)
        items: list[bytes] = []
        chunk = min(max(limit, 500), 10_000) if limit else 0
        while True:
            try:
                page = await self.storage.range(start, end, limit=chunk, revision=revision)
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
                    token = self._encode_continue(stored.key + b"\0", revision)
                    return items, revision, token, 0 if selective else page.count - index - 1
            if not page.more or not page.items:
                return items, revision, "", 0
            start = page.items[-1].key + b"\0"

    @staticmethod
    def _with_version(kind: kinds.Kind, stored: Stored) -> bytes:
        """The stored bytes with metadata.resourceVersion set, without decoding them.

        Protobuf merges concatenated messages, so appending an encoded object that
        holds only metadata.resourceVersion sets that one field of the stored object.
        """
        suffix = kind.message()
        suffix.metadata.resource_version = str(stored.revision)  # type: ignore[attr-defined]
        return stored.value + suffix.SerializeToString()

    @staticmethod
    def _encode_continue(key: bytes, revision: int) -> str:
        raw = json.dumps({"v": 1, "rv": revision, "start": base64.b64encode(key).decode()})
        return base64.urlsafe_b64encode(raw.encode()).decode()

    @staticmethod
    def _decode_continue(token: str, prefix: bytes) -> tuple[bytes, int]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            key, revision = base64.b64decode(data["start"]), int(data["rv"])
        except (ValueError, KeyError, TypeError) as exc:
            raise BadRequest("continue key is not valid: malformed token") from exc
        if not key.startswith(prefix):
            raise BadRequest("continue key is not valid: it belongs to another list")
        return key, revision

    @staticmethod
    def _matches(obj: Message, labels: LabelSelector, fields: FieldSelector) -> bool:
        return labels.matches(obj.metadata.labels) and fields.matches(obj)  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- update

    async def update(self, kind: kinds.Kind, namespace: str, obj: Message, *, subresource: str = "",
                     dry_run: bool = False, admit: Callable[[Message], None] | None = None) -> Message:
        """Replace an object (or only its status); Conflict when resourceVersion is stale."""
        if subresource not in ("", "status") and not (subresource == certificates.APPROVAL
                                                      and kind.kind == certificates.KIND):
            raise BadRequest(f'unknown subresource "{subresource}"')
        if subresource == "status" and not kind.has_status:
            raise NotFound(f"{_noun(kind)} have no status subresource")
        meta = obj.metadata  # type: ignore[attr-defined]
        namespace = (namespace or meta.namespace) if kind.namespaced else ""
        if kind.in_memory:
            meta.namespace = namespace
            return obj if dry_run else self.memory.put(kind, obj)
        wanted_version = meta.resource_version
        for _attempt in range(_CONFLICT_RETRIES):
            old, stored = await self._read(kind, namespace, meta.name)
            if admit is not None:
                admit(old)  # e.g. node restriction: only pods bound to the calling node
            if wanted_version and wanted_version != str(stored.revision):
                raise self._conflict(kind, meta.name)
            new = self._merge_update(kind, old, obj, subresource)
            if new.SerializeToString(deterministic=True) == old.SerializeToString(deterministic=True):
                return old  # a no-op write changes nothing, not even resourceVersion
            if dry_run:
                return new
            try:
                return await self._write_allocating(kind, old, new, stored.revision)
            except Conflict:
                if wanted_version:
                    raise self._conflict(kind, meta.name) from None
                # Unconditional update: someone wrote in between; merge onto theirs.
        raise self._conflict(kind, meta.name)

    def _merge_update(self, kind: kinds.Kind, old: Message, incoming: Message, subresource: str) -> Message:
        new = kind.message()
        new.CopyFrom(incoming)
        new_meta, old_meta = new.metadata, old.metadata  # type: ignore[attr-defined]
        new.api_version, new.kind = kind.api_version, kind.kind  # type: ignore[attr-defined]
        if kind.kind == certificates.KIND and subresource:
            merged = certificates.merge_subresource(old, incoming, subresource)  # type: ignore[arg-type]
            self._validate(kind, merged, old)
            return merged
        if subresource == "status":
            # The status subresource changes status and nothing else.
            status = kind.message()
            status.CopyFrom(old)
            status.ClearField("status")
            status.status.CopyFrom(new.status)  # type: ignore[attr-defined]
            status.metadata.resource_version = old_meta.resource_version  # type: ignore[attr-defined]
            self._validate(kind, status, old)
            return status
        if kind.has_status and kind.kind != "Namespace":
            new.ClearField("status")
            new.status.CopyFrom(old.status)  # type: ignore[attr-defined]
        elif kind.kind == "Namespace":
            new.status.CopyFrom(old.status)  # type: ignore[attr-defined]
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
        if kind.kind == "Service":
            _keep_service_allocations(new, old)  # type: ignore[arg-type]
        apply_defaults(kind, new)
        self._validate(kind, new, old)
        if self._spec_bytes(new) != self._spec_bytes(old):
            new_meta.generation = old_meta.generation + 1
        return new

    @staticmethod
    def _spec_bytes(obj: Message) -> bytes:
        """Everything but metadata and status: a change here bumps metadata.generation."""
        copy = type(obj)()
        copy.CopyFrom(obj)
        copy.ClearField("metadata")
        if "status" in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField("status")
        return copy.SerializeToString(deterministic=True)

    # ---------------------------------------------------------------- allocations (Services)

    async def _store_new(self, kind: kinds.Kind, key: bytes, obj: Message) -> int:
        """Create the key; a Service first takes its clusterIP and node ports, given back if the create fails."""
        if not isinstance(obj, core_pb2.Service):
            return await self.storage.create(key, self._encode(obj))
        allocation = await self.allocator.allocate(obj)
        try:
            return await self.storage.create(key, self._encode(obj))
        except BaseException:
            await self.allocator.release_keys(allocation.keys)
            raise

    async def _write_allocating(self, kind: kinds.Kind, old: Message, new: Message, expected_revision: int) -> Message:
        """`_write` for updates: a Service takes what it newly needs and gives back what it dropped."""
        if not isinstance(new, core_pb2.Service) or not isinstance(old, core_pb2.Service):
            return await self._write(kind, new, expected_revision)
        allocation = await self.allocator.allocate(new, old)
        try:
            written = await self._write(kind, new, expected_revision)
        except BaseException:
            await self.allocator.release_keys(allocation.keys)
            raise
        await self.allocator.release(old, keep=new)
        return written

    async def _release(self, kind: kinds.Kind, obj: Message) -> None:
        if isinstance(obj, core_pb2.Service):
            await self.allocator.release(obj)

    async def _write(self, kind: kinds.Kind, new: Message, expected_revision: int) -> Message:
        """Store an updated object, or delete it once a terminating object has no finalizers."""
        meta = new.metadata  # type: ignore[attr-defined]
        key = _key(kind, meta.namespace, meta.name)
        if meta.HasField("deletion_timestamp") and not self._held(kind, new):
            revision = await self.storage.delete(key, expected_revision)
            await self._release(kind, new)
            meta.resource_version = str(revision)
            if kind.kind == "Namespace":
                self._note_namespace(new, gone=True)
            return new
        revision = await self.storage.update(key, self._encode(new), expected_revision)
        meta.resource_version = str(revision)
        if kind.kind == "Namespace":
            self._note_namespace(new)
        return new

    def _validate(self, kind: kinds.Kind, obj: Message, old: Message | None) -> None:
        errors = validate(kind, obj, old)
        if errors:
            raise Invalid(f'{kind.kind} "{obj.metadata.name}"', errors)  # type: ignore[attr-defined]

    @staticmethod
    def _conflict(kind: kinds.Kind, name: str) -> Conflict:
        return Conflict(f'Operation cannot be fulfilled on {_noun(kind)} "{name}": the object has been '
                        "modified; please apply your changes to the latest version and try again")

    # ---------------------------------------------------------------- delete

    @staticmethod
    def _held(kind: kinds.Kind, obj: Message) -> bool:
        """Whether a terminating object must stay until someone finishes it.

        Finalizers hold any object; a namespace is held by its spec finalizers
        (the namespace controller's); a bound pod with a grace period is held
        until its kubelet has stopped the containers and deletes it with grace 0.
        """
        meta = obj.metadata  # type: ignore[attr-defined]
        if meta.finalizers:
            return True
        if kind.kind == "Namespace":
            return bool(obj.spec.finalizers)  # type: ignore[attr-defined]
        if kind.kind == "Pod":
            return bool(obj.spec.node_name) and meta.deletion_grace_period_seconds > 0  # type: ignore[attr-defined]
        return False

    async def delete(self, kind: kinds.Kind, namespace: str, name: str, *, grace_period: int | None = None,
                     propagation_policy: str = "", uid: str = "", resource_version: str = "",
                     dry_run: bool = False, admit: Callable[[Message], None] | None = None) -> Message:
        if propagation_policy not in ("", "Background", "Foreground", "Orphan"):
            raise BadRequest(f'Unsupported value: "{propagation_policy}": supported values: '
                             '"Background", "Foreground", "Orphan"')
        if grace_period is not None and grace_period < 0:
            raise BadRequest("gracePeriodSeconds must not be negative")
        if kind.in_memory:
            return self.memory.get(kind, namespace, name) if dry_run else self.memory.delete(kind, namespace, name)
        for _attempt in range(_CONFLICT_RETRIES):
            obj, stored = await self._read(kind, namespace, name)
            if admit is not None:
                admit(obj)
            meta = obj.metadata  # type: ignore[attr-defined]
            if uid and meta.uid != uid:
                raise Conflict(f'Precondition failed: UID in precondition: {uid}, UID in object meta: {meta.uid}')
            if resource_version and resource_version != str(stored.revision):
                raise self._conflict(kind, name)
            graceful = self._begin_graceful_deletion(kind, obj, grace_period, propagation_policy)
            if dry_run:
                return obj
            try:
                if graceful:
                    return await self._write(kind, obj, stored.revision)
                revision = await self.storage.delete(stored.key, stored.revision)
                await self._release(kind, obj)
            except Conflict:
                if resource_version:
                    raise self._conflict(kind, name) from None
                continue
            except NotFound:
                raise NotFound(f'{_noun(kind)} "{name}" not found') from None
            meta.resource_version = str(revision)
            if kind.kind == "Namespace":
                self._note_namespace(obj, gone=True)
            return obj
        raise self._conflict(kind, name)

    def _begin_graceful_deletion(self, kind: kinds.Kind, obj: Message, grace_period: int | None,
                                 propagation_policy: str) -> bool:
        """Mark the object terminating if someone must finish it; False means delete now."""
        meta = obj.metadata  # type: ignore[attr-defined]
        if propagation_policy == "Orphan" and "orphan" not in meta.finalizers:
            meta.finalizers.append("orphan")
        elif propagation_policy == "Foreground" and "foregroundDeletion" not in meta.finalizers:
            meta.finalizers.append("foregroundDeletion")
        if kind.kind == "Namespace":
            # The namespace controller empties it, then removes the "kubernetes" finalizer.
            obj.status.phase = "Terminating"  # type: ignore[attr-defined]
            if not meta.HasField("deletion_timestamp"):
                meta.deletion_timestamp.FromSeconds(_now_seconds())
                meta.deletion_grace_period_seconds = 0
            return bool(obj.spec.finalizers) or bool(meta.finalizers)  # type: ignore[attr-defined]
        if kind.kind == "Pod" and obj.spec.node_name:  # type: ignore[attr-defined]
            spec_grace = obj.spec.termination_grace_period_seconds  # type: ignore[attr-defined]
            grace = spec_grace if grace_period is None else grace_period
            if meta.HasField("deletion_timestamp"):
                # A second delete may only shorten the grace period, as in Kubernetes.
                grace = min(grace, meta.deletion_grace_period_seconds)
            if grace > 0:
                meta.deletion_timestamp.FromSeconds(_now_seconds() + grace)
                meta.deletion_grace_period_seconds = grace
                return True
            meta.deletion_grace_period_seconds = 0
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
        for _attempt in range(_CONFLICT_RETRIES):
            obj, stored = await self._read(pods, namespace or binding.metadata.namespace, name)
            pod: core_pb2.Pod = obj  # type: ignore[assignment]
            if binding.metadata.uid and binding.metadata.uid != pod.metadata.uid:
                raise Conflict(f'Precondition failed: UID in precondition: {binding.metadata.uid}, '
                               f'UID in object meta: {pod.metadata.uid}')
            if pod.metadata.HasField("deletion_timestamp"):
                raise Conflict(f"pod {name} is being deleted, cannot be assigned to a host")
            if pod.spec.node_name:
                raise Conflict(f"pod {name} is already assigned to node \"{pod.spec.node_name}\"")
            pod.spec.node_name = node
            _set_pod_condition(pod, "PodScheduled", "True")
            try:
                result = await self._write(pods, pod, stored.revision)
                return result  # type: ignore[return-value]
            except Conflict:
                continue
        raise self._conflict(pods, name)

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
        prefix = _prefix(kind, namespace)
        if resource_version in ("", "0"):
            items, revision, _, _ = await self.list(kind, namespace, label_selector, field_selector)
            for raw in items:
                yield Event("ADDED", raw, revision)
        else:
            try:
                revision = int(resource_version)
            except ValueError:
                raise BadRequest(f'invalid resource version "{resource_version}"') from None
            if not 0 <= revision < 2**63 - 1:  # etcd revisions are int64 and the watch starts at revision + 1
                raise BadRequest(f'invalid resource version "{resource_version}"')
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
                next_change.cancel()
            await changes.aclose()  # type: ignore[attr-defined]

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
                items, revision, _, _ = await self.list(kind, "")
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

    async def stored_pods(self, namespace: str, field_selector: str = "") -> Sequence[core_pb2.Pod]:
        """Pods as stored now (for admission and node restriction, which must not trust a cache)."""
        items, _, _, _ = await self.list(kinds.resolve("pods"), namespace, field_selector=field_selector)
        pods = []
        for raw in items:
            pod = core_pb2.Pod()
            pod.ParseFromString(raw)
            pods.append(pod)
        return pods

    async def _record_quota_usage(self, quota: core_pb2.ResourceQuota, used: dict[str, Decimal]) -> None:
        """Show the namespace's usage in the quota's status (display only: checks recount)."""
        try:
            await self.update(QUOTA_KIND, quota.metadata.namespace, quota_status(quota, used), subresource="status")
        except (Conflict, NotFound) as exc:
            log.info("quota %s/%s status not updated: %s", quota.metadata.namespace, quota.metadata.name, exc)

    async def watch_admission_policy(self) -> None:
        """Keep LimitRanges and ResourceQuotas current for admission."""
        def forget(table: dict[tuple[str, str], Any]) -> Callable[[], None]:
            return table.clear

        await asyncio.gather(
            self.mirror(kinds.resolve("limitranges"), self.admission.observe, forget(self.admission.limit_ranges)),
            self.mirror(QUOTA_KIND, self.admission.observe, forget(self.admission.quotas)))

    async def watch_namespaces(self) -> None:
        """Keep the namespace cache current (the cache falls back to etcd on a miss)."""
        await self.mirror(kinds.resolve("namespaces"),
                          lambda event, ns: self._note_namespace(ns, gone=event == "DELETED"),
                          self._namespaces.clear)

    async def compact_forever(self, interval: float) -> None:
        """Compact etcd history older than one interval (shared/notes/etcd.md, pitfall 4)."""
        previous = 0
        while True:
            await asyncio.sleep(interval)
            try:
                current = await self.storage.revision()
                if previous:
                    await self.storage.compact(previous)
                    log.info("compacted etcd history up to revision %d", previous)
                previous = current
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("compaction failed: %s", exc)


def _parse(kind: kinds.Kind, raw: bytes) -> Message:
    """An object as the API serves it (resourceVersion already inside)."""
    obj = kind.message()
    obj.ParseFromString(raw)
    return obj


def _keep_service_allocations(new: core_pb2.Service, old: core_pb2.Service) -> None:
    """An update that leaves allocated fields empty keeps them, as `kubectl apply` expects.

    clusterIP and node ports are assigned once; a manifest re-applied without
    them means "unchanged", not "release". A move to ClusterIP drops node ports.
    """
    if not new.spec.cluster_ip and new.spec.type != "ExternalName":
        new.spec.cluster_ip = old.spec.cluster_ip
        new.spec.cluster_ips[:] = old.spec.cluster_ips
    if new.spec.type in ("NodePort", "LoadBalancer"):
        allocated = {(p.port, p.protocol or "TCP"): p.node_port for p in old.spec.ports}
        for port in new.spec.ports:
            if not port.node_port:
                port.node_port = allocated.get((port.port, port.protocol or "TCP"), 0)
    else:
        for port in new.spec.ports:
            port.node_port = 0


def _set_pod_condition(pod: core_pb2.Pod, type_: str, status: str) -> None:
    for cond in pod.status.conditions:
        if cond.type == type_:
            if cond.status != status:
                cond.status = status
                cond.last_transition_time.FromSeconds(_now_seconds())
            return
    cond = pod.status.conditions.add(type=type_, status=status)
    cond.last_transition_time.FromSeconds(_now_seconds())
