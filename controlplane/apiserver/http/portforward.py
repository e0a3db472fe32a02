"""pods/portforward over WebSocket: kubectl's SPDY tunnel and the Python client's channels.

Every connection a user makes to a forwarded local port becomes one kubelet
`PortForward` stream (proxy.py), which connects to that port on the pod's own
loopback. Two client protocols carry those connections:

- `SPDY/3.1+portforward.k8s.io` (kubectl 1.30+): the WebSocket's binary messages
  are a SPDY/3.1 session (spdy.py). For each local connection kubectl opens two
  streams with the same `requestid` and `port` headers: `streamtype: error`
  (which it half-closes at once and reads to the end) and `streamtype: data`.
  When both are there the forward starts; the client's FIN on the data stream is
  the end of its request (half-close), and when the pod closes the server ends
  both streams — kubectl takes anything read from the error stream as the
  forward's failure.
- `v4.channel.k8s.io` (the Python client, `kubernetes.stream.portforward`): the
  ports come in the `ports` query parameter; port i is channel 2i (data) and
  2i+1 (errors), each opened by a message carrying the port (2 bytes
  little-endian). One connection per port; the WebSocket closes when all end.

Without a WebSocket upgrade (kubectl's retry with `Upgrade: SPDY/3.1` over plain
HTTP) the answer is a 400 Status saying that a WebSocket is required.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import grpc
from aiohttp import WSMsgType, web

from client.spdy import SpdyError, header
from controlplane.apiserver.http.channels import PROTOCOLS, ProtocolError, port_prefix
from controlplane.apiserver.http.exec import is_websocket
from controlplane.apiserver.http.spdy import SpdyServerSession, SpdyStream
from controlplane.apiserver.http.status import status_response
from controlplane.apiserver.proxy import KubeletProxy
from proto import kubelet_pb2
from proto.errors import ApiError, BadRequest, from_rpc_error

log = logging.getLogger(__name__)

SPDY_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
CHANNEL_PROTOCOLS = ("v4.channel.k8s.io", "v4.base64.channel.k8s.io")
CLOSE_TIMEOUT = 5.0


def parse_ports(values: list[str]) -> list[int]:
    """The `ports` query parameter (repeated, or comma-separated as the Python client sends it)."""
    ports: list[int] = []
    for value in values:
        for item in value.split(","):
            try:
                port = int(item)
            except ValueError:
                raise BadRequest(f"invalid port {item!r}: ports are numbers from 1 to 65535") from None
            if not 0 < port < 65536:
                raise BadRequest(f"invalid port {port}: ports are numbers from 1 to 65535")
            ports.append(port)
    return ports


async def serve_portforward(request: web.Request, kubelets: KubeletProxy, namespace: str, pod: str
                            ) -> web.StreamResponse:
    """GET pods/<pod>/portforward: check, upgrade, forward each connection through the pod's kubelet."""
    try:
        target, _ = await kubelets.target(namespace, pod, None, what="port-forward to")
        if not is_websocket(request):
            raise BadRequest("Upgrade request required: this server serves pods/portforward only over WebSocket "
                             f"({SPDY_PROTOCOL}, v4.channel.k8s.io); SPDY over plain HTTP is not supported")
        ports = parse_ports(list(request.query.getall("ports", [])))
    except ApiError as err:
        return status_response(err)
    ws = web.WebSocketResponse(protocols=(SPDY_PROTOCOL, *CHANNEL_PROTOCOLS), autoping=True, max_msg_size=0)
    await ws.prepare(request)
    forwarder = Forwarder(kubelets, namespace, pod, target.metadata.uid)
    if ws.ws_protocol == SPDY_PROTOCOL:
        await forwarder.spdy(ws)
    else:
        await forwarder.channels(ws, ports)
    return ws


