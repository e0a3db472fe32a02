"""SPDY/3.1 framing: the multiplexing layer under Kubernetes' streaming protocols.

Before WebSockets, every Kubernetes stream (exec, attach, port-forward) ran on
SPDY/3.1, and it still does in two places Flotilla meets: kubectl 1.32's
port-forward carries SPDY frames inside WebSocket binary messages
(subprotocol `SPDY/3.1+portforward.k8s.io`), and containerd's CRI streaming
server speaks SPDY after an HTTP `Upgrade: SPDY/3.1` — the one way to end a
command's stdin alone there. This module is only the codec, shared by both:
frames to bytes and back, and the header blocks' compression. Sessions (which
streams exist, who replies) belong to their users.

Frames (all integers big-endian):

    control  |1| version (15) | type (16) | flags (8) | length (24) | payload
    data     |0| stream id (31)           | flags (8) | length (24) | data

SYN_STREAM opens a stream (odd ids from the client, even from the server) with a
header block; SYN_REPLY accepts it; DATA with FLAG_FIN half-closes the sender's
side; RST_STREAM aborts a stream; PING must be echoed; GOAWAY ends the session.
Kubernetes tells streams apart by headers: `streamtype` (error, data, stdin,
stdout, stderr, resize), and for port-forward `port` and `requestid`.

A header block is `count (32)` then `len (32) name len (32) value` pairs, names
lower-case, several values of one name joined by NUL. Each direction of a session
compresses its blocks with one zlib stream, primed with the dictionary the
SPDY/3 specification gives (common header words, each with a 4-byte length,
then a run of status lines, dates and media types) and flushed (Z_SYNC_FLUSH)
after every block, so the receiver can inflate each block as it comes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

# RST_STREAM status codes.
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, CANCEL, INTERNAL_ERROR = 1, 2, 3, 5, 6

MAX_LENGTH = (1 << 24) - 1
MAX_STREAM_ID = (1 << 31) - 1

_WORDS = [*(
    "options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges "
    "age allow authorization cache-control connection content-base content-encoding content-language "
    "content-length content-location content-md5 content-range content-type date etag expect expires from "
    "host if-match if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after server te trailer "
    "transfer-encoding upgrade user-agent vary via warning www-authenticate method get status"
).split(), "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
# The SPDY/3 header dictionary: each word with its 4-byte length, then the tail as is.
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


class SpdyError(Exception):
    """Bytes that are not SPDY/3.1 (a bad frame, a header block that does not inflate)."""


Headers = dict[str, list[str]]


@dataclass
class DataFrame:
    stream_id: int
    data: bytes = b""
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass
class SynStream:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    flags: int = 0
    associated_id: int = 0
    priority: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    flags: int = 0


@dataclass
class HeadersFrame:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    flags: int = 0


@dataclass
class RstStream:
    stream_id: int
    status: int = CANCEL


@dataclass
class Settings:
    entries: list[tuple[int, int, int]] = field(default_factory=list)  # (flags, id, value)
    flags: int = 0


@dataclass
class Ping:
    ping_id: int


@dataclass
class GoAway:
    last_good_stream_id: int = 0
    status: int = 0


@dataclass
class WindowUpdate:
    stream_id: int
    delta: int


Frame = (DataFrame | SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway | WindowUpdate)


def header(headers: Headers, name: str) -> str:
    """The first value of header `name` ("" if absent)."""
    values = headers.get(name.lower()) or [""]
    return values[0]


def encode_header_block(headers: Headers) -> bytes:
    out = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        raw_name, raw_value = name.lower().encode(), "\0".join(values).encode()
        out += [struct.pack(">I", len(raw_name)), raw_name, struct.pack(">I", len(raw_value)), raw_value]
    return b"".join(out)


def decode_header_block(block: bytes) -> Headers:
    headers: Headers = {}
    try:
        (count,), at = struct.unpack_from(">I", block), 4
        for _ in range(count):
            (size,) = struct.unpack_from(">I", block, at)
            name, at = block[at + 4:at + 4 + size].decode(), at + 4 + size
            (size,) = struct.unpack_from(">I", block, at)
            value, at = block[at + 4:at + 4 + size].decode(), at + 4 + size
            if at > len(block):
                raise SpdyError("a header block ends inside a name or value")
            headers.setdefault(name.lower(), []).extend(value.split("\0"))
    except (struct.error, UnicodeDecodeError) as err:
        raise SpdyError(f"bad header block: {err}") from None
    return headers


class FrameWriter:
    """Frames to bytes for one direction of a session (it owns that direction's zlib stream)."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, zdict=DICTIONARY)

    def _headers(self, headers: Headers) -> bytes:
        return self._deflate.compress(encode_header_block(headers)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, DataFrame):
            return _frame_header(frame.stream_id & MAX_STREAM_ID, frame.flags, len(frame.data)) + frame.data
        if isinstance(frame, SynStream):
            payload = struct.pack(">IIBB", frame.stream_id, frame.associated_id, (frame.priority & 7) << 5, 0)
            return _control(SYN_STREAM, frame.flags, payload + self._headers(frame.headers))
        if isinstance(frame, SynReply):
            return _control(SYN_REPLY, frame.flags, struct.pack(">I", frame.stream_id) + self._headers(frame.headers))
        if isinstance(frame, HeadersFrame):
            return _control(HEADERS, frame.flags, struct.pack(">I", frame.stream_id) + self._headers(frame.headers))
        if isinstance(frame, RstStream):
            return _control(RST_STREAM, 0, struct.pack(">II", frame.stream_id, frame.status))
        if isinstance(frame, Settings):
            body = struct.pack(">I", len(frame.entries)) + b"".join(
                struct.pack(">II", (flags << 24) | ident, value) for flags, ident, value in frame.entries)
            return _control(SETTINGS, frame.flags, body)
        if isinstance(frame, Ping):
            return _control(PING, 0, struct.pack(">I", frame.ping_id))
        if isinstance(frame, GoAway):
            return _control(GOAWAY, 0, struct.pack(">II", frame.last_good_stream_id, frame.status))
        return _control(WINDOW_UPDATE, 0, struct.pack(">II", frame.stream_id, frame.delta))


class FrameReader:
    """Bytes to frames for one direction of a session: feed what arrives, take the whole frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            length = int.from_bytes(self._buffer[5:8], "big")
            if len(self._buffer) < 8 + length:
                break
            head, payload = bytes(self._buffer[:8]), bytes(self._buffer[8:8 + length])
            del self._buffer[:8 + length]
            frame = self._decode(head, payload)
            if frame is not None:
                frames.append(frame)
        return frames

    def _headers(self, block: bytes) -> Headers:
        try:
            return decode_header_block(self._inflate.decompress(block))
        except zlib.error as err:
            raise SpdyError(f"a header block does not inflate: {err}") from None

    def _decode(self, head: bytes, payload: bytes) -> Frame | None:
        first, flags = struct.unpack_from(">I", head)[0], head[4]
        if not first & 0x80000000:
            return DataFrame(first & MAX_STREAM_ID, payload, flags)
        version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise SpdyError(f"SPDY version {version} is not 3")
        try:
            if kind == SYN_STREAM:
                stream_id, associated, priority = struct.unpack_from(">IIB", payload)
                return SynStream(stream_id & MAX_STREAM_ID, self._headers(payload[10:]), flags,
                                 associated & MAX_STREAM_ID, priority >> 5)
            if kind in (SYN_REPLY, HEADERS):
                (stream_id,) = struct.unpack_from(">I", payload)
                cls = SynReply if kind == SYN_REPLY else HeadersFrame
                return cls(stream_id & MAX_STREAM_ID, self._headers(payload[4:]), flags)
            if kind == RST_STREAM:
                stream_id, status = struct.unpack_from(">II", payload)
                return RstStream(stream_id & MAX_STREAM_ID, status)
            if kind == SETTINGS:
                (count,) = struct.unpack_from(">I", payload)
                entries = [struct.unpack_from(">II", payload, 4 + 8 * i) for i in range(count)]
                return Settings([(word >> 24, word & 0xFFFFFF, value) for word, value in entries], flags)
            if kind == PING:
                return Ping(struct.unpack_from(">I", payload)[0])
            if kind == GOAWAY:
                last, status = struct.unpack_from(">II", payload[:8].ljust(8, b"\0"))
                return GoAway(last & MAX_STREAM_ID, status)
            if kind == WINDOW_UPDATE:
                stream_id, delta = struct.unpack_from(">II", payload)
                return WindowUpdate(stream_id & MAX_STREAM_ID, delta & MAX_STREAM_ID)
        except struct.error as err:
            raise SpdyError(f"a short control frame (type {kind}): {err}") from None
        return None  # a type this version does not know is ignored, as the specification asks


def _frame_header(first: int, flags: int, length: int) -> bytes:
    if length > MAX_LENGTH:
        raise SpdyError(f"a frame of {length} bytes is over SPDY's limit")
    return struct.pack(">IB", first, flags) + length.to_bytes(3, "big")


def _control(kind: int, flags: int, payload: bytes) -> bytes:
    return _frame_header(0x80000000 | (VERSION << 16) | kind, flags, len(payload)) + payload
