"""Issue 15, NetworkPolicy: every node enforces the policies that select its pods, on a real local cluster.

Given `kctl cluster up --workers 2` (its own name, subnet 192.168.79.0/24,
bridge flt79np and pod network 10.79.0.0/16, so it meets no other cluster on
this host), busybox pods in namespace `np` — web servers `web` (worker-1) and
`web2` (worker-2), clients `friend` (role=client, worker-1, beside web),
`far-friend` (role=client, worker-2) and `stranger` (no label, worker-2) — and
a web server `other-web` in namespace `other`:

- without policies everyone reaches everyone;
- a default deny in `np` blocks pod-to-pod there, and has no effect on `other`;
  the servers' readiness probes (from their node) still pass;
- an allow by pod label lets exactly the labelled clients in, from the same
  node and from the other one;
- a connection opened while allowed keeps flowing after a change refuses new
  ones (conntrack), while a new one is refused;
- an egress policy without a DNS rule makes name lookups fail; adding the DNS
  rule (UDP and TCP 53) fixes them (the cluster's DNS server is a process on
  the master, not a pod, so the rule names ports, not kube-system's pods);
- deleting the policies takes the rules off the node within a second, and
  traffic flows again.

Needs root, containerd, runc and the CNI plugins.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from client import config as clientconfig
from proto import networking_pb2
from proto.errors import NotFound
from tests.e2e.test_seed_journey import KCTL, Cluster, eventually

NAME = "netpol"
SUBNET_PREFIX = "192.168.79"
BRIDGE = "flt79np"
POD_NETWORK = "10.79.0.0/16"
WORKER_1, WORKER_2 = f"{NAME}-worker-1", f"{NAME}-worker-2"
MASTER_TABLE = f"flotilla-netpol-{NAME}"  # the master's, in the host's namespace beside flotilla-proxy-<name>

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("containerd") or not Path("/usr/lib/cni/bridge").exists(),
    reason="needs root, containerd and the CNI plugins (the local provider makes network namespaces)")

# httpd on 80 answering with the pod's name, and an echo server on 9000 for long-lived connections.
SERVE = "mkdir -p /www && hostname > /www/index.html && (nc -ll -p 9000 -e cat &) && exec httpd -f -p 80 -h /www"


def pod(name: str, namespace: str, node: str, labels: dict[str, str], command: str) -> dict[str, object]:
    container: dict[str, object] = {"name": "c", "image": "busybox", "command": ["sh", "-c", command]}
    if command == SERVE:
        # The kubelet probes from the node itself: a policy must never make the server unready.
        container["readinessProbe"] = {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1,
                                       "timeoutSeconds": 2, "failureThreshold": 3}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "containers": [container]}}


def policy(name: str, namespace: str, spec: dict[str, object]) -> dict[str, object]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def apply(cluster: Cluster, *objects: dict[str, object]) -> None:
    manifest = cluster.home / "netpol.yaml"
    manifest.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    cluster.kctl("apply", "-f", str(manifest))


def exec_in(cluster: Cluster, name: str, script: str, namespace: str = "np") -> str:
    return cluster.kctl("-n", namespace, "exec", name, "--", "sh", "-c", script, check=False, timeout=30)


def reaches(cluster: Cluster, client: str, ip: str) -> bool:
    """Whether `client` gets an HTTP answer from `ip` within 2 s."""
    out = exec_in(cluster, client, f"timeout 2 wget -qO- http://{ip}/ >/dev/null 2>&1 && echo REACHED || echo NOPE")
    assert "REACHED" in out or "NOPE" in out, out  # the exec itself worked
    return "REACHED" in out


def ingress_map(node: str) -> str:
    """The node's isolated pods (empty when the node holds no NetworkPolicy table)."""
    done = subprocess.run(["ip", "netns", "exec", node, "nft", "list", "map", "ip", "flotilla-netpol", "ingress-pods"],
                          capture_output=True, text=True)
    return done.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("netpol"))
    with c.up(NAME, workers=2, subnet_prefix=SUBNET_PREFIX, bridge=BRIDGE, pod_network=POD_NETWORK):
        try:
            yield c
        finally:
            # The policies first, so the master's proxy removes its table from the host's namespace.
            for namespace in ("np", "other"):
                c.kctl("-n", namespace, "delete", "networkpolicy", "--all", check=False)
            time.sleep(1)
    subprocess.run(["nft", "delete", "table", "ip", MASTER_TABLE], capture_output=True)


