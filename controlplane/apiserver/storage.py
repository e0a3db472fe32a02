"""The apiserver's storage layer: objects as protobuf bytes in etcd, versioned by revision.

Every object lives at `/registry/<resource>/<namespace>/<name>` (cluster-scoped
kinds drop the namespace). Its resourceVersion is the key's etcd mod revision,
so optimistic concurrency is an etcd transaction comparing that revision, and a
watch from resourceVersion R is an etcd watch from revision R+1. Nothing else
in Flotilla talks to etcd.

This module knows keys, bytes and revisions only; what an object means
(defaults, validation, graceful deletion) is the registry's business.

Several members (`--etcd-servers a,b,c`, a cluster of masters) are one gRPC
channel that carries on through the next member when the one it uses is lost.

Two things happen to the bytes on their way, and nowhere else: etcd is dialled
over TLS with the apiserver's client certificate when the URL is https
(`EtcdClientTLS`: Kubernetes' --etcd-cafile/--etcd-certfile/--etcd-keyfile;
clusters' etcds take nothing else), and the values of resources named in an
EncryptionConfiguration are sealed before every write and opened after every
read -- get, range and watch alike, so the registry's list fast path (stored
bytes served undecoded) and its watches only ever see plaintext (encryption.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import aetcd
import grpc
from aetcd import exceptions as etcd_errors
from aetcd import rpc, watcher

from controlplane.apiserver.encryption import EncryptionConfig, TransformError
from proto.errors import AlreadyExists, Conflict, Gone, NotFound, Timeout, Unavailable

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


@dataclass(frozen=True)
class EtcdClientTLS:
    """A client's side of etcd's TLS: the CA that signed etcd's serving certificate, and the client's own
    certificate and key, which etcd (`--client-cert-auth`) checks against that CA. All PEM."""

    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def from_files(cls, ca: str, cert: str, key: str) -> EtcdClientTLS:
        return cls(Path(ca).read_bytes(), Path(cert).read_bytes(), Path(key).read_bytes())


class _Client(aetcd.Client):
    """aetcd's client over a channel this module opens: TLS (aetcd 1.x only dials plaintext) and several
    members behind one channel (aetcd dials one host:port). The stubs are set up as aetcd's connect does;
    no etcd user auth: the client certificate is the credential.

    Several members are one gRPC target, `ipv4:a:p,b:p,...`, under gRPC's default pick_first policy: the
    first member that answers serves every call, and when its connection dies (its etcd stopped, crashed
    or was removed) the channel dials the list again from the top, so the apiserver carries on through
    another member (etcd's own clientv3 balances its endpoints likewise). The apiserver lists its own
    master's member first."""

    def __init__(self, *, target: str, tls: EtcdClientTLS | None, server_name: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._target = target
        self._credentials = None if tls is None else grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)
        self._server_name = server_name

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        options = list(self._options.items())
        if self._server_name:
            # One name every member's serving certificate carries: with several targets gRPC would check
            # the channel's authority (the first address) against whichever member it reached.
            options.append(("grpc.ssl_target_name_override", self._server_name))
        self.channel = (rpc.insecure_channel(self._target, options=options) if self._credentials is None else
                        rpc.secure_channel(self._target, self._credentials, options=options))
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata)
        self._connected.set()


def _endpoint(url: str) -> tuple[str, str, int]:
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"etcd URL {url}: the scheme must be http or https")
    return parsed.scheme, parsed.hostname or "127.0.0.1", parsed.port or 2379


def etcd_client(url: str, tls: EtcdClientTLS | None = None, *, timeout: int = 10,
                options: dict[str, Any] | None = None) -> aetcd.Client:
    """An aetcd client for `url`, or for several members as a comma-separated list (Kubernetes'
    --etcd-servers): TLS with a client certificate for https, plaintext for http.

    An https URL without credentials is refused here rather than at the first call (etcd would only say
    that the handshake failed); so are lists mixing schemes, or naming a member by host name (gRPC's
    address list takes IP addresses)."""
    endpoints = [_endpoint(u.strip()) for u in url.split(",") if u.strip()]
    if not endpoints:
        raise ValueError("no etcd URL given")
    schemes = {scheme for scheme, _, _ in endpoints}
    if len(schemes) > 1:
        raise ValueError(f"etcd URLs {url}: all members must use one scheme (http or https)")
    scheme = schemes.pop()
    if scheme == "https" and tls is None:
        raise ValueError(f"etcd at {url} speaks TLS: give its CA and a client certificate "
                         "(--etcd-cafile, --etcd-certfile, --etcd-keyfile)")
    if scheme == "http" and tls is not None:
        raise ValueError(f"etcd URL {url} is plaintext, but TLS credentials were given: use https://")
    common: dict[str, Any] = {"host": endpoints[0][1], "port": endpoints[0][2], "options": options or {},
                              "timeout": timeout}
    if len(endpoints) == 1:
        return _Client(target=f"{endpoints[0][1]}:{endpoints[0][2]}", tls=tls, **common)
    addresses = []
    for _, host, port in endpoints:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"etcd URL {url}: with several members, name each by its IP address, not "
                             f"{host!r}") from None
        if address.version == 6:
            raise ValueError(f"etcd URL {url}: several members must be IPv4 addresses")
        addresses.append(f"{host}:{port}")
    # Every serving certificate Flotilla makes for etcd names localhost (components._etcd_pki).
    return _Client(target="ipv4:" + ",".join(addresses), tls=tls, server_name="localhost" if tls else "",
                   **common)


