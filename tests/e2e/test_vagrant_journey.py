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

With FLOTILLA_VAGRANT_MASTERS=3 the module boots three masters (master1..3,
m1-k8s..m3-k8s at .11-.13, the API's virtual IP at .10) and one worker instead
(FLOTILLA_MASTERS=3 FLOTILLA_WORKERS=1: four VMs, not six, under emulation) and
runs the several-masters journey only: four Nodes Ready, three of them
control-plane; `kctl etcd member list` from the host shows three started
members named after the masters; kubectl reaches the API at the VIP; when the
master holding the VIP is frozen (`virsh suspend`; `vagrant halt` without
virsh), the API answers at the VIP again from another master and takes a
write; resumed, the frozen master's Node is Ready again.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import config as clientconfig
from proto import coordination_pb2
from proto.errors import ApiError
from provision import components
from provision.provider import cluster_dir as cluster_folder
from provision.vagrant import CLUSTER_NAME
from tests.e2e.test_seed_journey import Cluster, eventually, http_get

REPO = Path(__file__).resolve().parents[2]
PREFIX = os.environ.get("FLOTILLA_NETWORK_PREFIX", "192.168.60")
MASTER, WORKERS = "m-k8s", {"w1-k8s": f"{PREFIX}.101", "w2-k8s": f"{PREFIX}.102"}
# FLOTILLA_VAGRANT_MASTERS=3: the several-masters journey (three masters and one worker) instead of the seed one.
MASTER_COUNT = int(os.environ.get("FLOTILLA_VAGRANT_MASTERS", "1"))
HA_MASTERS = {f"m{i}-k8s": f"{PREFIX}.1{i}" for i in range(1, MASTER_COUNT + 1)}
API_VIP = f"{PREFIX}.10"
ETCD_PORT = 2379

pytestmark = [
    pytest.mark.vagrant,
    pytest.mark.skipif(os.environ.get("FLOTILLA_VAGRANT") != "1" or not shutil.which("vagrant"),
                       reason="opt-in: FLOTILLA_VAGRANT=1 with Vagrant + libvirt and the base box"),
]
one_master = pytest.mark.skipif(MASTER_COUNT != 1, reason="the one-master journey (FLOTILLA_VAGRANT_MASTERS unset)")
several_masters = pytest.mark.skipif(MASTER_COUNT == 1, reason="opt-in: FLOTILLA_VAGRANT_MASTERS=3")


class VagrantCluster(Cluster):
    """The seed journey's kctl helpers, pointed at the kubeconfig the Vagrant bootstrap wrote."""

    def __init__(self, kubeconfig: Path) -> None:
        self.home = kubeconfig.parent
        self.env = {**os.environ, "KCTL_CONFIG": str(kubeconfig)}


def vagrant(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLOTILLA_MASTERS": str(MASTER_COUNT), "FLOTILLA_WORKERS": "2" if MASTER_COUNT == 1 else "1",
           "FLOTILLA_NETWORK_PREFIX": PREFIX}
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


@one_master
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


@one_master
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


def vip_holder(kubeconfig: Path) -> str:
    """The master whose announcer holds the Lease kube-system/flotilla-api-vip (its Node name)."""
    async def read() -> str:
        async with clientconfig.load(kubeconfig=str(kubeconfig)).client(timeout=10) as client:
            lease = await client.get(coordination_pb2.Lease, components.API_VIP_LEASE, "kube-system")
            return str(lease.spec.holder_identity)

    try:
        return asyncio.run(read())
    except ApiError as err:
        raise AssertionError(f"cannot read the VIP's Lease: {err}") from None


def kubectl(kubeconfig: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "--request-timeout", "20s", *args],
                          capture_output=True, text=True, timeout=timeout)


def libvirt_domain(machine: str) -> str:
    """The libvirt domain of a Vagrant machine (vagrant-libvirt names it <folder>_<machine>), "" without virsh."""
    if not shutil.which("virsh"):
        return ""
    names = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--name"], capture_output=True, text=True,
                           timeout=60).stdout.split()
    return next((n for n in names if n.endswith(f"_{machine}")), "")


