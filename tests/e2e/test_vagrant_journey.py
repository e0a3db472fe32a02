"""The seed journey on Vagrant VMs: `vagrant up` alone gives a joined cluster, then nginx end to end.

Opt-in (`FLOTILLA_VAGRANT=1`, root, Vagrant with libvirt, the base box built:
see provision/vagrant_host.sh and `python -m provision box build`): it boots a
master and two workers (minutes under QEMU emulation) from the repository's
Vagrantfile. Given `vagrant up` (whose trigger runs the bootstrap), three Nodes
are Ready with their private-network addresses (never the NAT 10.0.2.15), the
master tainted; `vagrant ssh master` finds kctl configured. When a user runs
nginx, exposes it on a NodePort, deploys and scales it to 3 and puts a
LoadBalancer in front, each step answers over HTTP from the host at the VMs'
addresses. Deleting it all leaves no pods; `vagrant destroy -f` runs at the end
unless FLOTILLA_VAGRANT_KEEP=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.provider import cluster_dir as cluster_folder
from provision.vagrant import CLUSTER_NAME
from tests.e2e.test_seed_journey import Cluster, eventually, http_get

REPO = Path(__file__).resolve().parents[2]
PREFIX = os.environ.get("FLOTILLA_NETWORK_PREFIX", "192.168.60")
MASTER, WORKERS = "m-k8s", {"w1-k8s": f"{PREFIX}.101", "w2-k8s": f"{PREFIX}.102"}

pytestmark = [
    pytest.mark.vagrant,
    pytest.mark.skipif(os.environ.get("FLOTILLA_VAGRANT") != "1" or not shutil.which("vagrant"),
                       reason="opt-in: FLOTILLA_VAGRANT=1 with Vagrant + libvirt and the base box"),
]


class VagrantCluster(Cluster):
    """The seed journey's kctl helpers, pointed at the kubeconfig the Vagrant bootstrap wrote."""

    def __init__(self, kubeconfig: Path) -> None:
        self.home = kubeconfig.parent
        self.env = {**os.environ, "KCTL_CONFIG": str(kubeconfig)}