# What etcd says, with gRPC's UNKNOWN, when its Raft cannot commit: no leader, so no quorum.
NO_QUORUM = frozenset({"context deadline exceeded", "etcdserver: request timed out", "etcdserver: no leader",
                       "etcdserver: leader changed"})


class Storage:
    """A thin, typed layer over etcd's KV and Watch APIs."""

    def __init__(self, url: str, *, tls: EtcdClientTLS | None = None,
                 encryption: EncryptionConfig | None = None) -> None:
        self.url = url  # one member's URL, or several comma-separated (etcd_client)
        self.encryption = encryption
        # aetcd uses `timeout` only for its own calls (watch creation among them): without
        # one, a watch it cannot create waits forever.
        self._etcd = etcd_client(url, tls, options=_ETCD_OPTIONS, timeout=10)

    def _seal(self, key: bytes, value: bytes) -> bytes:
        return value if self.encryption is None else self.encryption.seal(key, value)

    def _open(self, key: bytes, value: bytes) -> bytes:
        if self.encryption is None:
            if value.startswith(b"k8s:enc:"):
                raise TransformError(f'Internal error occurred: unable to transform key "{key.decode()}": the '
                                     "value is encrypted and no --encryption-provider-config is given")
            return value
        return self.encryption.open(key, value) if value else value

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
            if code == grpc.StatusCode.UNKNOWN and details in NO_QUORUM:
                # etcd 3.4 answers a proposal its Raft could not commit (no leader: a quorum of members is
                # lost) with UNKNOWN after its request timeout; the proposal may still apply if one returns.
                raise Timeout(f"etcd did not commit the request within its timeout ({details}): the etcd cluster "
                              "has no quorum (no leader); a write may still apply once a quorum returns") from None
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
        return Stored(kv.key, self._open(kv.key, kv.value), kv.mod_revision)

    async def range(self, start: bytes, end: bytes, *, limit: int = 0, revision: int = 0,
                    skip_unreadable: bool = False) -> RangePage:
        """Keys in [start, end) at `revision` (0: now), at most `limit` of them.

        A value no configured key opens fails the whole range (a 500, as Kubernetes answers a list), unless
        `skip_unreadable`: the apiserver's own caches leave such a value out, logged, rather than never fill.
        """
        reply = await self._rpc(lambda: self._etcd.kvstub.Range(rpc.RangeRequest(
            key=start, range_end=end, limit=limit, revision=revision)))
        items = []
        for kv in reply.kvs:
            try:
                items.append(Stored(kv.key, self._open(kv.key, kv.value), kv.mod_revision))
            except TransformError as exc:
                if not skip_unreadable:
                    raise
                log.error("left out of the apiserver's own cache: %s", exc)
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
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=self._seal(key, value)))])
        reply = await self._rpc(lambda: self._etcd.kvstub.Txn(request))
        if not reply.succeeded:
            raise AlreadyExists(key.decode())
        return int(reply.header.revision)

    async def update(self, key: bytes, value: bytes, expected_revision: int) -> int:
        """Replace a key only if it is still at `expected_revision`; Conflict otherwise."""
        return await self._if_unchanged(key, expected_revision, rpc.RequestOp(
            request_put=rpc.PutRequest(key=key, value=self._seal(key, value))))

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

    # ---------------------------------------------------------------- encryption at rest

    async def rewrite_stale(self, page_size: int = 500) -> tuple[int, int]:
        """Seal again every value of an encrypted resource that the writing key did not seal (an older key,
        or plaintext from before encryption): the rotation step Kubernetes leaves to `kubectl replace`, done
        at every apiserver start. Each rewrite is guarded by the key's revision, so a concurrent write wins
        and needs nothing more. Returns (rewritten, unreadable); unreadable values are logged, not fatal."""
        config = self.encryption
        if config is None:
            return 0, 0
        rewritten = unreadable = 0
        for prefix in config.prefixes():
            start, end = prefix, prefix_end(prefix)
            while True:
                request = rpc.RangeRequest(key=start, range_end=end, limit=page_size)
                reply = await self._rpc(lambda r=request: self._etcd.kvstub.Range(r))  # type: ignore[misc]
                for kv in reply.kvs:
                    try:
                        if not config.is_stale(kv.key, kv.value):
                            continue
                        plain = config.open(kv.key, kv.value)
                    except TransformError as exc:
                        unreadable += 1
                        log.error("encryption at rest: %s", exc)
                        continue
                    with contextlib.suppress(Conflict, NotFound):
                        await self.update(kv.key, plain, int(kv.mod_revision))
                        rewritten += 1
                if not reply.more or not reply.kvs:
                    break
                start = reply.kvs[-1].key + b"\0"
        return rewritten, unreadable

    # ---------------------------------------------------------------- watch

    def _change(self, event: Any) -> Change:
        """A raw etcd watch event (mvccpb.Event) as a Change, its values opened."""
        kv = event.kv
        return Change(type="DELETE" if event.type == 1 else "PUT", key=kv.key,  # mvccpb.Event.DELETE
                      value=self._open(kv.key, kv.value or b""),
                      previous=self._open(kv.key, event.prev_kv.value) if event.HasField("prev_kv") else b"",
                      revision=int(kv.mod_revision))

    def watch_stream(self, prefix: bytes, start_revision: int) -> WatchStream:
        """A watch of `prefix` from `start_revision` on its own stream, able to ask etcd for progress."""
        return WatchStream(self, prefix, start_revision)

    async def check_history(self, start_revision: int) -> None:
        """Gone if etcd no longer has history from `start_revision` (compacted); one read of one key at that
        revision, which etcd refuses before looking anything up. A future revision passes.

        aetcd never answers a watch created on a compacted revision (it records the error but wakes nobody),
        so `watch` asks this first."""
        try:
            await self._rpc(lambda: self._etcd.kvstub.Range(rpc.RangeRequest(
                key=b"\0", revision=start_revision, limit=1)))
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
        await self.check_history(start_revision)
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
                    key=kv.key, value=self._open(kv.key, kv.value or b""),
                    previous=self._open(kv.key, prev.value) if prev else b"", revision=int(kv.mod_revision))
        except etcd_errors.RevisionCompactedError as exc:
            raise Gone(f"too old resource version: compacted below {exc.compacted_revision}") from None
        except etcd_errors.ClientError as exc:
            raise Unavailable(f"etcd watch failed: {exc}") from None
        finally:
            await watch.cancel()


