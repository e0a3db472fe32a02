"""Connection exhaustion probe: hold tens of thousands of idle connections, and see that clients still get in.

    sudo .venv/bin/python -m bench.connections [--connections 25000]

Starts a throwaway control plane on loopback as a cluster runs it -- etcd, an
apiserver serving the HTTP API over TLS (`--https-listen`) and gRPC over TLS
(`--secure-listen`), and the cluster DNS (`flotilla-dns`) -- then opens
`--connections` idle TCP connections spread over the apiserver's two TLS ports
and DNS's TCP port, from many loopback source addresses (127.<a>.<b>.<c>: no
one address reaches a per-source cap, and no address runs out of ephemeral
ports), in holder processes of at most 9,000 each (a process's open-file
limit). While they are held it times a `get nodes` over gRPC and a DNS query
over UDP and over TCP (each must answer within 2 s), waits past the handshake
and idle deadlines, checks the servers closed the idle connections, and counts
tracebacks in the daemons' logs (there must be none). Prints one line per
figure. tests/test_connection_limits.py runs the same with 5,000.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dnslib import DNSRecord  # type: ignore[import-untyped]

from client import Client, certificates
from proto import core_pb2
from provision.processes import Process, free_port, start_apiserver, start_etcd, wait_until

PER_HOLDER = 9_000
PER_SOURCE = 200  # connections per source address: under every per-source cap
DEADLINE = 2.0


@dataclass
class Targets:
    grpc_tls: tuple[str, int]
    https: tuple[str, int]
    dns: tuple[str, int]
    grpc_plain: str  # the loopback admin port the checks use
    logs: list[Path]
    pids: list[int]  # the apiserver's and DNS's: their open descriptors are counted


@contextlib.contextmanager
def control_plane(base: Path) -> Iterator[Targets]:
    """etcd, a TLS apiserver (plus a loopback admin port for the checks) and flotilla-dns, on loopback."""
    ca = certificates.create_ca("probe-ca")
    serving = certificates.create_serving_cert(ca, "kube-apiserver", ["127.0.0.1", "localhost"])
    (base / "ca.crt").write_bytes(ca.cert_pem)
    serving.write(base, "apiserver")
    tokens = base / "tokens.csv"
    tokens.write_text("")
    etcd = start_etcd(base / "etcd", log_dir=base)
    https, grpc_tls, dns = free_port(), free_port(), free_port()
    apiserver = start_apiserver(etcd.url, base, extra=[
        "--log-level", "WARNING", "--https-listen", f"127.0.0.1:{https}", "--secure-listen", f"127.0.0.1:{grpc_tls}",
        "--tls-cert-file", str(base / "apiserver.crt"), "--tls-private-key-file", str(base / "apiserver.key"),
        "--client-ca-file", str(base / "ca.crt"), "--authorization-mode", "AlwaysAllow"])
    dns_log = base / "dns.log"
    dns_process = Process("dns", [sys.executable, "-m", "controlplane.dns.main", "--server", apiserver.address,
                                  "--listen", f"127.0.0.1:{dns}", "--log-level", "WARNING"], dns_log,
                          env={"KCTL_CONFIG": str(base / "no-kubeconfig")})
    dns_process.start()
    try:
        wait_until(lambda: _answers(("127.0.0.1", dns)), "dns", dns_process, timeout=30)
        yield Targets(("127.0.0.1", grpc_tls), ("127.0.0.1", https), ("127.0.0.1", dns), apiserver.address,
                      [base / "apiserver.log", dns_log], [apiserver.process.pid, dns_process.pid])
    finally:
        dns_process.stop()
        apiserver.process.stop()
        etcd.process.stop()


def _answers(dns: tuple[str, int]) -> bool:
    try:
        return dns_query_udp(dns) < DEADLINE
    except OSError:
        return False


def _source(index: int) -> str:
    """The index-th loopback source address (127.1.0.1, 127.1.0.2, ...)."""
    n = index + 1
    return f"127.{1 + n // 65536}.{(n // 256) % 256}.{n % 256 or 1}"


Held = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _open(target: tuple[str, int], count: int, first_source: int) -> list[Held]:
    held: list[Held] = []
    gate = asyncio.Semaphore(500)

    async def one(i: int) -> None:
        async with gate:
            with contextlib.suppress(OSError):
                held.append(await asyncio.open_connection(
                    *target, local_addr=(_source(first_source + i // PER_SOURCE), 0)))

    await asyncio.gather(*(one(i) for i in range(count)))
    return held


def _hold(targets: list[tuple[str, int]], count: int, first_source: int, opened: object, release: object) -> None:
    """A holder process: open `count` connections over `targets`, report how many, keep them until told."""
    async def main() -> None:
        share = count // len(targets)
        held: list[Held] = []
        try:
            for k, target in enumerate(targets):
                held += await _open(target, share, first_source + k * (share // PER_SOURCE + 1))
            opened.put(len(held))  # type: ignore[attr-defined]
            await asyncio.get_running_loop().run_in_executor(None, release.wait)  # type: ignore[attr-defined]
            # Closed by the server: the reader saw the end of the stream.
            opened.put(sum(1 for reader, writer in held if not reader.at_eof() and not writer.is_closing()))  # type: ignore[attr-defined]
        finally:
            for _, writer in held:
                writer.transport.abort()

    asyncio.run(main())


def dns_query_udp(dns: tuple[str, int]) -> float:
    started = time.monotonic()
    DNSRecord.question("kubernetes.default.svc.cluster.local").send(dns[0], dns[1], timeout=DEADLINE)
    return time.monotonic() - started


def dns_query_tcp(dns: tuple[str, int]) -> float:
    started = time.monotonic()
    DNSRecord.question("kubernetes.default.svc.cluster.local").send(dns[0], dns[1], tcp=True, timeout=DEADLINE)
    return time.monotonic() - started


async def get_nodes(address: str) -> float:
    started = time.monotonic()
    async with Client(address) as client:
        await asyncio.wait_for(client.list(core_pb2.Node), DEADLINE)
    return time.monotonic() - started


def open_descriptors(pids: list[int]) -> int:
    """The servers' open file descriptors (one per connection they hold)."""
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in pids)