def vagrant(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLOTILLA_WORKERS": "2", "FLOTILLA_NETWORK_PREFIX": PREFIX}
    return subprocess.run(["vagrant", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster() -> Iterator[VagrantCluster]:
    started = time.monotonic()
    try:
        up = vagrant("up", "--provider=libvirt")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        print(f"vagrant up (VMs + bootstrap): {time.monotonic() - started:.0f}s")
        yield VagrantCluster(cluster_folder(CLUSTER_NAME) / "kubeconfig")
    finally:
        if os.environ.get("FLOTILLA_VAGRANT_KEEP") != "1":
            vagrant("destroy", "-f", timeout=600)


def test_vagrant_seed_journey(cluster: VagrantCluster) -> None:
    # Given `vagrant up`: master and both workers Ready at their private-network addresses.
    nodes = {MASTER: f"{PREFIX}.10", **WORKERS}
    rows = eventually(lambda: [r for r in cluster.rows("get", "nodes", "-o", "wide") if r["STATUS"] == "Ready"]
                      if len(cluster.rows("get", "nodes")) == 3 else None, "three Nodes", timeout=300)
    assert {r["NAME"]: r["INTERNAL-IP"] for r in rows} == nodes
    assert {r["NAME"]: r["ROLES"] for r in cluster.rows("get", "nodes")}[MASTER] == "control-plane"
    # And kctl is configured on the master for the login user.
    ssh = vagrant("ssh", "master", "-c", "kctl get nodes", timeout=300)
    assert ssh.returncode == 0 and MASTER in ssh.stdout, ssh.stdout + ssh.stderr

    # When I run nginx, it runs on a worker with a pod IP.
    cluster.kctl("run", "nginx", "--image=nginx")

    def running(name: str) -> dict[str, str] | None:
        pod = {r["NAME"]: r for r in cluster.rows("get", "pod", "-o", "wide")}.get(name)
        return pod if pod and pod["STATUS"] == "Running" and pod["IP"] != "<none>" else None
    pod = eventually(lambda: running("nginx"), "pod nginx Running", timeout=600)
    assert pod["NODE"] in WORKERS

    # And expose it on a NodePort: each worker VM answers on it from the host.
    cluster.kctl("expose", "pod", "nginx", "--type=NodePort", "--port=80")
    service = {r["NAME"]: r for r in cluster.rows("get", "svc")}["nginx"]
    node_port = service["PORT(S)"].split(":")[1].split("/")[0]
    for address in WORKERS.values():
        page = eventually(lambda a=address: http_get(f"http://{a}:{node_port}/"),  # type: ignore[misc]
                          f"NodePort on {address}", timeout=300)
        assert "Welcome to nginx!" in page

    # When I create a Deployment and scale it to 3, 3 pods run over both workers.
    cluster.kctl("create", "deployment", "deploy-nginx", "--image=nginx")
    cluster.kctl("scale", "deployment", "deploy-nginx", "--replicas=3")

    def three_running() -> list[dict[str, str]] | None:
        pods = [r for r in cluster.rows("get", "pods", "-o", "wide") if r["NAME"].startswith("deploy-nginx-")]
        ready = [p for p in pods if p["STATUS"] == "Running"]
        return ready if len(ready) == 3 else None
    replicas = eventually(three_running, "3 deploy-nginx pods Running", timeout=900)
    assert {p["NODE"] for p in replicas} == set(WORKERS)

    # And a LoadBalancer: its EXTERNAL-IP comes from the pool inside the VMs' subnet and answers.
    cluster.kctl("expose", "deployment", "deploy-nginx", "--type=LoadBalancer", "--port=80")

    def external_ip() -> str | None:
        ip = {r["NAME"]: r for r in cluster.rows("get", "svc")}["deploy-nginx"]["EXTERNAL-IP"]
        return ip if ip.startswith(PREFIX + ".") else None
    lb = eventually(external_ip, "LoadBalancer EXTERNAL-IP", timeout=300)
    assert "Welcome to nginx!" in eventually(lambda: http_get(f"http://{lb}/"), "LoadBalancer answers", timeout=300)

    # When I delete it all, no pod is left.
    for kind, name in (("service", "nginx"), ("service", "deploy-nginx"), ("deployment", "deploy-nginx"),
                       ("pod", "nginx")):
        cluster.kctl("delete", kind, name)
    eventually(lambda: not cluster.rows("get", "pods") or None, "no pods left", timeout=600)


NFS_SHARED = """\
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: shared}
spec:
  storageClassName: nfs
  accessModes: [ReadWriteMany]
  resources: {requests: {storage: 64Mi}}
""" + "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  containers:
  - name: sh
    image: busybox
    command: [sh, -c, "{script}; sleep 3600"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  volumes: [{{name: shared, persistentVolumeClaim: {{claimName: shared}}}}]
""" for name, node, script in (("writer", "w1-k8s", "echo from-w1 > /shared/file"),
                               ("reader", "w2-k8s", "true")))


def test_vagrant_nfs_claim_is_shared_by_pods_on_two_workers(cluster: VagrantCluster, tmp_path: Path) -> None:
    """Issue 14's opt-in NFS check: one ReadWriteMany claim of the `nfs` class, mounted on two workers."""
    (tmp_path / "shared.yaml").write_text(NFS_SHARED)
    cluster.kctl("apply", "-f", str(tmp_path / "shared.yaml"))
    eventually(lambda: {r["NAME"]: r["STATUS"] for r in cluster.rows("get", "pvc")}.get("shared") == "Bound" or None,
               "the nfs claim Bound", timeout=300)

    def both_running() -> bool | None:
        status = {r["NAME"]: r["STATUS"] for r in cluster.rows("get", "pods")}
        return (status.get("writer"), status.get("reader")) == ("Running", "Running") or None
    eventually(both_running, "writer on w1-k8s and reader on w2-k8s Running", timeout=600)
    # What the pod on w1 wrote, the pod on w2 reads: the same export, mounted on both nodes.
    assert eventually(lambda: cluster.kctl("exec", "reader", "--", "cat", "/shared/file", check=False).strip()
                      == "from-w1" or None, "the file written on w1 read on w2", timeout=120)
    for kind, name in (("pod", "writer"), ("pod", "reader"), ("pvc", "shared")):
        cluster.kctl("delete", kind, name)
    # Reclaim policy Delete: the volume goes, its directory on the master's export first.
    eventually(lambda: not [r for r in cluster.rows("get", "pv") if r["CLAIM"] == "default/shared"] or None,
               "the nfs volume deleted", timeout=300)
