"""Exec and attach: the kubelet's client of containerd's CRI streaming server, over SPDY/3.1.

CRI `Exec` and `Attach` do not run anything: containerd answers with the URL of
its streaming server (`http://127.0.0.1:<port>/exec/<token>`, one use), and the
session starts when a client connects there. The real kubelet proxies that
connection; Flotilla's kubelet speaks it, and turns it into the kubelet API's
bidirectional `ExecStream`/`Attach` (proto/kubelet.proto), which the apiserver
forwards to kctl, kubectl and the Python client.

The server speaks SPDY/3.1 or WebSocket. WebSocket `v4.channel.k8s.io` (the
newest containerd 1.6 accepts) cannot end stdin alone, so a command reading
stdin without a terminal (`kubectl exec -i pod -- cat`, `kubectl cp`) would
never see end-of-file. SPDY can: each stream is half-closed on its own. So the
kubelet upgrades a plain HTTP `POST` with `Upgrade: SPDY/3.1` and
`X-Stream-Protocol-Version: v4.channel.k8s.io`, then opens one SPDY stream per
channel, told apart by its `streamtype` header:

    error   a metav1.Status, sent once when the command ends: Success, or Failure with
            reason NonZeroExitCode and the code in details.causes
    stdin   the caller's input; a FIN on it is end-of-file
    stdout, stderr (stderr only without a terminal)
    resize  {"Width": columns, "Height": rows}, one JSON object per size (terminals only)

The server closes the connection once the command has ended and its output is
written; the exit comes from the Status read on the error stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

from client import spdy
from proto import kubelet_pb2

log = logging.getLogger(__name__)

PROTOCOL = "v4.channel.k8s.io"
CONNECT_TIMEOUT = 10.0
READ_SIZE = 64 * 1024

Send = Callable[[spdy.Frame], Awaitable[None]]


class StreamingError(Exception):
    """The runtime's streaming server could not be reached or refused the session."""


def exit_of(status: bytes) -> kubelet_pb2.ExecExit:
    """The command's exit from the metav1.Status the server sends on the error stream."""
    if not status.strip():
        return kubelet_pb2.ExecExit(exit_code=0)  # closed with no status: how older servers say success
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


async def upgrade(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to `url` upgraded to SPDY/3.1 with the v4 stream protocol."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise StreamingError(f"the runtime returned an unusable streaming URL: {url!r}")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port),
                                                CONNECT_TIMEOUT)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        writer.write((f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: Upgrade\r\n"
                      f"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {PROTOCOL}\r\n"
                      "Content-Length: 0\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as err:
        raise StreamingError(f"the runtime's streaming server at {url}: {err or type(err).__name__}") from None
    status_line, *lines = head.decode(errors="replace").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    if status_line.split(" ")[1:2] != ["101"]:
        body = b""
        with contextlib.suppress(OSError, TimeoutError):
            body = await asyncio.wait_for(reader.read(4096), 1)
        writer.close()
        raise StreamingError(f"the runtime's streaming server refused the session: {status_line} "
                             f"{body.decode(errors='replace').strip()}")
    if headers.get("x-stream-protocol-version") != PROTOCOL:
        writer.close()
        raise StreamingError(f"the runtime's streaming server does not speak {PROTOCOL}")
    return reader, writer


async def exec_session(url: str, requests: AsyncIterator[kubelet_pb2.ExecStreamRequest], *, stdin: bool,
                       tty: bool) -> AsyncGenerator[kubelet_pb2.ExecStreamReply, None]:
    """Run the exec or attach behind `url`: `requests` (stdin, resizes, end of stdin) in, output and the exit out."""
    reader, writer = await upgrade(url)
    frames = spdy.FrameWriter()
    wanted = ["error", "stdout"] + (["stdin"] if stdin else []) + (["resize"] if tty else ["stderr"])
    ids = {kind: 2 * i + 1 for i, kind in enumerate(wanted)}  # a client's streams have odd ids
    for kind, stream_id in ids.items():
        writer.write(frames.encode(spdy.SynStream(stream_id, {"streamtype": [kind]})))
    lock = asyncio.Lock()  # one writer at a time: frames share the compressed header stream

    async def send(frame: spdy.Frame) -> None:
        async with lock:
            writer.write(frames.encode(frame))
            await writer.drain()

    pump = asyncio.create_task(_send_input(send, ids, requests))
    status = b""
    incoming = spdy.FrameReader()
    try:
        while data := await reader.read(READ_SIZE):
            for frame in incoming.feed(data):
                if isinstance(frame, spdy.Ping):
                    await send(frame)
                elif isinstance(frame, spdy.DataFrame) and frame.data:
                    if frame.stream_id == ids["stdout"]:
                        yield kubelet_pb2.ExecStreamReply(stdout=frame.data)
                    elif frame.stream_id == ids.get("stderr"):
                        yield kubelet_pb2.ExecStreamReply(stderr=frame.data)
                    elif frame.stream_id == ids["error"]:
                        status += frame.data
        yield kubelet_pb2.ExecStreamReply(exit=exit_of(status))
    except (OSError, spdy.SpdyError) as err:
        yield kubelet_pb2.ExecStreamReply(exit=kubelet_pb2.ExecExit(exit_code=1, message=f"exec stream: {err}"))
    finally:
        pump.cancel()
        writer.close()


async def _send_input(send: Send, ids: dict[str, int],
                      requests: AsyncIterator[kubelet_pb2.ExecStreamRequest]) -> None:
    """Caller's stdin, terminal sizes and end of input to the server, until the caller stops sending."""
    try:
        async for request in requests:
            if request.HasField("stdin") and "stdin" in ids:
                await send(spdy.DataFrame(ids["stdin"], request.stdin))
            elif request.HasField("close_stdin") and "stdin" in ids:
                await send(spdy.DataFrame(ids["stdin"], b"", spdy.FLAG_FIN))
            elif request.HasField("resize") and "resize" in ids:
                size = {"Width": request.resize.width, "Height": request.resize.height}
                await send(spdy.DataFrame(ids["resize"], json.dumps(size).encode()))
    except OSError:
        pass  # the session ended while input was in flight: the output side reports how
    except Exception as err:  # the caller went away: the session ends with the output side
        log.debug("exec input stopped: %s", err)
