"""pods/exec and pods/attach over WebSocket: kubectl's and the Python client's interactive streams.

`kubectl exec` opens `GET .../pods/<name>/exec?command=..&stdin=..&tty=..` with
`Upgrade: websocket` and the subprotocol `v5.channel.k8s.io` (the Python client
asks for `v4.channel.k8s.io`); `kubectl attach` does the same on `.../attach`,
without a command. The apiserver checks the pod and container first, so a
missing pod or a wrong container is an ordinary Status answer, then upgrades and
relays: channel messages (channels.py) from the client become the kubelet's
`ExecStream`/`Attach` frames (stdin, resize, end of stdin), and the kubelet's
output and exit come back as stdout, stderr and a Status on the error channel,
after which the server closes the WebSocket — kubectl finishes reading its
output when the connection closes and exits with the Status's exit code.

When the WebSocket attempt fails, kubectl retries with `POST` and
`Upgrade: SPDY/3.1`; Flotilla speaks only WebSocket here, so that request gets
a 400 Status saying so (kubectl prints it as `unable to upgrade connection`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

import grpc
from aiohttp import WSMsgType, web
from multidict import MultiMapping

from controlplane.apiserver.http.channels import (
    CLOSE,
    DEFAULT,
    ERROR,
    PROTOCOLS,
    RESIZE,
    STDERR,
    STDIN,
    STDOUT,
    ChannelProtocol,
    ProtocolError,
    exit_status,
    parse_bool,
    status_payload,
    terminal_size,
)
from controlplane.apiserver.http.status import status_response
from controlplane.apiserver.proxy import KubeletProxy
from proto import kubelet_pb2
from proto.errors import ApiError, BadRequest, from_rpc_error

log = logging.getLogger(__name__)

# Preference when a client offers several: the newest first (aiohttp takes the client's order).
EXEC_PROTOCOLS = tuple(PROTOCOLS)
CLOSE_TIMEOUT = 5.0


@dataclass(frozen=True)
class ExecOptions:
    """PodExecOptions / PodAttachOptions from the query string."""

    container: str
    command: list[str]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def parse(cls, query: MultiMapping[str], subresource: str) -> ExecOptions:
        command = list(query.getall("command", [])) if subresource == "exec" else []
        stdin, stdout = parse_bool(query, "stdin"), parse_bool(query, "stdout", subresource == "attach")
        stderr, tty = parse_bool(query, "stderr", subresource == "attach"), parse_bool(query, "tty")
        if subresource == "exec" and not command:
            raise BadRequest("you must specify at least one command for the container")
        if not (stdin or stdout or stderr):
            raise BadRequest("you must specify at least one of stdin, stdout, stderr")
        # A terminal has one output stream: stderr is folded into stdout, as the kubelet does.
        return cls(query.get("container", ""), command, stdin, stdout, stderr and not tty, tty)


def is_websocket(request: web.Request) -> bool:
    return "websocket" in request.headers.get("Upgrade", "").lower()


def websocket_required(what: str) -> BadRequest:
    return BadRequest(f"Upgrade request required: this server serves {what} only over WebSocket "
                      "(v5.channel.k8s.io, v4.channel.k8s.io); SPDY is not supported")


async def serve_exec(request: web.Request, kubelets: KubeletProxy, namespace: str, pod: str,
                     subresource: str) -> web.StreamResponse:
    """GET pods/<pod>/exec or pods/<pod>/attach: check, upgrade, relay to the kubelet until the exit."""
    try:
        if subresource not in ("exec", "attach"):
            raise BadRequest(f"unknown streaming subresource {subresource!r}")
        options = ExecOptions.parse(request.query, subresource)
        _, container = await kubelets.target(namespace, pod, options.container,
                                             what="exec into" if subresource == "exec" else "attach to")
        if not is_websocket(request):
            raise websocket_required(f"pods/{subresource}")
    except ApiError as err:
        return status_response(err)
    ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, autoping=True, max_msg_size=0)
    await ws.prepare(request)
    protocol = PROTOCOLS.get(ws.ws_protocol or "", DEFAULT)
    start = kubelet_pb2.ExecStart(namespace=namespace, pod=pod, container=container, command=options.command,
                                  stdin=options.stdin, tty=options.tty)
    session = ExecSession(ws, protocol, options)
    opened = (kubelets.attach_stream if subresource == "attach" else kubelets.exec_stream)(start, session.inputs())
    await session.run(opened)
    return ws


class ExecSession:
    """One upgraded exec/attach: client messages in as kubelet frames, kubelet replies out as messages."""

    def __init__(self, ws: web.WebSocketResponse, protocol: ChannelProtocol, options: ExecOptions) -> None:
        self.ws = ws
        self.protocol = protocol
        self.options = options
        self._input: asyncio.Queue[kubelet_pb2.ExecStreamRequest | None] = asyncio.Queue()
        self._client_gone = asyncio.Event()

    async def inputs(self) -> AsyncIterator[kubelet_pb2.ExecStreamRequest]:
        while (request := await self._input.get()) is not None:
            yield request

    async def run(self, replies: AsyncGenerator[kubelet_pb2.ExecStreamReply, None]) -> None:
        reader = asyncio.create_task(self._read_client())
        relay = asyncio.create_task(self._relay(replies))
        gone = asyncio.create_task(self._client_gone.wait())
        try:
            # The exit ends the session; so does a client that hangs up first.
            await asyncio.wait((relay, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay, gone):
                task.cancel()
            self._input.put_nowait(None)
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                await asyncio.wait_for(self.ws.close(), CLOSE_TIMEOUT)
            reader.cancel()
            await asyncio.gather(reader, relay, gone, return_exceptions=True)

    async def _relay(self, replies: AsyncGenerator[kubelet_pb2.ExecStreamReply, None]) -> None:
        status = None
        try:
            async with aclosing(replies) as stream:
                async for reply in stream:
                    if reply.HasField("stdout") and self.options.stdout:
                        await _send(self.ws, STDOUT, self.protocol, reply.stdout)
                    elif reply.HasField("stderr") and self.options.stderr:
                        await _send(self.ws, STDERR, self.protocol, reply.stderr)
                    elif reply.HasField("exit"):
                        status = exit_status(reply.exit.exit_code, self.options.command, reply.exit.message)
                        break
        except grpc.RpcError as err:
            status = exit_status(1, self.options.command, from_rpc_error(err).message)
        except ApiError as err:
            status = exit_status(1, self.options.command, err.message)
        if status is None:
            status = exit_status(1, self.options.command, "the kubelet ended the stream without an exit status")
        await _send(self.ws, ERROR, self.protocol, status_payload(self.protocol, status))

    async def _read_client(self) -> None:
        """Client messages → kubelet frames (stdin, resize, end of stdin) until the client closes."""
        try:
            async for message in self.ws:
                if message.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                    continue
                try:
                    channel, data = self.protocol.decode(message.data)
                except ProtocolError as err:
                    log.debug("exec: ignoring a bad message: %s", err)
                    continue
                if channel == STDIN and self.options.stdin and data:
                    self._input.put_nowait(kubelet_pb2.ExecStreamRequest(stdin=data))
                elif channel == RESIZE and self.protocol.resize and self.options.tty:
                    try:
                        width, height = terminal_size(data)
                    except ProtocolError as err:
                        log.debug("exec: %s", err)
                        continue
                    self._input.put_nowait(kubelet_pb2.ExecStreamRequest(
                        resize=kubelet_pb2.TerminalSize(width=width, height=height)))
                elif channel == CLOSE and data[:1] == bytes([STDIN]) and self.options.stdin:
                    self._input.put_nowait(kubelet_pb2.ExecStreamRequest(close_stdin=True))
        finally:
            self._client_gone.set()


async def _send(ws: web.WebSocketResponse, channel: int, protocol: ChannelProtocol, data: bytes) -> None:
    message = protocol.encode(channel, data)
    if isinstance(message, str):
        await ws.send_str(message)
    else:
        await ws.send_bytes(message)
