"""Benchmark of the ingress data path: requests/s through the ingress's haproxy vs straight to the pod.

    .venv/bin/python -m bench.ingress [--requests 20000] [--parallel 32] [--rounds 3]

In one run, alternating round by round so the box's moving load falls on both:

- **direct**: HTTP requests straight to the "pod" (its address and port);
- **ingress**: the same requests through an haproxy configured by the ingress
  agent's own renderer (routes.py + config.py: an Ingress `bench.example/` →
  a Service whose slice holds the pod), matched on the Host header, as a
  client outside the cluster sends them to a node's port 80;
- **new connections**: both again with a fresh connection per request (the
  first two keep connections alive, as load tests usually do); the ingress
  reuses its idle connections to the pod (`http-reuse always`).

Beside each rate, the CPU the server side spent per request (the pod's, plus
the ingress haproxy's on the ingress paths, from /proc): on this shared
2-core box the rates swing with the neighbours' load, the CPU per request
much less, and it says what the extra hop costs.

The pod is a second haproxy answering `200 ok` by itself: the machine has no
nginx, and busybox httpd forks per request, which would make the pod the
bottleneck of both paths and the ratio meaningless. The client is curl
(`--parallel`, URL globbing), not Python, for the same reason. Goal (issue
15): ingress >= 0.8x direct. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from nodeagent.ingress import config, routes
from nodeagent.ingress.haproxy import Haproxy
from proto import core_pb2, discovery_pb2, networking_pb2
from provision.processes import free_port

POD = """\
global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend pod
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string ok
"""


def model(pod_port: int) -> routes.Model:
    """What the agent would serve for one Ingress in front of the pod."""
    ing = networking_pb2.Ingress()
    ing.metadata.name, ing.metadata.namespace = "bench", "bench"
    path = ing.spec.rules.add(host="bench.example").http.paths.add(path="/", path_type="Prefix")
    path.backend.service.name = "web"
    path.backend.service.port.number = 80
    svc = core_pb2.Service()
    svc.metadata.name, svc.metadata.namespace = "web", "bench"
    svc.spec.ports.add(port=80, protocol="TCP")
    eps = discovery_pb2.EndpointSlice(address_type="IPv4")
    eps.ports.add(port=pod_port, protocol="TCP")
    eps.endpoints.add(addresses=["127.0.0.1"]).conditions.ready = True
    return routes.build([ing], services=lambda ns, name: svc, slices=lambda ns, name: [eps],
                        secrets=lambda ns, name: None)


def cpu_seconds(marker: str) -> float:
    """User + system CPU of every process whose command line holds `marker` (an haproxy's config path)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker not in (proc / "cmdline").read_bytes().decode(errors="replace"):
                continue
            fields = (proc / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def requests_per_second(port: int, requests: int, parallel: int, *, reuse: bool) -> float:
    """curl's rate for `requests` GETs of 127.0.0.1:port (Host bench.example); fails on any non-200."""
    argv = ["curl", "-s", "--parallel", "--parallel-max", str(parallel), "-H", "Host: bench.example",
            "-w", "%{http_code}\n", "-o", "/dev/null"]
    if not reuse:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://127.0.0.1:{port}/[1-{requests}]")
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    codes = [c for c in done.stdout.replace("ok", "").split() if c]
    bad = [c for c in codes if c != "200"]
    if len(codes) != requests or bad:
        raise SystemExit(f"curl: {len(codes)} answers, {len(bad)} not 200 ({done.stderr.strip()[:200]})")
    return requests / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--parallel", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ingress-") as tmp:
        pod_port = free_port()
        pod_cfg = Path(tmp) / "pod.cfg"
        pod_cfg.write_text(POD.format(port=pod_port))
        pod = await asyncio.create_subprocess_exec("haproxy", "-f", str(pod_cfg))
        settings = config.Settings(Path(tmp) / "ingress", "127.0.0.1", free_port(), free_port())
        ingress = Haproxy(settings)
        await ingress.apply(config.render(model(pod_port), settings), {})
        try:
            await asyncio.sleep(0.5)
            results: dict[str, list[float]] = {"direct": [], "ingress": [], "ingress, new connections": [],
                                               "direct, new connections": []}
            cpu = {name: 0.0 for name in results}  # the proxies' CPU seconds per path: pod, and ingress + pod
            for _ in range(opts.rounds):
                for name, port, reuse in (("direct", pod_port, True), ("ingress", settings.http_port, True),
                                          ("direct, new connections", pod_port, False),
                                          ("ingress, new connections", settings.http_port, False)):
                    before = cpu_seconds(str(pod_cfg)) + cpu_seconds(str(ingress.config_path))
                    results[name].append(await asyncio.to_thread(
                        requests_per_second, port, opts.requests, opts.parallel, reuse=reuse))
                    cpu[name] += cpu_seconds(str(pod_cfg)) + cpu_seconds(str(ingress.config_path)) - before
        finally:
            await ingress.stop()
            pod.terminate()
            await pod.wait()
    median = {name: statistics.median(values) for name, values in results.items()}
    print(f"{opts.requests} requests x {opts.rounds} rounds, {opts.parallel} in parallel (curl), medians:")
    total = opts.requests * opts.rounds
    for name, rate in median.items():
        print(f"  {name:<26} {rate:>9,.0f} requests/s   server-side CPU {cpu[name] / total * 1e6:5.1f} us/request")
    keep = median["ingress"] / median["direct"]
    fresh = median["ingress, new connections"] / median["direct, new connections"]
    print(f"ingress / direct: {keep:.2f}x with keep-alive, {fresh:.2f}x with a new connection per request "
          f"(goal >= 0.8x)")


if __name__ == "__main__":
    asyncio.run(main())
