"""Cluster DNS on the wire: UDP and TCP listeners answering from the informer caches.

Queries are parsed and packed by dnslib (no hand-written codec). Answers for the
cluster domain come from `resolver.resolve`, which reads the Service, EndpointSlice
(indexed by Service) and Pod informers' stores (pods indexed by hostname and subdomain, for
`web-0.nginx.<ns>.svc`): nothing is asked of the apiserver per query.
Other names are forwarded, as the raw query bytes, to the upstream resolver
(the node's own, e.g. from /etc/resolv.conf), and its reply is relayed as is.

TCP connections are the ones that can be hoarded (UDP holds nothing), so each
source address may hold at most `TCP_PER_SOURCE` at once and a connection that
sends no query for `TCP_IDLE_TIMEOUT` seconds is closed, as CoreDNS's 10 s TCP
idle timeout does (controlplane/connlimits.py); one that breaks off mid-message
ends quietly, never with a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import cast

from dnslib import RCODE, DNSError, DNSRecord  # type: ignore[import-untyped]

from client.api import Client
from client.endpointslices import SERVICE_INDEX, service_index
from client.informer import InformerFactory
from controlplane.connlimits import SourceLimit
from controlplane.dns.resolver import HOSTNAME_INDEX, hostname_index, resolve
from proto import core_pb2, discovery_pb2

log = logging.getLogger(__name__)

UPSTREAM_TIMEOUT = 2.0
TCP_IDLE_TIMEOUT = 10.0  # seconds a TCP connection may wait for its next query
TCP_PER_SOURCE = 256  # TCP connections one address may hold (a resolver needs a few)


class DnsServer:
    def __init__(self, client: Client, *, domain: str = "cluster.local",
                 upstream: tuple[str, int] | None = None) -> None:
        self.domain = domain
        self.upstream = upstream
        self.factory = InformerFactory(client)
        self.services = self.factory.informer(core_pb2.Service)
        self.slices = self.factory.informer(discovery_pb2.EndpointSlice)
        self.slices.store.add_index(SERVICE_INDEX, service_index)
        self.pods = self.factory.informer(core_pb2.Pod)
        self.pods.store.add_index(HOSTNAME_INDEX, hostname_index)
        self._transports: list[asyncio.BaseTransport] = []
        self._tcp: asyncio.Server | None = None
        self.tcp_limit = SourceLimit(TCP_PER_SOURCE, what="DNS TCP connections")
        self.tcp_idle_timeout = TCP_IDLE_TIMEOUT

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Sync the caches, then listen on UDP and TCP; returns the bound address (port 0 picks one)."""
        self.factory.start()
        await self.factory.wait_for_cache_sync()
        return await self.listen(host, port)

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Serve from the stores as they are (`start` fills them first; the benchmark fills them itself)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, port))
        self._transports.append(transport)
        bound = transport.get_extra_info("sockname")[:2]
        self._tcp = await asyncio.start_server(self._serve_tcp, host, bound[1])
        return str(bound[0]), int(bound[1])

    async def stop(self) -> None:
        for transport in self._transports:
            transport.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        self.factory.stop()

    async def answer(self, data: bytes) -> bytes | None:
        """The reply bytes to one query (None for garbage that deserves no reply)."""
        try:
            request = DNSRecord.parse(data)
        except (DNSError, struct.error, IndexError, ValueError):
            return None
        reply = resolve(request, self.services.store, self.slices.store, self.domain, self.pods.store)
        if reply is not None:
            return bytes(reply.pack())
        if self.upstream is None:
            refused = request.reply()
            refused.header.rcode = RCODE.REFUSED
            return bytes(refused.pack())
        try:
            return await self._forward(data)
        except (OSError, TimeoutError):
            failed = request.reply()
            failed.header.rcode = RCODE.SERVFAIL
            return bytes(failed.pack())

    async def _forward(self, data: bytes) -> bytes:
        assert self.upstream is not None
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bytes] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Reply(done), remote_addr=self.upstream)
        try:
            transport.sendto(data)
            return await asyncio.wait_for(done, UPSTREAM_TIMEOUT)
        finally:
            transport.close()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # DNS over TCP: each message is preceded by its length in two bytes (RFC 1035 4.2.2).
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self.tcp_limit.admit(source):
            writer.transport.abort()
            return
        try:
            while True:
                header = await asyncio.wait_for(reader.readexactly(2), self.tcp_idle_timeout)
                size = struct.unpack("!H", header)[0]
                query = await asyncio.wait_for(reader.readexactly(size), self.tcp_idle_timeout)
                reply = await self.answer(query)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, OSError):
            pass  # gone, silent too long or broken: nothing to answer, nothing worth a traceback
        finally:
            self.tcp_limit.release(source)
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's UDP transport does not subclass DatagramTransport, though it is one.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        task = asyncio.get_running_loop().create_task(self._reply(data, addr))
        self._tasks.add(task)  # hold a reference until done, or the task may be collected mid-flight
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, data: bytes, addr: tuple[str | object, int]) -> None:
        reply = await self.server.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, done: asyncio.Future[bytes]) -> None:
        self.done = done

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
