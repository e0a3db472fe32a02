"""The server side of a SPDY/3.1 session, over whatever carries its bytes.

kubectl 1.32's port-forward tunnels SPDY through a WebSocket: the binary
messages, taken in order, are one byte stream of SPDY frames (a frame may span
messages, a message may hold several frames). This session reads that stream
with the shared codec (client/spdy.py) and keeps what a server must: the
streams the client opened, a SYN_REPLY for each (kubectl waits for it), data
routed to its stream until the client's FIN, PINGs echoed, RST_STREAM and
GOAWAY honoured. Writes go through one lock, so frames from concurrent
forwarders never interleave inside the compressed header stream or a message.

Flow control is left out, as Kubernetes' own SPDY library (spdystream) leaves
it: neither side sends WINDOW_UPDATE and both ignore it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from client.spdy import (
    DataFrame,
    Frame,
    FrameReader,
    FrameWriter,
    GoAway,
    Headers,
    Ping,
    RstStream,
    SpdyError,
    SynReply,
    SynStream,
)

Send = Callable[[bytes], Awaitable[None]]


@dataclass
class SpdyStream:
    """One stream the client opened: its headers, and what it sends until its FIN (None)."""

    stream_id: int
    headers: Headers
    incoming: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    remote_closed: bool = False
    local_closed: bool = False


class SpdyServerSession:
    def __init__(self, send: Send) -> None:
        self._send = send
        self._reader = FrameReader()
        self._writer = FrameWriter()
        self._lock = asyncio.Lock()
        self.streams: dict[int, SpdyStream] = {}
        self.going_away = False

    async def feed(self, data: bytes) -> list[SpdyStream]:
        """Take bytes from the client; returns the streams they opened (already replied to)."""
        opened = []
        for frame in self._reader.feed(data):
            stream = await self._handle(frame)
            if stream is not None:
                opened.append(stream)
        return opened

    async def _handle(self, frame: Frame) -> SpdyStream | None:
        if isinstance(frame, SynStream):
            if frame.stream_id in self.streams or frame.stream_id % 2 == 0:
                await self.reset(frame.stream_id)
                return None
            stream = SpdyStream(frame.stream_id, frame.headers)
            self.streams[frame.stream_id] = stream
            await self._write(SynReply(frame.stream_id))
            if frame.fin:
                self._remote_fin(stream)
            return stream
        if isinstance(frame, DataFrame):
            target = self.streams.get(frame.stream_id)
            if target is None or target.remote_closed:
                return None  # data after a reset or FIN: dropped, as the peer expects nothing back
            if frame.data:
                target.incoming.put_nowait(frame.data)
            if frame.fin:
                self._remote_fin(target)
        elif isinstance(frame, RstStream):
            aborted = self.streams.pop(frame.stream_id, None)
            if aborted is not None:
                aborted.local_closed = True
                self._remote_fin(aborted)
        elif isinstance(frame, Ping):
            await self._write(frame)  # the peer measures the round trip: echo it unchanged
        elif isinstance(frame, GoAway):
            self.going_away = True
        return None  # SETTINGS, WINDOW_UPDATE, HEADERS: nothing for this server to do

    def _remote_fin(self, stream: SpdyStream) -> None:
        if not stream.remote_closed:
            stream.remote_closed = True
            stream.incoming.put_nowait(None)

    async def write(self, stream: SpdyStream, data: bytes, *, fin: bool = False) -> None:
        """Data on `stream`; `fin` half-closes our side (only once)."""
        if stream.local_closed:
            return
        if fin:
            stream.local_closed = True
        await self._write(DataFrame(stream.stream_id, data, 1 if fin else 0))
        if stream.local_closed and stream.remote_closed:
            self.streams.pop(stream.stream_id, None)

    async def reset(self, stream_id: int, status: int = 5) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.local_closed = True
            self._remote_fin(stream)
        await self._write(RstStream(stream_id, status))

    async def close(self) -> None:
        """GOAWAY: the session ends; streams still open are abandoned."""
        last = max(self.streams, default=0)
        for stream in list(self.streams.values()):
            self._remote_fin(stream)
        await self._write(GoAway(last, 0))

    async def _write(self, frame: Frame) -> None:
        async with self._lock:
            await self._send(self._writer.encode(frame))


__all__ = ["SpdyError", "SpdyServerSession", "SpdyStream"]
