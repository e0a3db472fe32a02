"""The kubelet API (proto/kubelet.proto): container logs, exec, attach and port-forward, from the node.

Only the node has a container's log file and a way into its namespaces, so the
apiserver forwards `logs`, `exec`, `attach` and `port-forward` here (it finds
this server from the Node's InternalIP and daemonEndpoints.kubeletEndpoint.Port).

`ExecStream` is the interactive exec (`kctl exec -i/-t`, kubectl exec) and
`Attach` joins a running container's own stdio (kubectl attach): the kubelet
asks CRI for a streaming URL and drives containerd's streaming server itself
(streaming.py). `PortForward` connects to a port on the pod's loopback from
inside its network namespace (portforward.py).

Logs are read from the file containerd writes for each container instance (CRI
has no logs call): one line per chunk of output, `<RFC 3339 time> <stream>
<P|F> <text>`, where P marks a partial line continued on the next. Following a
log polls the file until the container stops or the caller goes away.

In a cluster with a PKI the API serves TLS with the node's own certificate and
requires a client certificate from the cluster CA, and only callers in
`system:masters` (the apiserver's kubeadm-style `apiserver-kubelet-client`)
may use it: a node's or a component's certificate is signed by the same CA but
has no business in another node's containers. (Kubernetes asks the apiserver
with a SubjectAccessReview for `nodes/proxy`; the one caller here is the
apiserver, so a group check is the same answer without the round trip.)
Without TLS files the API is plaintext, as in tests that run kubelets without a PKI.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc

from client.certificates import identity_of
from client.informer import Store
from nodeagent.kubelet.portforward import PortForwardError, connect, relay, sandbox_netns
from nodeagent.kubelet.runtime import LABEL_CONTAINER_NAME, LABEL_POD_UID, CRIError, Runtime
from nodeagent.kubelet.streaming import StreamingError, exec_session
from proto import core_pb2, cri_pb2, kubelet_pb2, kubelet_pb2_grpc

log = logging.getLogger(__name__)

FOLLOW_POLL = 0.2
EXEC_DEFAULT_TIMEOUT = 60
ALLOWED_GROUP = "system:masters"


@dataclass(frozen=True)
class ServingTLS:
    """The kubelet API's TLS material: serving certificate and key, and the CA of accepted clients (PEM)."""

    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes

    @classmethod
    def from_files(cls, cert: str, key: str, client_ca: str) -> ServingTLS | None:
        """None when no file is named (plaintext); all three or an error naming what is missing."""
        named = {"tls_cert_file": cert, "tls_private_key_file": key, "client_ca_file": client_ca}
        if not any(named.values()):
            return None
        missing = [k for k, v in named.items() if not v]
        if missing:
            raise ValueError(f"the kubelet API's TLS needs {', '.join(missing)} too")
        return cls(Path(cert).read_bytes(), Path(key).read_bytes(), Path(client_ca).read_bytes())


class ContainerLookupError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class CRILogParser:
    """Turns CRI log records into the container's output lines, across reads of a growing file."""

    def __init__(self, *, timestamps: bool = False, since: datetime | None = None) -> None:
        self.timestamps = timestamps
        self.since = since  # records written before are skipped (sinceSeconds, sinceTime)
        self._unfinished = b""  # a record not yet ended by its newline
        self._partial = b""  # text of P records waiting for their F record

    def feed(self, data: bytes) -> list[bytes]:
        lines = []
        records = (self._unfinished + data).split(b"\n")
        self._unfinished = records.pop()
        for record in records:
            parts = record.split(b" ", 3)
            if len(parts) < 3:
                continue
            if self.since is not None and not self._partial and record_time(parts[0]) < self.since:
                continue
            self._partial += parts[3] if len(parts) > 3 else b""
            if parts[2] == b"F":
                lines.append((parts[0] + b" " if self.timestamps else b"") + self._partial + b"\n")
                self._partial = b""
        return lines