def tracebacks(logs: list[Path]) -> int:
    return sum(p.read_text(errors="replace").count("Traceback") for p in logs if p.exists())


@dataclass
class Result:
    held: int
    get_nodes: float
    dns_udp: float
    dns_tcp: float
    descriptors_before: int  # the servers' open descriptors before the flood
    descriptors_held: int  # ... while it is held
    descriptors_after: int  # ... once the deadlines have passed, the flood still connected
    tracebacks: int

    def lines(self) -> list[str]:
        return [f"idle connections held: {self.held}",
                f"get nodes (gRPC) while held: {self.get_nodes:.3f} s",
                f"DNS query (UDP) while held: {self.dns_udp:.3f} s",
                f"DNS query (TCP) while held: {self.dns_tcp:.3f} s",
                f"servers' open descriptors: {self.descriptors_before} before, {self.descriptors_held} while "
                f"held, {self.descriptors_after} {WAIT_AFTER:.0f} s later",
                f"tracebacks in the daemons' logs: {self.tracebacks}"]


WAIT_AFTER = 12.0  # past the TLS handshake deadline (5 s) and DNS's TCP idle timeout (10 s)


def probe(targets: Targets, connections: int) -> Result:
    """Hold `connections` idle connections over the three ports, time the checks, then let go."""
    ctx = multiprocessing.get_context("fork")
    opened, release = ctx.Queue(), ctx.Event()
    ports = [targets.https, targets.grpc_tls, targets.dns]
    holders = []
    remaining, first = connections, 0
    while remaining > 0:
        count = min(PER_HOLDER, remaining)
        holder = ctx.Process(target=_hold, args=(ports, count, first, opened, release), daemon=True)
        holder.start()
        holders.append(holder)
        remaining -= count
        first += count // PER_SOURCE + len(ports) + 1
    before = open_descriptors(targets.pids)
    held = sum(opened.get(timeout=300) for _ in holders)
    during = open_descriptors(targets.pids)
    took_nodes = asyncio.run(get_nodes(targets.grpc_plain))
    took_udp, took_tcp = dns_query_udp(targets.dns), dns_query_tcp(targets.dns)
    time.sleep(WAIT_AFTER)
    after = open_descriptors(targets.pids)
    release.set()
    for _ in holders:
        opened.get(timeout=120)  # what the holders still see open (connections the kernel never handed over)
    for holder in holders:
        holder.join(30)
    return Result(held, took_nodes, took_udp, took_tcp, before, during, after, tracebacks(targets.logs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=25_000)
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flotilla-connections-") as tmp, control_plane(Path(tmp)) as targets:
        result = probe(targets, opts.connections)
    for line in result.lines():
        print(line)
    ok = max(result.get_nodes, result.dns_udp, result.dns_tcp) < DEADLINE and result.tracebacks == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