@dataclass(frozen=True)
class WatchBatch:
    """What one etcd watch response carried: changes in revision order, and the revision the stream is known
    complete up to (`progress`: the header revision of an empty response etcd sends when asked for progress;
    0 when the response carried events)."""

    changes: list[Change]
    progress: int = 0


class WatchStream:
    """One etcd watch on its own gRPC stream, for the apiserver's watch cache (cacher/).

    Unlike `Storage.watch` (aetcd's shared stream), it can ask etcd for progress
    (WatchProgressRequest): etcd answers on this stream with its current revision,
    which is how a cache learns it has caught up with etcd even when nothing under
    its prefix changed (Kubernetes' RequestWatchProgress). On etcd 3.4 before
    3.4.25 that answer travels apart from the events (etcd-io/etcd#15220), so an
    event written just before the request may arrive just after its answer; the
    cache never moves its revision backwards because of it.
    """

    def __init__(self, storage: Storage, prefix: bytes, start_revision: int) -> None:
        self._storage = storage
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self._requests.put_nowait(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=prefix, range_end=prefix_end(prefix), start_revision=start_revision, prev_kv=True)))
        self.start_revision = start_revision
        self._call: Any = None

    async def _outgoing(self) -> AsyncIterator[Any]:
        while True:
            request = await self._requests.get()
            if request is None:
                return
            yield request

    def request_progress(self) -> None:
        self._requests.put_nowait(rpc.WatchRequest(progress_request=rpc.WatchProgressRequest()))

    async def batches(self) -> AsyncIterator[WatchBatch]:
        """Responses as batches; Gone when the start revision is compacted, Unavailable when the stream breaks."""
        etcd = self._storage._etcd
        self._call = rpc.WatchStub(etcd.channel).Watch(self._outgoing(), metadata=etcd.metadata)
        try:
            async for response in self._call:
                if response.compact_revision:
                    raise Gone(f"too old resource version: {self.start_revision - 1} "
                               f"(compacted below {response.compact_revision})")
                if response.canceled:
                    raise Unavailable(f"etcd cancelled the watch: {response.cancel_reason}")
                if response.created:
                    continue
                if not response.events:
                    yield WatchBatch([], int(response.header.revision))
                    continue
                yield WatchBatch([self._storage._change(event) for event in response.events])
        except grpc.RpcError as err:
            raise Unavailable(f"etcd watch failed: {err.details() or err.code()}") from None
        finally:
            self.close()

    def close(self) -> None:
        self._requests.put_nowait(None)
        if self._call is not None:
            self._call.cancel()


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