def record_time(stamp: bytes) -> datetime:
    """The time of a CRI log record (RFC 3339 with nanoseconds; Python keeps microseconds)."""
    text = stamp.decode(errors="replace").replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # cut the fraction to 6 digits, keep the zone
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)]:0<6}{rest[digits:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def logs_since(request: kubelet_pb2.LogsRequest) -> datetime | None:
    """The earliest record time a LogsRequest wants, from sinceSeconds or sinceTime."""
    if request.HasField("since_seconds"):
        return datetime.now(UTC) - timedelta(seconds=request.since_seconds)
    if request.since_time:
        return record_time(request.since_time.encode())
    return None


class ByteLimit:
    """limitBytes: lets chunks through until the limit, cutting the last one."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit

    def take(self, data: bytes) -> bytes:
        if self.left is None:
            return data
        data = data[:self.left]
        self.left -= len(data)
        return data

    @property
    def spent(self) -> bool:
        return self.left is not None and self.left <= 0


class KubeletService(kubelet_pb2_grpc.KubeletServicer):
    def __init__(self, runtime: Runtime, pods: Store[core_pb2.Pod], *, require_group: str = "") -> None:
        self.runtime = runtime
        self.pods = pods
        self.require_group = require_group

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        """Over mTLS: only a caller whose verified certificate is in `require_group`."""
        if not self.require_group:
            return
        pem = (context.auth_context() or {}).get("x509_pem_cert")
        user, groups = identity_of(pem[0]) if pem else ("", ())
        if self.require_group not in groups:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f'user "{user or "anonymous"}" may not use the kubelet API '
                                f"(only {self.require_group})")

    async def _container(self, namespace: str, name: str, container: str, *, previous: bool = False,
                         running: bool = False) -> cri_pb2.Container:
        pod = self.pods.get(f"{namespace}/{name}")
        if pod is None:
            raise ContainerLookupError(grpc.StatusCode.NOT_FOUND, f'pods "{name}" not found on this node')
        names = [c.name for c in pod.spec.containers]
        if not container:
            if len(names) != 1:
                raise ContainerLookupError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"a container name must be specified for pod {name}, choose one of: {names}")
            container = names[0]
        if container not in names:
            raise ContainerLookupError(grpc.StatusCode.NOT_FOUND, f"container {container} is not valid for pod {name}")
        found = await self.runtime.list_containers({LABEL_POD_UID: pod.metadata.uid,
                                                    LABEL_CONTAINER_NAME: container})
        found.sort(key=lambda c: (c.metadata.attempt, c.created_at), reverse=True)
        index = 1 if previous else 0
        if len(found) <= index:
            what = "previous terminated container" if previous else "container"
            raise ContainerLookupError(grpc.StatusCode.NOT_FOUND, f'{what} "{container}" in pod "{name}" not found')
        chosen = found[index]
        if running and chosen.state != cri_pb2.CONTAINER_RUNNING:
            raise ContainerLookupError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"container {container} in pod {name} is not running")
        return chosen

    async def Logs(self, request: kubelet_pb2.LogsRequest, context: grpc.aio.ServicerContext
                   ) -> AsyncIterator[kubelet_pb2.LogChunk]:
        await self._authorize(context)
        try:
            container = await self._container(request.namespace, request.pod, request.container,
                                               previous=request.previous)
            status = await self.runtime.container_status(container.id)
        except ContainerLookupError as err:
            await context.abort(err.code, str(err))
            return
        except CRIError as err:
            await context.abort(err.code, str(err))
            return
        # Headers now: the apiserver answers the user as soon as the container is known, log or no log.
        await context.send_initial_metadata(())
        path = Path(status.log_path)
        data = await asyncio.to_thread(_read_from, path, 0)
        offset = len(data)
        parser = CRILogParser(timestamps=request.timestamps, since=logs_since(request))
        limit = ByteLimit(request.limit_bytes if request.HasField("limit_bytes") else None)
        lines = parser.feed(data)
        if request.HasField("tail_lines"):
            lines = lines[-request.tail_lines:] if request.tail_lines > 0 else []
        if lines:
            yield kubelet_pb2.LogChunk(data=limit.take(b"".join(lines)))
        if not request.follow or request.previous or limit.spent:
            return
        while True:
            await asyncio.sleep(FOLLOW_POLL)
            new = await asyncio.to_thread(_read_from, path, offset)
            offset += len(new)
            lines = parser.feed(new)
            if lines:
                yield kubelet_pb2.LogChunk(data=limit.take(b"".join(lines)))
                if limit.spent:
                    return
            elif not new:
                try:
                    state = (await self.runtime.container_status(container.id)).state
                except CRIError:
                    return
                if state != cri_pb2.CONTAINER_RUNNING:
                    return

    async def Exec(self, request: kubelet_pb2.ExecRequest, context: grpc.aio.ServicerContext
                   ) -> kubelet_pb2.ExecReply:
        await self._authorize(context)
        if not request.command:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a command is required")
        try:
            container = await self._container(request.namespace, request.pod, request.container, running=True)
            reply = await self.runtime.exec_sync(container.id, list(request.command),
                                                 request.timeout_seconds or EXEC_DEFAULT_TIMEOUT)
        except ContainerLookupError as err:
            await context.abort(err.code, str(err))
            raise  # unreachable: abort raises
        except CRIError as err:
            await context.abort(err.code, str(err))
            raise
        return kubelet_pb2.ExecReply(stdout=reply.stdout, stderr=reply.stderr, exit_code=reply.exit_code)


    async def ExecStream(self, request_iterator: AsyncIterator[kubelet_pb2.ExecStreamRequest],
                         context: grpc.aio.ServicerContext) -> AsyncIterator[kubelet_pb2.ExecStreamReply]:
        async for reply in self._stream(request_iterator, context, attach=False):
            yield reply

    async def Attach(self, request_iterator: AsyncIterator[kubelet_pb2.ExecStreamRequest],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[kubelet_pb2.ExecStreamReply]:
        async for reply in self._stream(request_iterator, context, attach=True):
            yield reply

    async def _stream(self, request_iterator: AsyncIterator[kubelet_pb2.ExecStreamRequest],
                      context: grpc.aio.ServicerContext, *, attach: bool) -> AsyncIterator[kubelet_pb2.ExecStreamReply]:
        """An exec or attach session: its start, then containerd's streaming server until the exit."""
        await self._authorize(context)
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or not first.HasField("start"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a stream must begin with its start")
            return
        start = first.start
        if not attach and not start.command:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a command is required")
            return
        try:
            container = await self._container(start.namespace, start.pod, start.container, running=True)
            if attach:
                url = await self.runtime.attach_url(container.id, stdin=start.stdin, tty=start.tty)
            else:
                url = await self.runtime.exec_url(container.id, list(start.command), stdin=start.stdin,
                                                  tty=start.tty)
            # aclosing: a caller that goes away closes the session (and its websocket) at once.
            async with aclosing(exec_session(url, requests, stdin=start.stdin, tty=start.tty)) as replies:
                async for reply in replies:
                    yield reply
        except ContainerLookupError as err:
            await context.abort(err.code, str(err))
        except CRIError as err:
            await context.abort(err.code, str(err))
        except StreamingError as err:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(err))

    async def PortForward(self, request_iterator: AsyncIterator[kubelet_pb2.PortForwardRequest],
                          context: grpc.aio.ServicerContext) -> AsyncIterator[kubelet_pb2.PortForwardReply]:
        await self._authorize(context)
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or not first.HasField("start"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a port-forward must begin with its start")
            return
        start = first.start
        if not 0 < start.port < 65536:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid port {start.port}")
            return
        try:
            netns = await self._pod_netns(start.namespace, start.pod, start.uid)
            sock = await connect(netns, start.port)
        except ContainerLookupError as err:
            await context.abort(err.code, str(err))
            return
        except CRIError as err:
            await context.abort(err.code, str(err))
            return
        except PortForwardError as err:
            # Told in-band, as Kubernetes does on the error stream: the user's connection fails, not the forward.
            yield kubelet_pb2.PortForwardReply(error=str(err))
            return
        async with aclosing(relay(sock, requests)) as replies:
            async for reply in replies:
                yield reply

    async def _pod_netns(self, namespace: str, name: str, uid: str) -> str:
        pod = self.pods.get(f"{namespace}/{name}")
        if pod is None or (uid and pod.metadata.uid != uid):
            raise ContainerLookupError(grpc.StatusCode.NOT_FOUND, f'pods "{name}" not found on this node')
        sandboxes = await self.runtime.list_pod_sandboxes({LABEL_POD_UID: pod.metadata.uid})
        ready = [s for s in sandboxes if s.state == cri_pb2.SANDBOX_READY]
        if not ready:
            raise ContainerLookupError(grpc.StatusCode.FAILED_PRECONDITION, f"pod {name} has no running sandbox")
        ready.sort(key=lambda s: s.created_at, reverse=True)
        return await sandbox_netns(self.runtime, ready[0].id)


def _read_from(path: Path, offset: int) -> bytes:
    """What the file holds past `offset` ("" if it is gone: the container was removed)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return b""


async def serve(runtime: Runtime, pods: Store[core_pb2.Pod], address: str, tls: ServingTLS | None = None
                ) -> tuple[grpc.aio.Server, int]:
    """Start the kubelet API on `address` ("host:port", port 0 for any); returns the server and its port."""
    server = grpc.aio.server()
    kubelet_pb2_grpc.add_KubeletServicer_to_server(
        KubeletService(runtime, pods, require_group=ALLOWED_GROUP if tls else ""), server)
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials([(tls.key_pem, tls.cert_pem)], root_certificates=tls.client_ca_pem,
                                                  require_client_auth=True)
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return server, port
