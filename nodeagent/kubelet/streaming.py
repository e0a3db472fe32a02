"""Interactive exec: the kubelet's client of containerd's CRI streaming server.

CRI `Exec` does not run anything: containerd answers with the URL of its
streaming server (`http://127.0.0.1:<port>/exec/<token>`, one use), and the
command starts when a client connects there. The real kubelet proxies that
connection; Flotilla's kubelet speaks it, and turns it into the kubelet API's
bidirectional `ExecStream` (proto/kubelet.proto), which the apiserver forwards
to `kctl exec -i/-t`.

The server speaks SPDY or websocket. Websocket is the one with a well-kept
Python client, and containerd 1.6's server accepts the `v4.channel.k8s.io`
subprotocol (it refuses `v5.channel.k8s.io` with HTTP 403). Each binary message
starts with a channel byte:

    0 stdin   1 stdout   2 stderr   (the server opens 1 and 2 with an empty message)
    3 error   a metav1.Status, sent once when the command ends: Success, or
              Failure with reason NonZeroExitCode and the code in details.causes
    4 resize  {"Width": columns, "Height": rows}

v4 has no way to close stdin alone (v5's channel 255 does), so a command
reading stdin without a terminal never sees end-of-file: on a terminal, the
user's Ctrl-D ends it as usual.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, WebSocketException
from websockets.typing import Subprotocol

from nodeagent.kubelet.runtime import Runtime
from proto import cri_pb2, kubelet_pb2

log = logging.getLogger(__name__)

PROTOCOL = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)


class StreamingError(Exception):
    """The runtime's streaming server could not be reached or refused the session."""


def exit_of(status: bytes) -> kubelet_pb2.ExecExit:
    """The command's exit from the metav1.Status the server sends on the error channel."""
    try:
        parsed = json.loads(status)
    except ValueError:
        return kubelet_pb2.ExecExit(exit_code=1, message=status.decode(errors="replace"))
    if parsed.get("status") == "Success":
        return kubelet_pb2.ExecExit(exit_code=0)
    if parsed.get("reason") == "NonZeroExitCode":
        for cause in (parsed.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                try:
                    return kubelet_pb2.ExecExit(exit_code=int(cause.get("message", "")))
                except ValueError:
                    break
    return kubelet_pb2.ExecExit(exit_code=1, message=str(parsed.get("message") or "exec failed"))


async def attach_url(runtime: Runtime, container_id: str, *, stdin: bool, tty: bool) -> str:
    """Where containerd's streaming server joins the container's own stdio (CRI Attach)."""
    request = cri_pb2.AttachRequest(container_id=container_id, stdin=stdin, tty=tty, stdout=True,
                                    stderr=not tty)  # a terminal has one output stream
    reply = await runtime._call("Attach", request)
    assert isinstance(reply, cri_pb2.AttachResponse)
    return reply.url


def websocket_url(url: str) -> str:
    """The ws:// form of the http:// URL CRI Exec returns."""
    for http, ws in (("http://", "ws://"), ("https://", "wss://")):
        if url.startswith(http):
            return ws + url[len(http):]
    raise StreamingError(f"the runtime returned an unusable streaming URL: {url!r}")


async def exec_session(url: str, requests: AsyncIterator[kubelet_pb2.ExecStreamRequest]
                       ) -> AsyncGenerator[kubelet_pb2.ExecStreamReply, None]:
    """Run the exec behind `url`: `requests` (stdin, resizes) in, output and finally the exit out."""
    try:
        ws = await connect(websocket_url(url), subprotocols=[Subprotocol(PROTOCOL)], open_timeout=10,
                           ping_interval=None, compression=None, max_size=None)
    except (InvalidHandshake, OSError, TimeoutError) as err:
        raise StreamingError(f"the runtime's streaming server at {url}: {err}") from None
    pump = asyncio.create_task(_send_input(ws, requests))
    try:
        async for message in ws:
            if isinstance(message, str) or not message:
                continue  # v4 is binary; text would be the base64 variant we did not ask for
            channel, data = message[0], message[1:]
            if channel == STDOUT and data:
                yield kubelet_pb2.ExecStreamReply(stdout=data)
            elif channel == STDERR and data:
                yield kubelet_pb2.ExecStreamReply(stderr=data)
            elif channel == ERROR:
                yield kubelet_pb2.ExecStreamReply(exit=exit_of(data))
                return
        # Closed with no status: the server ends a successful command this way too.
        yield kubelet_pb2.ExecStreamReply(exit=kubelet_pb2.ExecExit(exit_code=0))
    except WebSocketException as err:
        yield kubelet_pb2.ExecStreamReply(exit=kubelet_pb2.ExecExit(exit_code=1, message=f"exec stream: {err}"))
    finally:
        pump.cancel()
        await ws.close()


async def _send_input(ws: ClientConnection, requests: AsyncIterator[kubelet_pb2.ExecStreamRequest]) -> None:
    """Caller's stdin and terminal sizes to the server, until the caller stops sending."""
    try:
        async for request in requests:
            if request.HasField("stdin"):
                await ws.send(bytes([STDIN]) + request.stdin)
            elif request.HasField("resize"):
                size = {"Width": request.resize.width, "Height": request.resize.height}
                await ws.send(bytes([RESIZE]) + json.dumps(size).encode())
    except WebSocketException:
        pass  # the session ended while input was in flight: the output side reports how
    except Exception as err:  # the caller went away: the session ends with the output side
        log.debug("exec input stopped: %s", err)
