"""The apiserver's storage layer: objects as protobuf bytes in etcd, versioned by revision.

Every object lives at `/registry/<resource>/<namespace>/<name>` (cluster-scoped
kinds drop the namespace). Its resourceVersion is the key's etcd mod revision,
so optimistic concurrency is an etcd transaction comparing that revision, and a
watch from resourceVersion R is an etcd watch from revision R+1. Nothing else
in Flotilla talks to etcd.

This module knows keys, bytes and revisions only; what an object means
(defaults, validation, graceful deletion) is the registry's business.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

import aetcd
import grpc
from aetcd import exceptions as etcd_errors
from aetcd import rpc

from proto.errors import AlreadyExists, Conflict, Gone, NotFound, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# Large lists (10,000 pods) exceed gRPC's default 4 MiB receive limit (docs/etcd.md).
_ETCD_OPTIONS = {
    "grpc.max_receive_message_length": 512 * 1024 * 1024,
    "grpc.max_send_message_length": 64 * 1024 * 1024,
}


@dataclass(frozen=True)
class Stored:
    """One key's value and the revision that last wrote it."""

    key: bytes
    value: bytes
    revision: int


@dataclass(frozen=True)
class RangePage:
    items: list[Stored]
    more: bool  # keys remain in the range beyond `limit`
    revision: int  # the store revision the page was read at
    count: int  # keys in the whole range, whatever the limit


@dataclass(frozen=True)
class Change:
    """One etcd event under a watched prefix; `value`/`previous` are b"" when absent."""

    type: str  # PUT or DELETE
    key: bytes
    value: bytes
    previous: bytes
    revision: int


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with `prefix`."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