class Forwarder:
    """The connections of one port-forward session, each a kubelet PortForward stream."""

    def __init__(self, kubelets: KubeletProxy, namespace: str, pod: str, uid: str) -> None:
        self.kubelets = kubelets
        self.namespace = namespace
        self.pod = pod
        self.uid = uid
        self._tasks: set[asyncio.Task[None]] = set()

    def _start(self, port: int, requests: AsyncIterator[kubelet_pb2.PortForwardRequest]
               ) -> AsyncIterator[kubelet_pb2.PortForwardReply]:
        start = kubelet_pb2.PortForwardStart(namespace=self.namespace, pod=self.pod, uid=self.uid, port=port)
        return self.kubelets.port_forward(start, requests)

    def _error(self, port: int, message: str) -> str:
        return f"error forwarding port {port} to pod {self.pod}, uid {self.uid}: {message}"

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop(self, ws: web.WebSocketResponse) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT)

    # ------------------------------------------------------------------ SPDY in WebSocket (kubectl)

    async def spdy(self, ws: web.WebSocketResponse) -> None:
        session = SpdyServerSession(ws.send_bytes)
        pairs: dict[str, dict[str, SpdyStream]] = {}
        try:
            async for message in ws:
                if message.type != WSMsgType.BINARY:
                    continue
                try:
                    opened = await session.feed(message.data)
                except SpdyError as err:
                    log.info("port-forward %s/%s: %s", self.namespace, self.pod, err)
                    break
                for stream in opened:
                    kind, request_id = header(stream.headers, "streamtype"), header(stream.headers, "requestid")
                    if kind not in ("error", "data"):
                        await session.reset(stream.stream_id)
                        continue
                    pair = pairs.setdefault(request_id, {})
                    pair[kind] = stream
                    if len(pair) == 2:
                        del pairs[request_id]
                        self._spawn(self._spdy_connection(session, pair["error"], pair["data"]))
                if session.going_away:
                    break
        finally:
            await self._stop(ws)

    async def _spdy_connection(self, session: SpdyServerSession, error: SpdyStream, data: SpdyStream) -> None:
        port_text = header(data.headers, "port")
        try:
            port = int(port_text)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            await session.write(error, f"invalid port {port_text!r}".encode(), fin=True)
            await session.write(data, b"", fin=True)
            return

        async def requests() -> AsyncIterator[kubelet_pb2.PortForwardRequest]:
            while (chunk := await data.incoming.get()) is not None:
                yield kubelet_pb2.PortForwardRequest(data=chunk)
            yield kubelet_pb2.PortForwardRequest(close_write=True)
            await asyncio.Event().wait()  # stay open: the pod may still answer after the client's FIN

        failure = ""
        try:
            async for reply in self._start(port, requests()):
                if reply.HasField("data"):
                    await session.write(data, reply.data)
                elif reply.HasField("error"):
                    failure = reply.error
                    break
        except grpc.RpcError as err:
            failure = from_rpc_error(err).message
        except ConnectionError:
            return  # the tunnel itself is gone
        if failure:
            await session.write(error, self._error(port, failure).encode())
        await session.write(data, b"", fin=True)
        await session.write(error, b"", fin=True)

    # ------------------------------------------------------------------ channels (the Python client)

    async def channels(self, ws: web.WebSocketResponse, ports: list[int]) -> None:
        protocol = PROTOCOLS.get(ws.ws_protocol or "", PROTOCOLS["v4.channel.k8s.io"])
        queues: list[asyncio.Queue[bytes | None]] = [asyncio.Queue() for _ in ports]

        async def send(channel: int, data: bytes) -> None:
            message = protocol.encode(channel, data)
            await (ws.send_str(message) if isinstance(message, str) else ws.send_bytes(message))

        async def connection(index: int, port: int) -> None:
            async def requests() -> AsyncIterator[kubelet_pb2.PortForwardRequest]:
                while (chunk := await queues[index].get()) is not None:
                    yield kubelet_pb2.PortForwardRequest(data=chunk)
            try:
                async for reply in self._start(port, requests()):
                    if reply.HasField("data"):
                        await send(2 * index, reply.data)
                    elif reply.HasField("error"):
                        await send(2 * index + 1, self._error(port, reply.error).encode())
                        return
            except grpc.RpcError as err:
                await send(2 * index + 1, self._error(port, from_rpc_error(err).message).encode())

        async def all_connections() -> None:
            await asyncio.gather(*(connection(i, port) for i, port in enumerate(ports)))

        async def read_client() -> None:
            async for message in ws:
                if message.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                    continue
                try:
                    channel, data = protocol.decode(message.data)
                except ProtocolError:
                    continue
                if channel // 2 < len(queues) and channel % 2 == 0 and data:
                    queues[channel // 2].put_nowait(data)

        try:
            if not ports:
                await send(1, b"at least one port must be given in the ports query parameter")
                return
            for i, port in enumerate(ports):
                await send(2 * i, port_prefix(port))
                await send(2 * i + 1, port_prefix(port))
            reader = asyncio.ensure_future(read_client())
            forwards = asyncio.ensure_future(all_connections())
            self._tasks |= {reader, forwards}
            # Over when every connection has ended, or when the client hangs up.
            await asyncio.wait((reader, forwards), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for queue in queues:
                queue.put_nowait(None)
            await self._stop(ws)
