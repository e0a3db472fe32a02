"""Connection limits: the control plane keeps answering while someone holds thousands of idle connections.

A probe of a running cluster held 21,000 idle TCP connections to the
apiserver and locked every client out for a minute (each took a file
descriptor until accept() failed), and DNS over TCP stopped answering. What
stops that, for the listeners Flotilla writes itself (the apiserver's HTTP API
on aiohttp, whose site is controlplane/apiserver/http/site.py, and DNS over
TCP); gRPC has its own knobs (`GRPC_SERVER_OPTIONS`). This module does not
import aiohttp: DNS, which only needs the cap, starts without it.

- **a per-source cap** (`SourceLimit`): one address may hold at most so many
  connections at once; more are closed as they arrive, so one noisy client
  cannot take what every other client needs;
- **a first-byte deadline** (`LimitedProtocol`): a connection that says nothing
  for a few seconds after it opened (after the TLS handshake, which has its own
  deadline, `HANDSHAKE_TIMEOUT`) is closed; once a request came, the server's
  own keep-alive timeout takes over, and a long watch (the client sends
  nothing while the server streams) is never cut;
- the process's open-file limit raised to its hard limit at start (client/component.py).

Kubernetes' apiserver leans on Go's http.Server timeouts in the same way
(ReadHeaderTimeout, IdleTimeout) plus the TLS handshake deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import cast

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 5.0  # seconds for a TLS handshake to finish
FIRST_BYTE_TIMEOUT = 10.0  # seconds for a new connection to start its first request
KEEPALIVE_TIMEOUT = 30.0  # seconds an HTTP connection may idle between requests
PER_SOURCE = 1000  # connections one address may hold at once (kubectl and the daemons use a few each)

# gRPC core: the TLS handshake's deadline, idle connections closed, and keep-alive pings that find
# connections whose peer went silent (a raw TCP connection that never speaks HTTP/2 answers none).
GRPC_SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.server_handshake_timeout_ms", int(HANDSHAKE_TIMEOUT * 1000)),
    ("grpc.max_connection_idle_ms", 5 * 60 * 1000),
    ("grpc.keepalive_time_ms", 60 * 1000),
    ("grpc.keepalive_timeout_ms", 10 * 1000),
]


class SourceLimit:
    """How many connections each source address holds; `admit` says whether one more may open."""

    def __init__(self, per_source: int = PER_SOURCE, what: str = "connections") -> None:
        self.per_source = per_source
        self.what = what
        self.open: Counter[str] = Counter()
        self.refused = 0
        self._warned: set[str] = set()

    def admit(self, source: str) -> bool:
        if self.open[source] >= self.per_source:
            self.refused += 1
            if source not in self._warned:  # once per source and episode: a flood must not flood the log
                self._warned.add(source)
                log.warning("%s from %s: more than %d open at once; closing new ones until some end", self.what,
                            source, self.per_source)
            return False
        self.open[source] += 1
        return True

    def release(self, source: str) -> None:
        self.open[source] -= 1
        if self.open[source] <= 0:
            del self.open[source]
            self._warned.discard(source)


def source_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


class LimitedProtocol(asyncio.Protocol):
    """Wraps a server's protocol: counts the connection against its source and closes it if it exceeds the
    source's cap or sends nothing before FIRST_BYTE_TIMEOUT; everything else goes to the wrapped protocol."""

    def __init__(self, inner: asyncio.Protocol, limit: SourceLimit, first_byte_timeout: float) -> None:
        self.inner = inner
        self.limit = limit
        self.first_byte_timeout = first_byte_timeout
        self.source = ""
        self.admitted = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # a stream server's transport
        self.source = source_of(stream)
        if not self.limit.admit(self.source):
            stream.abort()
            return
        self.admitted = True
        self.timer = asyncio.get_running_loop().call_later(self.first_byte_timeout, stream.abort)
        self.inner.connection_made(stream)

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.admitted:
            self.limit.release(self.source)
            self.inner.connection_lost(exc)


def limited(factory: Callable[[], asyncio.Protocol], limit: SourceLimit,
            first_byte_timeout: float = FIRST_BYTE_TIMEOUT) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for loop.create_server whose connections obey `limit` and the first-byte deadline."""
    return lambda: LimitedProtocol(factory(), limit, first_byte_timeout)