class Storage:
    """A thin, typed layer over etcd's KV and Watch APIs."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url if "://" in url else f"http://{url}")
        self.url = url
        # aetcd uses `timeout` only for its own calls (watch creation among them): without
        # one, a watch it cannot create waits forever.
        self._etcd = aetcd.Client(host=parsed.hostname or "127.0.0.1", port=parsed.port or 2379,
                                  options=_ETCD_OPTIONS, timeout=10)

    async def connect(self, timeout: float = 30.0) -> None:
        """Connect, retrying while etcd starts (the apiserver may come up first)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                await self._etcd.connect()
                await self.revision()
                return
            except (Unavailable, etcd_errors.ClientError, grpc.RpcError) as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise Unavailable(f"etcd at {self.url} is unreachable: {exc}") from exc
                await self._etcd.close()
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        await self._etcd.close()

    async def _rpc(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
            if "compacted" in details:  # OUT_OF_RANGE covers "future revision" too
                raise Gone(f"too old resource version: {details}") from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise Unavailable(f"etcd is unavailable: {details}") from None
            raise

    # ---------------------------------------------------------------- reads

    async def revision(self) -> int:
        """The store's current revision (the resourceVersion a fresh list would carry)."""
        reply = await self._rpc(lambda: self._etcd.kvstub.Range(
            rpc.RangeRequest(key=b"\0", limit=1, count_only=True)))
        return int(reply.header.revision)

    async def get(self, key: bytes) -> Stored | None:
        reply = await self._rpc(lambda: self._etcd.kvstub.Range(rpc.RangeRequest(key=key)))
        if not reply.kvs:
            return None
        kv = reply.kvs[0]
        return Stored(kv.key, kv.value, kv.mod_revision)

    async def range(self, start: bytes, end: bytes, *, limit: int = 0, revision: int = 0) -> RangePage:
        """Keys in [start, end) at `revision` (0: now), at most `limit` of them."""
        reply = await self._rpc(lambda: self._etcd.kvstub.Range(rpc.RangeRequest(
            key=start, range_end=end, limit=limit, revision=revision)))
        items = [Stored(kv.key, kv.value, kv.mod_revision) for kv in reply.kvs]
        return RangePage(items, bool(reply.more), int(reply.header.revision), int(reply.count))

    async def count(self, prefix: bytes) -> int:
        reply = await self._rpc(lambda: self._etcd.kvstub.Range(rpc.RangeRequest(
            key=prefix, range_end=prefix_end(prefix), count_only=True)))
        return int(reply.count)

    # ---------------------------------------------------------------- writes

    async def create(self, key: bytes, value: bytes) -> int:
        """Store a new key; AlreadyExists if it is there. Returns the write's revision."""
        request = rpc.TxnRequest(
            compare=[rpc.Compare(key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE,
                                 create_revision=0)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))])
        reply = await self._rpc(lambda: self._etcd.kvstub.Txn(request))
        if not reply.succeeded:
            raise AlreadyExists(key.decode())
        return int(reply.header.revision)

    async def update(self, key: bytes, value: bytes, expected_revision: int) -> int:
        """Replace a key only if it is still at `expected_revision`; Conflict otherwise."""
        return await self._if_unchanged(key, expected_revision, rpc.RequestOp(
            request_put=rpc.PutRequest(key=key, value=value)))

    async def delete(self, key: bytes, expected_revision: int) -> int:
        """Delete a key only if it is still at `expected_revision`; Conflict otherwise."""
        return await self._if_unchanged(key, expected_revision, rpc.RequestOp(
            request_delete_range=rpc.DeleteRangeRequest(key=key)))

    async def _if_unchanged(self, key: bytes, expected_revision: int, operation: Any) -> int:
        """Run one write guarded by the key's mod revision: the heart of optimistic concurrency."""
        request = rpc.TxnRequest(
            compare=[rpc.Compare(key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.MOD,
                                 mod_revision=expected_revision)],
            success=[operation],
            # On failure, tell "changed" (Conflict) from "gone" (NotFound).
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key, count_only=True))])
        reply = await self._rpc(lambda: self._etcd.kvstub.Txn(request))
        if not reply.succeeded:
            if reply.responses and reply.responses[0].response_range.count == 0:
                raise NotFound(key.decode())
            raise Conflict(key.decode())
        return int(reply.header.revision)

    async def compact(self, revision: int) -> None:
        await self._rpc(lambda: self._etcd.kvstub.Compact(rpc.CompactionRequest(revision=revision)))

    async def etcd_version(self) -> str:
        reply = await self._rpc(lambda: self._etcd.maintenancestub.Status(rpc.StatusRequest()))
        return str(reply.version)

    # ---------------------------------------------------------------- watch

    async def _check_not_compacted(self, prefix: bytes, start_revision: int) -> None:
        """Raise Gone if history from `start_revision` is gone.

        aetcd never answers a watch created on a compacted revision (it records the
        error but wakes nobody), so ask etcd with a cheap read at that revision first.
        """
        try:
            await self._rpc(lambda: self._etcd.kvstub.Range(rpc.RangeRequest(
                key=prefix, range_end=prefix_end(prefix), count_only=True, revision=start_revision)))
        except Gone:
            raise Gone(f"too old resource version: {start_revision - 1}: history before it was compacted; "
                       "list again and watch from the list's resourceVersion") from None
        except grpc.RpcError as err:
            if "future revision" not in (err.details() or ""):
                raise

    async def watch(self, prefix: bytes, start_revision: int) -> AsyncIterator[Change]:
        """Every change under `prefix` from `start_revision` on, in revision order.

        Raises Gone when etcd has compacted `start_revision` away.
        """
        await self._check_not_compacted(prefix, start_revision)
        try:
            watch = await self._etcd.watch(prefix, range_end=prefix_end(prefix),
                                           start_revision=start_revision, prev_kv=True)
        except etcd_errors.RevisionCompactedError as exc:
            raise Gone(f"too old resource version: {start_revision - 1} "
                       f"(compacted below {exc.compacted_revision})") from None
        except (etcd_errors.ClientError, etcd_errors.WatchTimeoutError) as exc:
            raise Unavailable(f"etcd watch failed: {exc!r}") from None
        try:
            async for event in watch:
                kind: Any = event.kind
                kv, prev = event.kv, event.prev_kv
                yield Change(
                    type="DELETE" if str(kind).endswith("DELETE") else "PUT",
                    key=kv.key, value=kv.value or b"", previous=prev.value if prev else b"",
                    revision=int(kv.mod_revision))
        except etcd_errors.RevisionCompactedError as exc:
            raise Gone(f"too old resource version: compacted below {exc.compacted_revision}") from None
        except etcd_errors.ClientError as exc:
            raise Unavailable(f"etcd watch failed: {exc}") from None
        finally:
            await watch.cancel()


async def compact_forever(storage: Storage, interval: float) -> None:
    """Compact etcd history older than one interval, as kube-apiserver does (docs/etcd.md: replaying a
    watch from far back on etcd 3.4 is slow once there are many newer revisions)."""
    previous = 0
    while True:
        await asyncio.sleep(interval)
        try:
            current = await storage.revision()
            if previous:
                await storage.compact(previous)
                log.info("compacted etcd history up to revision %d", previous)
            previous = current
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("compaction failed: %s", exc)
