"""Benchmark of service networking: programming the proxy's nftables rules, and cluster DNS.

    .venv/bin/python -m bench.proxy [--quick]      (root: it makes a network namespace)

- full sync: render + apply 1,000 and 10,000 Services x 10 endpoints from scratch
  into an empty throwaway network namespace (the proxy's start-up path:
  `declarations` then the one-transaction `full_sync`), with every endpoint on
  the benchmarked node (the worst case) and spread over 20 nodes;
- one change: one endpoint of one Service replaced at 10,000 Services (the
  proxy's steady-state path: `fragment_diff`, one transaction);
- data path: HTTP requests/s (a new connection each, so every request crosses the
  DNAT) to a pod directly and through a ClusterIP, from a client on the node;
- DNS: queries/s of `flotilla-dns`'s server (A lookups of a Service over UDP,
  64 in flight) from a client in another process, served from filled caches.

Goals (issue 6): full sync of 10,000 <= 1 s, one change <= 50 ms.
Nothing is sent anywhere but the namespace made here and 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import subprocess
import sys
import time
import uuid

from dnslib import DNSRecord  # type: ignore[import-untyped]

from client import Client
from controlplane.dns.server import DnsServer
from nodeagent.proxy import nft, rules
from proto import core_pb2


def ip_of(n: int, base: int = 96) -> str:
    return f"10.{base + n // 65536}.{(n // 256) % 256}.{n % 256}"


def service_port(i: int, endpoints: int, *, first_endpoint: int = 0, nodes: int = 1) -> rules.ServicePort:
    """Service i's port; its endpoints spread over `nodes` nodes, one in `nodes` on the benchmarked one."""
    eps = tuple(rules.Endpoint(ip_of(i * endpoints + j + first_endpoint, 200), 8080) for j in range(endpoints))
    return rules.ServicePort(
        namespace="bench", name=f"svc-{i}", port_name="http", protocol="tcp", cluster_ip=ip_of(i), port=80,
        node_port=30000 + i if i < 2000 else 0, slot=i, endpoints=eps,
        hairpin_endpoints=tuple(ep for k, ep in enumerate(eps) if (i * endpoints + k) % nodes == 0))


def bench_nft(services: int, netns: str, nodes: int = 1) -> tuple[float, float, float]:
    """Seconds to render, to declare and to commit `services` Services from scratch."""
    nft.apply_sync(nft.cleanup_transaction(), netns=netns)
    started = time.perf_counter()
    fragments = [rules.render_service([service_port(i, 10, nodes=nodes)]) for i in range(services)]
    declarations, full = rules.declarations(fragments), rules.full_sync(fragments)
    rendered = time.perf_counter()
    nft.apply_sync(declarations, netns=netns)
    declared = time.perf_counter()
    nft.apply_sync(full, netns=netns)
    return rendered - started, declared - rendered, time.perf_counter() - declared


def bench_change(services: int, netns: str, step: int) -> float:
    """Seconds to render, diff and commit one endpoint change with `services` programmed.

    Step k moves Service services/2 from endpoint window k to k+1: one endpoint out, one in.
    """
    i = services // 2
    old = rules.render_service([service_port(i, 10, first_endpoint=step)])
    started = time.perf_counter()
    new = rules.render_service([service_port(i, 10, first_endpoint=step + 1)])
    nft.apply_sync(rules.fragment_diff(old, new), netns=netns)
    return time.perf_counter() - started


CLIENT = """
import http.client, sys, time
host, seconds = sys.argv[1], float(sys.argv[2])
done, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    conn = http.client.HTTPConnection(host, timeout=2)
    conn.request("GET", "/")
    conn.getresponse().read()
    conn.close()
    done += 1
print(done / seconds)
"""