@pytest.fixture(scope="module")
def ips(cluster: Cluster) -> dict[str, str]:
    """Every test pod running; name -> pod IP."""
    for namespace in ("np", "other"):
        cluster.kctl("create", "namespace", namespace)
    apply(cluster,
          pod("web", "np", WORKER_1, {"app": "web"}, SERVE),
          pod("web2", "np", WORKER_2, {"app": "web"}, SERVE),
          pod("friend", "np", WORKER_1, {"role": "client"}, "exec sleep 3600"),
          pod("far-friend", "np", WORKER_2, {"role": "client"}, "exec sleep 3600"),
          pod("stranger", "np", WORKER_2, {}, "exec sleep 3600"),
          pod("other-web", "other", WORKER_1, {"app": "web"}, SERVE),
          {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "np"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
    # The proxy routes by EndpointSlices, and `cluster up` writes kube-dns's Endpoints only (the DNS server
    # is a process on the master); without a mirroring controller there is no slice and pods cannot
    # resolve at all. Mirror it here until the cluster does, so the egress story tests policies, not that.
    if "kube-dns" not in cluster.kctl("-n", "kube-system", "get", "endpointslices", "-o", "name", check=False):
        apply(cluster, {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": "kube-dns-mirror", "namespace": "kube-system",
                                     "labels": {"kubernetes.io/service-name": "kube-dns",
                                                "endpointslice.kubernetes.io/managed-by": "e2e.flotilla.dev"}},
                        "addressType": "IPv4", "endpoints": [{"addresses": [f"{SUBNET_PREFIX}.1"],
                                                              "conditions": {"ready": True}}],
                        "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                  {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]})

    def running() -> dict[str, str] | None:
        rows = [*cluster.rows("-n", "np", "get", "pods", "-o", "wide"),
                *cluster.rows("-n", "other", "get", "pods", "-o", "wide")]
        ready = {r["NAME"]: r["IP"] for r in rows
                 if r["STATUS"] == "Running" and r["READY"] == "1/1" and r["IP"] not in ("", "<none>")}
        assert len(ready) == 6, [(r["NAME"], r["READY"], r["STATUS"], r["IP"]) for r in rows]
        return ready
    return eventually(running, "the six test pods Running and ready", timeout=300)


def test_without_policies_every_pod_reaches_every_pod(cluster: Cluster, ips: dict[str, str]) -> None:
    assert eventually(lambda: reaches(cluster, "stranger", ips["web"]), "stranger -> web (across nodes)")
    assert reaches(cluster, "friend", ips["web"])  # the same node, over the bridge
    assert not ingress_map(WORKER_1)  # no policy, no table


def test_default_deny_blocks_pod_to_pod_in_its_namespace_only(cluster: Cluster, ips: dict[str, str]) -> None:
    apply(cluster, policy("deny-all", "np", {"podSelector": {}}))
    eventually(lambda: not reaches(cluster, "stranger", ips["web"]), "stranger refused by web")
    assert not reaches(cluster, "friend", ips["web"])  # the same node: the bridge's traffic is filtered too
    assert not reaches(cluster, "far-friend", ips["web2"])
    assert reaches(cluster, "stranger", ips["other-web"])  # np's policy has no effect on namespace other
    # The kubelet's probes come from the node itself, which Kubernetes always lets in: web stays Ready
    # (three failed probes a second apart would make it unready).
    time.sleep(5)
    rows = {r["NAME"]: r for r in cluster.rows("-n", "np", "get", "pods")}
    assert rows["web"]["READY"] == rows["web2"]["READY"] == "1/1", rows


def test_an_allow_by_label_lets_only_the_labelled_clients_in(cluster: Cluster, ips: dict[str, str]) -> None:
    apply(cluster, policy("allow-clients", "np", {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}))
    eventually(lambda: reaches(cluster, "friend", ips["web"]), "friend -> web (same node)")
    assert reaches(cluster, "far-friend", ips["web"])  # across nodes
    assert reaches(cluster, "far-friend", ips["web2"])  # same node, worker-2
    assert not reaches(cluster, "stranger", ips["web"])
    assert not reaches(cluster, "stranger", ips["web2"])


def test_an_established_connection_survives_a_policy_that_refuses_new_ones(cluster: Cluster,
                                                                             ips: dict[str, str]) -> None:
    # 24 lines over one connection to web's echo server, one every 0.25 s; half-way the allow goes.
    script = f"i=0; while [ $i -lt 24 ]; do echo line$i; i=$((i+1)); sleep 0.25; done | nc -w 2 {ips['web']} 9000"
    stream = subprocess.Popen([KCTL, "-n", "np", "exec", "friend", "--", "sh", "-c", script],
                              env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    cluster.kctl("-n", "np", "delete", "networkpolicy", "allow-clients")
    eventually(lambda: not reaches(cluster, "friend", ips["web"]), "new connections from friend refused")
    out, err = stream.communicate(timeout=60)
    echoed = [line for line in out.splitlines() if line.startswith("line")]
    assert echoed == [f"line{i}" for i in range(24)], (out, err)


def test_egress_without_a_dns_rule_breaks_name_lookups_and_the_rule_fixes_them(cluster: Cluster,
                                                                               ips: dict[str, str]) -> None:
    def resolves() -> bool:
        out = exec_in(cluster, "stranger", "timeout 5 nslookup web.np.svc.cluster.local 2>&1; echo EXIT=$?")
        return "EXIT=0" in out and "Address" in out.split("web.np.svc.cluster.local", 1)[-1]

    def resolving() -> bool:
        out = exec_in(cluster, "stranger", "timeout 5 nslookup web.np.svc.cluster.local 2>&1; echo EXIT=$?")
        assert "EXIT=0" in out and "Address" in out.split("web.np.svc.cluster.local", 1)[-1], out
        return True

    assert eventually(resolving, "stranger resolves web before any egress policy")
    web_only = {"to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 80}]}
    apply(cluster, policy("stranger-out", "np", {"podSelector": {"matchExpressions": [
        {"key": "role", "operator": "DoesNotExist"}, {"key": "app", "operator": "DoesNotExist"}]},
        "policyTypes": ["Egress"], "egress": [web_only]}))
    eventually(lambda: not resolves(), "lookups fail without a DNS rule")
    dns = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    apply(cluster, policy("stranger-out", "np", {"podSelector": {"matchExpressions": [
        {"key": "role", "operator": "DoesNotExist"}, {"key": "app", "operator": "DoesNotExist"}]},
        "policyTypes": ["Egress"], "egress": [web_only, dns]}))
    assert eventually(resolving, "lookups work again with the DNS rule", timeout=30)


async def test_deleting_the_policies_restores_traffic_within_a_second(cluster: Cluster, ips: dict[str, str]) -> None:
    assert ips["web"] in ingress_map(WORKER_1)  # deny-all still isolates web
    config = clientconfig.load(kubeconfig=str(cluster.home / "clusters" / NAME / "kubeconfig"))
    async with config.client() as client:
        with contextlib.suppress(NotFound):  # the DNS story's, if it got that far
            await client.delete(networking_pb2.NetworkPolicy, "stranger-out", "np")
        started = time.monotonic()
        await client.delete(networking_pb2.NetworkPolicy, "deny-all", "np")
    for _ in range(1000):  # 10 s at most
        if ips["web"] not in ingress_map(WORKER_1):
            break
        await asyncio.sleep(0.01)
    took = time.monotonic() - started
    assert ips["web"] not in ingress_map(WORKER_1)
    assert took < 1.0, f"the policy left worker-1's rules {took:.3f} s after its deletion"
    print(f"\npolicy deleted -> off worker-1's rules in {took * 1000:.0f} ms")
    assert reaches(cluster, "stranger", ips["web"])
