"""Service networking acceptance on the local provider: pods, Services, DNS and LoadBalancers, end to end.

Given one cluster with two workers (its own name, subnet 192.168.71.0/24, bridge
and pod network 10.71.0.0/16, so it never meets another cluster on this host),
the stories run in order on it:

- a pod on worker-1 reaches a pod on worker-2 by its IP, through the routes the
  kubelets keep (protocol 77), not routes the provisioner set;
- 100 requests to a Deployment's ClusterIP from a pod reach all 3 replicas;
- a pod resolves `web.default.svc.cluster.local` to the ClusterIP;
- the NodePort answers on every node, the master too (its proxy runs in the
  host's namespace), and only on the master's address, not on the host's others;
- scaling changes the endpoints the proxy programs within a second;
- a rolling update behind a readiness probe drops no request;
- a LoadBalancer address keeps answering after its announcing node is stopped:
  the gap is measured and bounded, and traffic resumes;
- `cluster down` leaves no route to the cluster's pods behind.

The replicas are busybox httpd answering with their pod name, stopping at
SIGTERM, with a `preStop: sleep 2` hook that keeps them serving while every
node's proxy withdraws the endpoint (the kubelet runs the hook first). Needs root, containerd, runc and the CNI
plugins; every wait polls against a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from client import config as clientconfig
from nodeagent.kubelet.routes import ROUTE_PROTOCOL
from proto import apps_pb2
from tests.e2e.test_seed_journey import Cluster, eventually, http_get

NAME = "netacc"
SUBNET_PREFIX = "192.168.71"
BRIDGE = "flt71"
POD_NETWORK = "10.71.0.0/16"
WORKERS = {f"{NAME}-worker-1": f"{SUBNET_PREFIX}.101", f"{NAME}-worker-2": f"{SUBNET_PREFIX}.102"}
SERVICE_CHAIN = "svc-default/web/tcp/80"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("containerd") or not Path("/usr/lib/cni/bridge").exists(),
    reason="needs root, containerd and the CNI plugins (the local provider makes network namespaces)")

# Answers with the pod's name; stops at SIGTERM (the preStop hook below gives it 2 s of grace first).
SERVE_HOSTNAME = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"


def deployment(name: str, replicas: int, *, node: str = "") -> dict[str, object]:
    spec: dict[str, object] = {"containers": [{
        "name": name, "image": "busybox", "command": ["sh", "-c", SERVE_HOSTNAME],
        "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1},
        # Kubernetes' idiom for draining: every node's proxy withdraws the endpoint while the hook sleeps.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "2"]}}},
    }]}
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def service(name: str, kind: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": kind, "selector": {"app": name}, "ports": [{"port": 80, "targetPort": 80}]}}


def pod(name: str, node: str, command: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": name, "image": "busybox",
                                                       "command": ["sh", "-c", command]}]}}


def apply(cluster: Cluster, *objects: dict[str, object]) -> None:
    manifest = cluster.home / "manifest.yaml"
    manifest.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    cluster.kctl("apply", "-f", str(manifest))


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def nft_chain(node: str, chain: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", node, "nft", "list", "chain", "ip", "flotilla-proxy", chain],
                          capture_output=True, text=True)
    return done.stdout


def running_pods(cluster: Cluster, prefix: str, count: int) -> list[dict[str, str]] | None:
    """The pods named `prefix...` once exactly `count` of them run and are ready (and no others linger)."""
    pods = [r for r in cluster.rows("get", "pods", "-o", "wide") if r["NAME"].startswith(prefix)]
    ready = [p for p in pods if p["STATUS"] == "Running" and p["READY"] == "1/1"]
    return ready if len(ready) == count == len(pods) else None


class RequestLoop:
    """A client hitting `url` every `interval` s in a thread, recording (time, answered) per request."""

    def __init__(self, url: str, *, interval: float = 0.05, timeout: float = 0.5) -> None:
        self.url, self.interval, self.timeout = url, interval, timeout
        self.results: list[tuple[float, bool, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import urllib.request
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with opener.open(self.url, timeout=self.timeout) as reply:
                    self.results.append((started, True, reply.read().decode().strip()))
            except OSError as err:
                self.results.append((started, False, repr(err)))
            self._stop.wait(self.interval)

    def failures(self) -> list[tuple[float, bool, str]]:
        return [r for r in self.results if not r[1]]

    def answered_since(self, since: float) -> int:
        return sum(1 for t, ok, _ in self.results if ok and t >= since)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("netacc")
    with Cluster(home).up(NAME, workers=2, subnet_prefix=SUBNET_PREFIX, bridge=BRIDGE, pod_network=POD_NETWORK) as c:
        yield c


@pytest.fixture(scope="module")
def nodes(cluster: Cluster) -> dict[str, dict[str, str]]:
    """Every Node (the workers, and the master where it is one), once all are Ready."""
    def all_ready() -> dict[str, dict[str, str]] | None:
        rows = {r["NAME"]: r for r in cluster.rows("get", "nodes", "-o", "wide")}
        return rows if set(WORKERS) <= set(rows) and all(r["STATUS"] == "Ready" for r in rows.values()) else None
    return eventually(all_ready, "every Node Ready")


@pytest.fixture(scope="module")
def client_pod(cluster: Cluster) -> str:
    """A pod on worker-1 to send requests from; its name."""
    apply(cluster, pod("client", f"{NAME}-worker-1", "exec sleep 3600"))
    eventually(lambda: running_pods(cluster, "client", 1), "client pod Running")
    return "client"


@pytest.fixture(scope="module")
def web(cluster: Cluster) -> dict[str, str]:
    """Deployment web (3 replicas) behind Service web (LoadBalancer: a ClusterIP and a NodePort too)."""
    apply(cluster, deployment("web", 3), service("web", "LoadBalancer"))
    eventually(lambda: running_pods(cluster, "web-", 3), "3 web replicas ready")
    return {r["NAME"]: r for r in cluster.rows("get", "svc")}["web"]


def test_a_pod_reaches_a_pod_on_another_node(cluster: Cluster, nodes: dict[str, dict[str, str]],
                                              client_pod: str) -> None:
    # Given each node's routes to the other nodes' pods, kept by its kubelet (our route protocol):
    for worker in WORKERS:
        routes = ip("-n", worker, "-o", "route", "show")
        for other, row in nodes.items():
            if other == worker:
                continue
            cidr = yaml.safe_load(cluster.kctl("get", "node", other, "-o", "yaml"))["spec"]["podCIDR"]
            route = rf"^{re.escape(cidr)} via {re.escape(row['INTERNAL-IP'])} dev eth0 proto {ROUTE_PROTOCOL}\b"
            assert re.search(route, routes, re.M), f"{worker} has no route to {other}'s pods:\n{routes}"
    # when a server runs on worker-2, the client on worker-1 reaches it by its pod IP.
    apply(cluster, pod("server", f"{NAME}-worker-2", SERVE_HOSTNAME))
    server = eventually(lambda: running_pods(cluster, "server", 1), "server pod Running")[0]
    assert server["NODE"] == f"{NAME}-worker-2"
    answer = eventually(lambda: cluster.kctl("exec", client_pod, "--", "timeout", "3", "wget", "-qO-",
                                             f"http://{server['IP']}/"), "pod to pod across nodes", timeout=30)
    assert answer.strip() == "server"


def test_cluster_ip_reaches_every_replica(cluster: Cluster, client_pod: str, web: dict[str, str]) -> None:
    replicas = running_pods(cluster, "web-", 3)
    assert replicas is not None
    assert {p["NODE"] for p in replicas} == set(WORKERS), "the scheduler spreads the replicas over both workers"
    out = cluster.kctl("exec", client_pod, "--", "sh", "-c",
                       f"for i in $(seq 100); do timeout 3 wget -qO- http://{web['CLUSTER-IP']}/ || echo FAILED; done")
    answers = out.split()
    assert len(answers) == 100 and "FAILED" not in answers, out
    assert set(answers) == {p["NAME"] for p in replicas}, f"not every replica answered: {sorted(set(answers))}"
    # Hairpin: a replica reaching its own Service, and picked itself, is answered too (masqueraded by its node).
    me = replicas[0]["NAME"]
    out = cluster.kctl("exec", me, "--", "sh", "-c",
                       f"for i in $(seq 30); do timeout 3 wget -qO- http://{web['CLUSTER-IP']}/ || echo FAILED; done")
    assert "FAILED" not in out.split() and me in out.split(), out


def test_a_pod_resolves_the_service_name(cluster: Cluster, client_pod: str, web: dict[str, str]) -> None:
    def answer() -> str:
        out = cluster.kctl("exec", client_pod, "--", "nslookup", "web.default.svc.cluster.local", check=False)
        assert f"Name:\tweb.default.svc.cluster.local\nAddress: {web['CLUSTER-IP']}" in out, out
        return out
    eventually(answer, "the ClusterIP from the cluster DNS", timeout=30)


def test_node_port_answers_on_every_node(cluster: Cluster, nodes: dict[str, dict[str, str]],
                                          web: dict[str, str]) -> None:
    node_port = web["PORT(S)"].split(":")[1].split("/")[0]
    replicas = {p["NAME"] for p in running_pods(cluster, "web-", 3) or []}
    # Every node runs a proxy: the workers, and the master in the host's namespace.
    assert set(WORKERS) | {f"{NAME}-master"} == set(nodes)
    for name, row in nodes.items():
        assert WORKERS.get(name, f"{SUBNET_PREFIX}.1") == row["INTERNAL-IP"]
        answers = {http_get(f"http://{row['INTERNAL-IP']}:{node_port}/").strip() for _ in range(20)}
        assert answers <= replicas and answers, f"NodePort on {name}: {answers}"
    # But the master's node ports open on its own address only (--nodeport-addresses), not on every address
    # of the host: another local address (one made here, on the cluster's bridge) is refused, nothing listens.
    other = f"{SUBNET_PREFIX}.99"
    ip("addr", "add", f"{other}/32", "dev", BRIDGE)
    try:
        with pytest.raises(urllib.error.URLError, match="refused"):
            http_get(f"http://{other}:{node_port}/")
    finally:
        ip("addr", "del", f"{other}/32", "dev", BRIDGE)


async def test_scaling_changes_the_proxy_endpoints_within_a_second(cluster: Cluster, web: dict[str, str]) -> None:
    config = clientconfig.load(kubeconfig=str(cluster.home / "clusters" / NAME / "kubeconfig"))

    async def scale_and_time(replicas: int) -> float:
        async with config.client() as client:
            d = await client.get(apps_pb2.Deployment, "web", "default")
            d.spec.replicas = replicas
            started = time.monotonic()
            await client.update(d)
        # Both nodes' proxies: the Service's one rule picks among `replicas` endpoints.
        pending = set(WORKERS)
        while pending and time.monotonic() - started < 10:
            pending = {n for n in pending if f"mod {replicas} " not in nft_chain(n, SERVICE_CHAIN)}
            await asyncio.sleep(0.01)
        assert not pending, f"{pending}: {[nft_chain(n, SERVICE_CHAIN) for n in pending]}"
        return time.monotonic() - started

    assert "mod 3 " in nft_chain(f"{NAME}-worker-1", SERVICE_CHAIN)
    down = await scale_and_time(2)
    assert down < 1.0, f"scale 3 → 2 reached the proxies after {down:.3f} s"
    up = await scale_and_time(3)  # includes starting the pod and its readiness probe passing
    print(f"\nscale 3→2: {down * 1000:.0f} ms to both proxies; 2→3 (pod start + readiness): {up * 1000:.0f} ms")
    eventually(lambda: running_pods(cluster, "web-", 3), "3 web replicas ready again")


def test_rolling_update_drops_no_request(cluster: Cluster, web: dict[str, str]) -> None:
    node_port = web["PORT(S)"].split(":")[1].split("/")[0]
    before = {p["NAME"] for p in running_pods(cluster, "web-", 3) or []}
    with RequestLoop(f"http://{WORKERS[f'{NAME}-worker-1']}:{node_port}/", interval=0.02, timeout=2) as loop:
        time.sleep(0.5)
        started = time.monotonic()
        cluster.kctl("rollout", "restart", "deployment/web")
        cluster.kctl("rollout", "status", "deployment/web", timeout=120)
        after = eventually(lambda: running_pods(cluster, "web-", 3), "old replicas gone")
        rolled = time.monotonic() - started
        time.sleep(0.5)
    assert not {p["NAME"] for p in after} & before, "every replica was replaced"
    answered_by = {text for _, ok, text in loop.results if ok}
    assert answered_by & before and answered_by & {p["NAME"] for p in after}, "traffic moved to the new replicas"
    print(f"\nrolling update: {len(loop.results)} requests over {rolled:.1f} s, "
          f"{len(loop.failures())} failed")
    assert not loop.failures(), loop.failures()[:5]


def test_load_balancer_survives_its_announcer_stopping(cluster: Cluster, nodes: dict[str, dict[str, str]]) -> None:
    # Given a LoadBalancer Service whose address one worker announces (the holder of Lease lb-lb),
    apply(cluster, service("lb", "LoadBalancer"))

    def external_ip() -> str | None:
        address = {r["NAME"]: r for r in cluster.rows("get", "svc")}["lb"]["EXTERNAL-IP"]
        return address if address.startswith(SUBNET_PREFIX) else None
    lb_ip = eventually(external_ip, "LoadBalancer EXTERNAL-IP")

    def holder() -> str | None:
        leases = {r["NAME"]: r for r in cluster.rows("get", "lease", "-n", "default")}
        name = leases.get("lb-lb", {}).get("HOLDER", "")
        return name if name in WORKERS else None
    announcer = eventually(holder, "an announcer for lb")
    survivor = next(n for n in WORKERS if n != announcer)
    # and its pods on the other worker (so stopping the announcer stops only the announcement),
    apply(cluster, deployment("lb", 2, node=survivor))
    eventually(lambda: running_pods(cluster, "lb-", 2), "2 lb replicas ready")
    eventually(lambda: http_get(f"http://{lb_ip}/"), "the LoadBalancer answers")

    folder = cluster.home / "clusters" / NAME
    pids = json.loads((folder / "pids.json").read_text())
    frozen = [pids[f"proxy/{announcer}"], pids[f"kubelet/{announcer}"]]
    veth = next(n["host_veth"] for n in json.loads((folder / "state.json").read_text())["nodes"]
                if n["name"] == announcer)
    with RequestLoop(f"http://{lb_ip}/") as loop:
        time.sleep(1.0)
        # When the announcing node stops: its node agents freeze (the supervisor sees nothing to restart,
        # the Lease is no longer renewed) and its link goes down.
        stopped = time.monotonic()
        try:
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            ip("link", "set", veth, "down")
            # then the other worker takes the Lease and the address, and traffic resumes.
            eventually(lambda: holder() == survivor or None, "the survivor holds the Lease", timeout=60)
            eventually(lambda: loop.answered_since(time.monotonic() - 1) >= 5 or None, "answers again", timeout=30)
            resumed = time.monotonic()
            time.sleep(2.0)
        finally:
            ip("link", "set", veth, "up")
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
    answered = [t for t, ok, _ in loop.results if ok]
    failed = len(loop.failures())
    assert answered[0] < stopped < answered[-1]
    # The longest time without an answer: between two answered requests.
    gap = max(b - a for a, b in itertools.pairwise(answered))
    print(f"\nLoadBalancer {lb_ip}: {announcer} stopped; {failed} of {len(loop.results)} requests failed, "
          f"gap {gap:.1f} s, answering again {resumed - stopped:.1f} s after the stop")
    # Bounded by the Lease: 15 s duration + 2 s retry, plus the gratuitous ARP and a request's timeout.
    assert gap < 25.0, gap
    assert all(ok for t, ok, _ in loop.results if t > resumed), "once resumed, every request is answered"
    new = ip("-n", survivor, "-o", "addr", "show", "dev", "eth0")
    assert f"{lb_ip}/32" in new, f"the survivor does not hold {lb_ip}: {new}"


def test_cluster_down_leaves_no_pod_route(cluster: Cluster) -> None:
    cluster.kctl("cluster", "down", "--name", NAME, timeout=300)
    routes = ip("-o", "route", "show")
    assert not [line for line in routes.splitlines() if line.startswith("10.71.") or SUBNET_PREFIX in line], routes
