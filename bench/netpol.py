"""Benchmark of NetworkPolicy enforcement: compiling and applying a node's nftables table.

    .venv/bin/python -m bench.netpol [--quick]      (root: it makes a network namespace)

A synthetic cluster of 5,000 pods in 50 namespaces (100 each: 10 apps of 10
pods, every pod with a named port) and 1,000 policies (20 per namespace), each
selecting one app: ingress from the next app of its namespace (podSelector),
from a monitoring app in every namespace labelled team=ops (namespaceSelector
+ podSelector), from an ipBlock with an except, on a numeric port, a named port
and an endPort range; every other policy also limits egress (DNS plus one
app). Measured, for the pods of the benchmarked node:

- full sync: compile every policy (the index, compiler.compile_policy, the pod
  layer, the transaction text) and commit it as one transaction into an empty
  throwaway network namespace (the controller's start-up path), with the pods
  spread over 50 nodes (100 on this one) and with all 5,000 on this node (the
  worst case);
- one change: one policy's peer selector changed, recompiled and committed as
  the controller's `apply` does (compile one, diff, one transaction), median of
  several, in both layouts;
- baseline, same run: the same compile with selectors answered by scanning
  every pod (what the index saves), printed as a ratio.

Goals (issue 15): full sync of 1,000 policies over 5,000 pods <= 1 s; one policy
change <= 50 ms. Nothing is sent anywhere: the namespace made here only.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterable

from nodeagent.netpol import compiler
from nodeagent.netpol.index import ClusterIndex, PodInfo, pod_info
from nodeagent.proxy import nft
from proto import core_pb2, manifest, networking_pb2
from proto.selectors import LabelSelector

NAMESPACES, APPS, PODS_PER_APP, POLICIES_PER_NAMESPACE = 50, 10, 10, 20
NODE = "node-0"


class ScanningIndex(ClusterIndex):
    """The baseline: every selector checked against every pod of the cluster, no label index."""

    def select_pods(self, namespace: str, selector: LabelSelector) -> Iterable[PodInfo]:
        return [p for p in self.pods.values() if p.namespace == namespace and selector.matches(p.label_map())]


def cluster(index: ClusterIndex, nodes: int) -> ClusterIndex:
    for n in range(NAMESPACES):
        index.set_namespace(f"ns-{n}", {"kubernetes.io/metadata.name": f"ns-{n}", "team": "ops" if n % 10 == 0
                                        else "dev"})
        for a in range(APPS):
            for k in range(PODS_PER_APP):
                i = (n * APPS + a) * PODS_PER_APP + k
                made = core_pb2.Pod()
                made.metadata.namespace, made.metadata.name = f"ns-{n}", f"app-{a}-{k}"
                made.metadata.labels.update({"app": f"app-{a}", "tier": "web" if a % 2 else "db"})
                made.spec.node_name = f"node-{i % nodes}"
                made.spec.containers.add(name="c").ports.add(name="http", container_port=8000 + a, protocol="TCP")
                made.status.pod_ip, made.status.phase = f"10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256}", "Running"
                index.set_pod(f"ns-{n}/app-{a}-{k}", pod_info(made))
    return index


def policies(variant: int = 0) -> list[networking_pb2.NetworkPolicy]:
    out = []
    for n in range(NAMESPACES):
        for p in range(POLICIES_PER_NAMESPACE):
            app, peer = p % APPS, (p + 1 + variant) % APPS
            spec: dict[str, object] = {
                "podSelector": {"matchLabels": {"app": f"app-{app}"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": f"app-{peer}"}}},
                                      {"namespaceSelector": {"matchLabels": {"team": "ops"}},
                                       "podSelector": {"matchLabels": {"app": "app-9"}}},
                                      {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}],
                             "ports": [{"port": 80, "protocol": "TCP"}, {"port": "http", "protocol": "TCP"},
                                       {"port": 9000, "endPort": 9100, "protocol": "TCP"}]}],
                "policyTypes": ["Ingress"]}
            if p % 2:
                spec["policyTypes"] = ["Ingress", "Egress"]
                spec["egress"] = [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
                                  {"to": [{"podSelector": {"matchLabels": {"app": f"app-{peer}"}}}]}]
            made = manifest.from_dict({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                       "metadata": {"name": f"pol-{p}", "namespace": f"ns-{n}"}, "spec": spec})
            assert isinstance(made, networking_pb2.NetworkPolicy)
            out.append(made)
    return out


def compile_all(index: ClusterIndex, items: list[networking_pb2.NetworkPolicy]) -> tuple[
        dict[str, compiler.Compiled], str]:
    cache: compiler.PeerCache = {}
    compiled = {f"{p.metadata.namespace}/{p.metadata.name}": compiler.compile_policy(p, index, NODE, cache)
                for p in items}
    layer = compiler.pod_layer(compiled, index)
    peers = compiler.peer_layer(compiler.peer_specs(compiled).values(), index)
    return compiled, compiler.full_table([peers, *(compiled[k].fragment for k in sorted(compiled)), layer])


def bench_full(nodes: int, netns: str,
               items: list[networking_pb2.NetworkPolicy]) -> tuple[float, float, int, float, float]:
    """Seconds to compile (index included) and to commit; the transaction's lines; nft's and the compile's CPU
    seconds (what they cost on a quiet machine: this one is shared, and waits count in the elapsed times)."""
    nft.apply_sync(compiler.delete_table(), netns=netns)
    started, cpu_started = time.perf_counter(), time.process_time()
    index = cluster(ClusterIndex(), nodes)
    _, text = compile_all(index, items)
    compiled = time.perf_counter()
    compile_cpu = time.process_time() - cpu_started
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    nft.apply_sync(text, netns=netns)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # nft's own user + system (kernel) time: what the commit costs on a quiet machine.
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return compiled - started, time.perf_counter() - compiled, text.count("\n"), cpu, compile_cpu


def bench_baseline(nodes: int, items: list[networking_pb2.NetworkPolicy]) -> float:
    started = time.perf_counter()
    compile_all(cluster(ScanningIndex(), nodes), items)
    return time.perf_counter() - started


def _cpu() -> float:
    """This process's CPU seconds plus its finished children's (nft)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def bench_changes(netns: str, items: list[networking_pb2.NetworkPolicy], rounds: int,
                  nodes: int) -> list[tuple[float, float]]:
    """One policy's peers change, as the controller's `apply` handles it: compile one, diff, commit.

    Elapsed and CPU seconds (compile, diff and nft's) per change."""
    index = cluster(ClusterIndex(), nodes)
    compiled, text = compile_all(index, items)
    nft.apply_sync(text, netns=netns)
    layer = compiler.pod_layer(compiled, index)
    specs = compiler.peer_specs(compiled)
    peers = compiler.peer_layer(specs.values(), index)
    changed = {f"{p.metadata.namespace}/{p.metadata.name}": p for p in policies(variant=3)}
    times: list[tuple[float, float]] = []
    for r in range(rounds):
        # A different policy each round, its ingress peers moved to another app: a real change every time.
        key = f"ns-{r % NAMESPACES}/pol-{r % POLICIES_PER_NAMESPACE}"
        if nodes > 1:
            key = f"ns-{r % NAMESPACES}/pol-{(r % 4) * 5}"  # apps 0 and 5 are the ones with pods on node-0
        started, cpu_started = time.perf_counter(), _cpu()
        new = compiler.compile_policy(changed[key], index, NODE)
        old = compiled[key]
        compiled[key] = new
        new_layer = layer
        if (old.ingress_targets, old.egress_targets) != (new.ingress_targets, new.egress_targets):
            new_layer = compiler.pod_layer(compiled, index)
        new_specs = compiler.peer_specs(compiled)
        new_peers = compiler.update_peer_layer(peers, specs, new_specs, set(), index)
        transaction = compiler.diff([(peers, new_peers), (old.fragment, new.fragment), (layer, new_layer)])
        assert transaction, key
        nft.apply_sync(transaction, netns=netns)
        times.append((time.perf_counter() - started, _cpu() - cpu_started))
        layer, specs, peers = new_layer, new_specs, new_peers
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    opts = parser.parse_args()
    items = policies()
    netns = f"fltnetpol-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        print(f"{len(items)} policies over {NAMESPACES * APPS * PODS_PER_APP} pods")
        for nodes, label in ((50, "pods over 50 nodes (100 here)"), (1, "all 5,000 pods on this node")):
            runs = [bench_full(nodes, netns, items) for _ in range(1 if opts.quick else 3)]
            compile_s, commit_s, lines, cpu, compile_cpu = min(runs, key=lambda r: r[0] + r[1])
            baseline = bench_baseline(nodes, items)
            print(f"full sync, {label}: compile {compile_s:.3f} s + commit {commit_s:.3f} s = "
                  f"{compile_s + commit_s:.3f} s ({lines} lines; CPU: compile {compile_cpu:.3f} s, nft {cpu:.3f} s)   "
                  "goal <= 1 s   "
                  f"[baseline compile by scanning every pod: {baseline:.3f} s, index {baseline / compile_s:.1f}x "
                  "faster]")
        for nodes, label in ((50, "pods over 50 nodes"), (1, "all 5,000 pods on this node")):
            changes = bench_changes(netns, items, 6 if opts.quick else 20, nodes)
            full = sum(bench_full(nodes, netns, items)[:2])
            median = statistics.median(wall for wall, _ in changes)
            cpu = statistics.median(used for _, used in changes)
            print(f"one policy change, {label}: median {median * 1000:.1f} ms (min {min(changes)[0] * 1000:.1f}, "
                  f"max {max(changes)[0] * 1000:.1f}; CPU {cpu * 1000:.1f} ms)   goal <= 50 ms   "
                  f"[baseline, a full sync instead: {full * 1000:.0f} ms, {full / median:.0f}x]")
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


if __name__ == "__main__":
    main()
