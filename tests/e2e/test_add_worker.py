"""Issue 14: a running local cluster grows by a worker and a DaemonSet follows it; the worker leaves again.

Given `kctl cluster up --workers 1` (its own name, subnet 192.168.72.0/24,
bridge flt72w and pod network 10.72.0.0/16, so it meets no other cluster on
this host; its own HOME and KUBECONFIG) and a DaemonSet with a pod on the one
worker, `kctl cluster add-worker` brings a third Node Ready at the next
address with the next pod CIDR, labelled a worker, and the DaemonSet puts its
pod there. The master is refused by remove-worker; `kctl cluster remove-worker`
of the new worker drains it, deletes its Node and its DaemonSet pod goes with
it, and the host keeps no namespace, veth, route or process of it. `cluster
down` leaves the host clean. Needs root, containerd, runc and the CNI plugins.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_seed_journey import KCTL, Cluster, eventually

NAME = "grow"
SUBNET_PREFIX = "192.168.72"
BRIDGE = "flt72w"
POD_NETWORK = "10.72.0.0/16"
MASTER, FIRST, ADDED = f"{NAME}-master", f"{NAME}-worker-1", f"{NAME}-worker-2"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("containerd") or not Path("/usr/lib/cni/bridge").exists(),
    reason="needs root, containerd and the CNI plugins (the local provider makes network namespaces)")

DAEMONSET = """\
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: node-agent
spec:
  selector:
    matchLabels: {app: node-agent}
  template:
    metadata:
      labels: {app: node-agent}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: agent
        image: busybox
        command: ["sleep", "3600"]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("add-worker")
    with Cluster(home).up(NAME, workers=1, subnet_prefix=SUBNET_PREFIX, bridge=BRIDGE, pod_network=POD_NETWORK) as c:
        yield c


def agents(cluster: Cluster) -> dict[str, str]:
    """The DaemonSet's pods: node -> status."""
    return {r["NODE"]: r["STATUS"] for r in cluster.rows("get", "pods", "-l", "app=node-agent", "-o", "wide")}


def leftovers_of(node: str, veth: str, pod_cidr: str) -> list[str]:
    """What a worker could leave on the host: its namespace, veth, route, processes, mounts."""
    found = [f"netns {node}"] if Path("/run/netns", node).exists() else []
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found += [f"link {veth}" for line in links.splitlines() if f" {veth}@" in line or f" {veth}:" in line]
    routes = subprocess.run(["ip", "-o", "route", "show"], capture_output=True, text=True).stdout
    found += [f"route {line}" for line in routes.splitlines() if line.startswith(pod_cidr)]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            # Its containerd (and shims), kubelet and proxy all name the node (config paths, --node-name, netns).
            if node.encode() in cmdline and state != "Z":
                words = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"process {proc.name}: {words}")
    with open("/proc/self/mountinfo") as mounts:
        found += [f"mount {line.split()[4]}" for line in mounts if f"/nodes/{node}" in line]
    return found


def test_a_worker_joins_a_running_cluster_and_leaves_it(cluster: Cluster) -> None:
    # Given a cluster of a master and one worker, and a DaemonSet whose pod runs on the worker.
    manifest = cluster.home / "daemonset.yaml"
    manifest.write_text(DAEMONSET)
    cluster.kctl("apply", "-f", str(manifest))
    eventually(lambda: agents(cluster) == {FIRST: "Running"}, "the DaemonSet's pod Running on the worker", 60)

    # When a worker is added: it is planned at the next address with the next pod CIDR, joined and Ready.
    out = cluster.kctl("cluster", "add-worker", "--name", NAME, timeout=180)
    for phase in ("addresses:", "certificates:", "nodes:", "join:", "node readiness:"):
        assert phase in out, out
    assert f"{ADDED} {SUBNET_PREFIX}.102 (pods 10.72.2.0/24)" in out, out
    assert f'cluster "{NAME}": 1 worker added' in out and "3 nodes" in out, out
    rows = {r["NAME"]: r for r in cluster.rows("get", "nodes", "-o", "wide")}
    assert {n: (r["STATUS"], r["ROLES"], r["INTERNAL-IP"]) for n, r in rows.items()} == {
        MASTER: ("Ready", "control-plane", f"{SUBNET_PREFIX}.1"),
        FIRST: ("Ready", "worker", f"{SUBNET_PREFIX}.101"),
        ADDED: ("Ready", "worker", f"{SUBNET_PREFIX}.102")}
    assert cluster.kctl("get", "node", ADDED, "-o", "jsonpath={.spec.podCIDR}") == "10.72.2.0/24"
    # Its join token was for it alone and is gone once it is Ready; only up's and its own CSRs exist.
    assert "bootstrap-token-" not in cluster.kctl("get", "secrets", "-n", "kube-system")
    status = {r["COMPONENT"]: r["STATUS"] for r in cluster.rows("cluster", "status", "--name", NAME)}
    assert {status[f"{d}/{ADDED}"] for d in ("containerd", "kubelet", "proxy")} == {"Running"}, status

    # Then the DaemonSet follows: a pod on the new node too.
    eventually(lambda: agents(cluster) == {FIRST: "Running", ADDED: "Running"}, "a DaemonSet pod on the new node", 60)

    # The master is not a worker to remove.
    refused = subprocess.run([KCTL, "cluster", "remove-worker", MASTER, "--name", NAME], env=cluster.env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and f"{MASTER} is the control plane of cluster" in refused.stderr, refused

    # When the new worker is removed: drained, its Node deleted, its daemon pod gone with it.
    out = cluster.kctl("cluster", "remove-worker", ADDED, "--name", NAME, timeout=180)
    assert f"node/{ADDED} cordoned" in out and f"Node {ADDED} deleted" in out, out
    assert f'cluster "{NAME}": {ADDED} removed' in out and "2 nodes" in out, out
    assert {r["NAME"] for r in cluster.rows("get", "nodes")} == {MASTER, FIRST}
    eventually(lambda: agents(cluster) == {FIRST: "Running"}, "only the first worker's DaemonSet pod", 30)
    # And nothing of it is left on the host, nor in the cluster's status.
    assert leftovers_of(ADDED, f"{BRIDGE}-w2", "10.72.2.0/24") == []
    components = {r["COMPONENT"] for r in cluster.rows("cluster", "status", "--name", NAME)}
    assert f"kubelet/{FIRST}" in components and not any(ADDED in c for c in components), components

    # When the cluster goes, the host is clean: no namespace, bridge, veth, route or process of it.
    assert cluster.kctl("cluster", "down", "--name", NAME, timeout=300).strip() == f'cluster "{NAME}" deleted'
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert BRIDGE not in links and f"flt-{MASTER}"[:15] not in links
    assert not [n for n in (os.listdir("/run/netns") if Path("/run/netns").exists() else []) if NAME in n]
    routes = subprocess.run(["ip", "-o", "route", "show"], capture_output=True, text=True).stdout
    assert SUBNET_PREFIX not in routes and "10.72." not in routes, routes
    for node, veth, cidr in ((FIRST, f"{BRIDGE}-w1", "10.72.1.0/24"), (ADDED, f"{BRIDGE}-w2", "10.72.2.0/24")):
        assert leftovers_of(node, veth, cidr) == []
