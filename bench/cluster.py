"""The local provider benchmark: `kctl cluster up` to every Node Ready, `cluster down`, and memory.

    sudo .venv/bin/python -m bench.cluster [--workers 2] [--runs 3]

Each run makes a throwaway cluster (own name, by default subnet 192.168.78.0/24,
bridge flt78b and pods 10.78.0.0/16, free ports, a temporary FLOTILLA_HOME) through the same
`provision.local.up` that `kctl cluster up` calls (TLS everywhere, the master
a Node too), which returns once every Node is Ready; then it reads the resident memory of every supervised
daemon from /proc, and times `down` (which leaves the host as it was).
Goals from issue 8: up <= 10 s for 1 master + 2 workers; control plane (etcd, apiserver,
scheduler, controller manager, DNS and the image registry) <= 250 MB and each node agent
(kubelet) <= 80 MB resident.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from provision import local
from provision.processes import free_port
from provision.supervisor import read_pids

# The master's control plane per issue 8, the image registry included (a Go binary, docker-registry).
# The LoadBalancer pool is a controller in the controller manager (no lb-controller process).
CONTROL_PLANE = ("etcd", "apiserver", "scheduler", "controller-manager", "dns", "registry")


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def one_run(opts: argparse.Namespace) -> tuple[float, float, dict[str, float]]:
    name = f"bench-{os.getpid()}"
    etcd_port = free_port()
    started = time.monotonic()
    local.up(name, workers=opts.workers, subnet=opts.subnet, bridge=opts.bridge, pod_network=opts.pod_network,
             api_port=free_port(), etcd_port=etcd_port, write_default_config=False)
    up_s = time.monotonic() - started
    time.sleep(2)  # let the daemons settle after their first sync before reading memory
    memory = {daemon: rss_mib(pid) for daemon, pid in read_pids(local.cluster_dir(name)).items()}
    started = time.monotonic()
    local.down(name)
    return up_s, time.monotonic() - started, memory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    # Apart from a default cluster's 192.168.56.0/24 and 10.244.0-2.0/24, so both can run on one machine.
    parser.add_argument("--subnet", default="192.168.78.0/24")
    parser.add_argument("--bridge", default="flt78b")
    parser.add_argument("--pod-network", default="10.78.0.0/16")
    opts = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.cluster makes network namespaces: run as root", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-cluster-") as home:
        os.environ["FLOTILLA_HOME"] = home
        ups: list[float] = []
        downs: list[float] = []
        memory: dict[str, float] = {}
        for i in range(opts.runs):
            up_s, down_s, memory = one_run(opts)
            ups.append(up_s)
            downs.append(down_s)
            print(f"run {i + 1}: up {up_s:.2f} s, down {down_s:.2f} s", file=sys.stderr)
    control = sum(v for k, v in memory.items() if k in CONTROL_PLANE)
    kubelets = {k: v for k, v in memory.items() if k.startswith("kubelet/")}
    print(f"cluster up to master + {opts.workers} workers Ready (s, {opts.runs} runs): "
          f"median {statistics.median(ups):.2f}, min {min(ups):.2f}, max {max(ups):.2f}   (goal <= 10 s)")
    print(f"cluster down (s): median {statistics.median(downs):.2f}, max {max(downs):.2f}")
    # 250 MB is 238.4 MiB: the goal is in MB, /proc in KiB.
    print(f"control plane RSS: {control:.1f} MiB = {control * 2**20 / 1e6:.1f} MB (goal <= 250 MB): "
          + ", ".join(f"{k} {memory.get(k, 0):.1f}" for k in CONTROL_PLANE))
    for daemon, mib in sorted(memory.items()):
        if daemon not in CONTROL_PLANE:
            print(f"  {daemon:32} {mib:6.1f} MiB")
    worst = max(kubelets.values(), default=0.0)
    print(f"node agent (kubelet) RSS, largest: {worst:.1f} MiB (goal <= 80 MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