def bench_datapath(seconds: float) -> tuple[float, float]:
    """Requests/s to a pod directly and through its ClusterIP, from the node (namespaces made here)."""
    tag = uuid.uuid4().hex[:6]
    node, pod = f"fltbn-{tag}", f"fltbp-{tag}"
    server: subprocess.Popen[bytes] | None = None

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        ip("netns", "add", node)
        ip("netns", "add", pod)
        ip("-n", node, "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", pod)
        ip("-n", node, "addr", "add", "10.251.1.1/24", "dev", "veth0")
        ip("-n", pod, "addr", "add", "10.251.1.2/24", "dev", "eth0")
        for ns, dev in ((node, "veth0"), (pod, "eth0"), (node, "lo"), (pod, "lo")):
            ip("-n", ns, "link", "set", dev, "up")
        ip("-n", pod, "route", "add", "default", "via", "10.251.1.1")
        ip("-n", node, "route", "add", "10.96.0.0/12", "dev", "veth0")
        server = subprocess.Popen(["ip", "netns", "exec", pod, sys.executable, "-m", "http.server", "8080",
                                   "--bind", "10.251.1.2", "--directory", "/var/empty" if os.path.isdir(
                                       "/var/empty") else "/tmp"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        fragment = rules.render_service([rules.ServicePort(
            namespace="bench", name="web", port_name="", protocol="tcp", cluster_ip="10.96.0.80", port=80,
            endpoints=(rules.Endpoint("10.251.1.2", 8080),))])
        nft.apply_sync(rules.declarations([fragment]), netns=node)
        nft.apply_sync(rules.full_sync([fragment]), netns=node)
        time.sleep(0.5)  # the server starting

        def load(target: str) -> float:
            out = subprocess.run(["ip", "netns", "exec", node, sys.executable, "-c", CLIENT, target, str(seconds)],
                                 check=True, capture_output=True, text=True).stdout
            return float(out)

        # Alternate and keep the best of each: the first seconds of a fresh server are slower.
        load("10.251.1.2:8080")  # warm-up
        runs = [(load("10.251.1.2:8080"), load("10.96.0.80:80")) for _ in range(2)]
        return max(r[0] for r in runs), max(r[1] for r in runs)
    finally:
        if server is not None:
            server.terminate()
            server.wait(5)
        for ns in (pod, node):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def serve_dns(ready: multiprocessing.synchronize.Event, address: list[int]) -> None:
    async def main() -> None:
        server = DnsServer(Client("127.0.0.1:9"))  # never dialled: the stores are filled here
        for i in range(1000):
            svc = core_pb2.Service()
            svc.metadata.namespace, svc.metadata.name = "bench", f"svc-{i}"
            svc.spec.cluster_ip = ip_of(i)
            server.services.store.put(svc)
        _, bound = await server.listen("127.0.0.1", 0)
        address.append(bound)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


async def query_load(port: int, total: int, in_flight: int = 64) -> float:
    loop = asyncio.get_running_loop()
    queries = [DNSRecord.question(f"svc-{i % 1000}.bench.svc.cluster.local").pack() for i in range(total)]
    replies = asyncio.Queue[None]()

    class Client_(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            replies.put_nowait(None)

    udp, _ = await loop.create_datagram_endpoint(Client_, remote_addr=("127.0.0.1", port))
    started = time.perf_counter()
    sent = 0
    for sent in range(min(in_flight, total)):
        udp.sendto(queries[sent])
    sent += 1
    for _ in range(total):
        try:
            await asyncio.wait_for(replies.get(), 2)
        except TimeoutError:
            pass  # a dropped datagram: count the time, go on
        if sent < total:
            udp.sendto(queries[sent])
            sent += 1
    elapsed = time.perf_counter() - started
    udp.close()
    return total / elapsed


def bench_dns(total: int) -> float:
    context = multiprocessing.get_context("fork")
    manager = context.Manager()
    address = manager.list()
    ready = context.Event()
    child = context.Process(target=serve_dns, args=(ready, address), daemon=True)
    child.start()
    try:
        ready.wait(30)
        return asyncio.run(query_load(int(address[0]), total))
    finally:
        child.terminate()
        child.join(5)
        manager.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run of each, fewer DNS queries")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/proxy.py needs root (it creates a network namespace)")
    netns = f"fltbench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        # nodes=1: every endpoint on the benchmarked node (the worst case: a hairpin element each);
        # nodes=20: a 20-node cluster, where a node's proxy marks hairpin only for its own pods.
        for services, nodes in ((1000, 1), (10000, 20), (10000, 1)):  # the last one stays for bench_change
            render, declare, commit = bench_nft(services, netns, nodes)
            print(f"full sync {services:>6} services x 10 endpoints over {nodes:>2} node(s): render {render:.3f} s, "
                  f"declare {declare:.3f} s, commit {commit:.3f} s, total {render + declare + commit:.3f} s",
                  flush=True)
        changes = sorted(bench_change(10000, netns, step) for step in range(3 if opts.quick else 10))
        print(f"one endpoint change at 10000 services: median {changes[len(changes) // 2] * 1000:.1f} ms "
              f"(min {changes[0] * 1000:.1f}, max {changes[-1] * 1000:.1f})", flush=True)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    direct, service = bench_datapath(2.0 if opts.quick else 10.0)
    print(f"data path: pod IP {direct:,.0f} req/s, ClusterIP {service:,.0f} req/s "
          f"(ratio {service / direct:.2f}; new connection per request)", flush=True)
    qps = bench_dns(5000 if opts.quick else 50000)
    print(f"DNS: {qps:,.0f} queries/s (A, UDP, 64 in flight, one server process)")


if __name__ == "__main__":
    main()