@several_masters
def test_vagrant_several_masters_keep_the_api_at_the_vip(cluster: VagrantCluster) -> None:
    kubeconfig = cluster_folder(CLUSTER_NAME) / "kubeconfig"
    pki = cluster_folder(CLUSTER_NAME) / "bundle"
    # Given `vagrant up` with three masters: four Nodes Ready, the masters control-plane at .11-.13.
    nodes = {**HA_MASTERS, "w1-k8s": f"{PREFIX}.101"}
    rows = eventually(lambda: [r for r in cluster.rows("get", "nodes", "-o", "wide") if r["STATUS"] == "Ready"]
                      if len(cluster.rows("get", "nodes")) == len(nodes) else None, "four Nodes", timeout=600)
    assert {r["NAME"]: r["INTERNAL-IP"] for r in rows} == nodes
    roles = {r["NAME"]: r["ROLES"] for r in cluster.rows("get", "nodes")}
    assert sorted(n for n, role in roles.items() if role == "control-plane") == sorted(HA_MASTERS)

    # etcd: one started member per master, named after it (asked from the host with the backup certificate).
    members = cluster.rows("etcd", "member", "list",
                           "--endpoints", ",".join(f"https://{a}:{ETCD_PORT}" for a in HA_MASTERS.values()),
                           "--cacert", str(pki / "pki/etcd/ca.crt"), "--cert", str(pki / "pki/etcd/backup-client.crt"),
                           "--key", str(pki / "pki/etcd/backup-client.key"))
    assert sorted((m["NAME"], m["STATUS"]) for m in members) == [(n, "started") for n in sorted(HA_MASTERS)]
    assert {m["PEER ADDRS"] for m in members} == {f"https://{a}:{ETCD_PORT + 1}" for a in HA_MASTERS.values()}

    # kubectl reaches the API at the virtual IP, which one master holds.
    assert f"server: https://{API_VIP}:6443" in kubeconfig.read_text()
    listed = kubectl(kubeconfig, "get", "nodes", "-o", "name")
    assert listed.returncode == 0 and "node/w1-k8s" in listed.stdout, listed.stderr
    holder = eventually(lambda: vip_holder(kubeconfig) or None, "a VIP holder", timeout=120)
    assert holder in HA_MASTERS
    machine = f"master{holder[1]}"  # m2-k8s is the Vagrant machine master2

    # When the holder freezes, the API answers at the VIP again, from another master, and takes a write.
    domain = libvirt_domain(machine)
    frozen = time.monotonic()
    if domain:
        subprocess.run(["virsh", "-c", "qemu:///system", "suspend", domain], check=True, timeout=120)
    else:
        assert vagrant("halt", machine, timeout=900).returncode == 0
    try:
        moved = eventually(lambda: (kubectl(kubeconfig, "get", "nodes", "-o", "name").returncode == 0
                                    and vip_holder(kubeconfig) not in ("", holder)) or None,
                           f"the API at {API_VIP} from a master other than {holder}", timeout=300)
        assert moved
        print(f"{holder} frozen: the API answered at the VIP from {vip_holder(kubeconfig)} after "
              f"{time.monotonic() - frozen:.0f} s")
        eventually(lambda: kubectl(kubeconfig, "create", "configmap", "written-after-failover").returncode == 0
                   or None, "a write with two of three etcd members", timeout=120)
    finally:
        if domain:
            subprocess.run(["virsh", "-c", "qemu:///system", "resume", domain], timeout=120)
        else:
            vagrant("up", machine, "--no-provision", timeout=1800)
    # Then the frozen master comes back: its Node Ready again, the write still there.
    eventually(lambda: {r["NAME"]: r["STATUS"] for r in cluster.rows("get", "nodes")}.get(holder) == "Ready" or None,
               f"{holder} Ready again", timeout=900)
    assert "written-after-failover" in kubectl(kubeconfig, "get", "configmaps", "-o", "name").stdout
    kubectl(kubeconfig, "delete", "configmap", "written-after-failover")
