"""The seed journey on the local provider: the first half hour of a Kubernetes book, end to end.

Given a fresh cluster with two workers (a non-default name, subnet, bridge and
ports, so it never collides with a cluster someone runs here), three Nodes are
Ready, the master among them tainted control-plane:NoSchedule; kctl speaks TLS
with the admin's client certificate, a caller without credentials is refused as
unauthenticated, the workers joined with a bootstrap token (their kubelets'
certificates come from CSRs), a worker's own kubeconfig cannot change another
Node, and a bootstrap token's join command finds the cluster. When a user runs
nginx, exposes it on a NodePort, deploys and scales it and puts a LoadBalancer
in front, then each step answers over HTTP from the host (the NodePort on the
master's address too; pods, the master's among them, reach the ClusterIP and
resolve the Service through the cluster DNS); a killed kubelet and apiserver come back under
the cluster's supervisor; and once everything is deleted and the cluster is down, the host is as it was: no bridge, no
namespaces, no routes, no processes. Every wait polls against a generous
deadline (two cores, other test runs beside it). Needs root, containerd, runc
and the CNI plugins.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import yaml

from provision.processes import free_port
from provision.supervisor import read_pids

NAME = "seed-e2e"
SUBNET_PREFIX = "192.168.77"
BRIDGE = "flt77e"
# Workers get 10.244.65.0/24 and 10.244.66.0/24: clear of a default cluster's 10.244.1-2 and of other tests' 200-254.
POD_NETWORK = "10.244.64.0/18"
POD_PREFIX = "10.244.6"
KCTL = str(Path(sys.executable).parent / "kctl")
MASTER = f"{NAME}-master"
MASTER_CNI_BRIDGE = f"flt-{MASTER}"[:15]
T = TypeVar("T")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("containerd") or not Path("/usr/lib/cni/bridge").exists(),
    reason="needs root, containerd and the CNI plugins (the local provider makes network namespaces)")


class Cluster:
    def __init__(self, home: Path) -> None:
        self.home = home
        # A home of its own: `cluster up` merges its context into $KUBECONFIG (here, never the user's ~/.kube).
        self.kubeconfig = home / ".kube" / "config"
        env = {k: v for k, v in os.environ.items() if k != "KCTL_CONFIG"}  # it would win over $KUBECONFIG
        self.env = {**env, "FLOTILLA_HOME": str(home), "HOME": str(home), "KUBECONFIG": str(self.kubeconfig)}

    def kctl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        done = subprocess.run([KCTL, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kctl {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def rows(self, *args: str) -> list[dict[str, str]]:
        """A kctl table as dicts keyed by column header."""
        return table_rows(self.kctl(*args))

    @contextlib.contextmanager
    def up(self, name: str, *, workers: int, subnet_prefix: str, bridge: str, pod_network: str) -> Iterator[Cluster]:
        """An e2e module's own local cluster: its name, subnet, bridge and pod network meet no other module's;
        `cluster down` whatever happens."""
        try:
            self.kctl("cluster", "up", "--name", name, "--workers", str(workers), "--subnet", f"{subnet_prefix}.0/24",
                      "--bridge", bridge, "--pod-network", pod_network, "--api-port", str(free_port()),
                      "--etcd-port", str(free_port()), timeout=400)
            yield self
        finally:
            self.kctl("cluster", "down", "--name", name, check=False, timeout=300)


def table_rows(text: str) -> list[dict[str, str]]:
    """A printed table (kctl's or kubectl's) as dicts keyed by column header; columns are cut where the
    header's names start, as both tools align them."""
    lines = text.splitlines()
    if not lines:
        return []
    columns = [(m.group(), m.start()) for m in re.finditer(r"\S+(?: \S+)*", lines[0])]
    bounds = [(name, start, columns[i + 1][1] if i + 1 < len(columns) else None)
              for i, (name, start) in enumerate(columns)]
    return [{name: line[start:end].strip() for name, start, end in bounds} for line in lines[1:] if line.strip()]


def eventually(check: Callable[[], T | None], what: str, timeout: float = 120.0) -> T:
    """Poll `check` until it returns something truthy; fail with the last error after `timeout`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except (AssertionError, OSError, ValueError, KeyError, subprocess.TimeoutExpired) as err:
            last = err
        time.sleep(1.0)
    raise AssertionError(f"{what}: not after {timeout:.0f}s (last: {last!r})")


def http_get(url: str) -> str:
    # No proxy handler: the request must go straight to the cluster's address, never through an HTTP proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as reply:
        return str(reply.read().decode())


def host_leftovers(home: Path) -> list[str]:
    """What a cluster could leave behind on this host."""
    found = []
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    # The bridge and its veths, and the master's CNI bridge (its kubelet's pods live on the host).
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines()
              if BRIDGE in line or MASTER_CNI_BRIDGE in line]
    found += [f"netns {n}" for n in os.listdir("/run/netns")] if Path("/run/netns").exists() else []
    found = [f for f in found if not f.startswith("netns ") or NAME in f]
    routes = subprocess.run(["ip", "-o", "route", "show"], capture_output=True, text=True).stdout
    found += [f"route {line}" for line in routes.splitlines() if SUBNET_PREFIX in line or POD_PREFIX in line]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    found += [f"nft {line}" for line in tables.splitlines() if NAME in line]
    with open("/proc/self/mountinfo") as mounts:
        found += [f"mount {line.split()[4]}" for line in mounts if str(home) in line]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                status = (proc / "stat").read_text().split()[2]
            except OSError:
                continue
            if str(home).encode() in cmdline and status != "Z":
                words = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"process {proc.name}: {words}")
    return found


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path).up(NAME, workers=2, subnet_prefix=SUBNET_PREFIX, bridge=BRIDGE,
                              pod_network=POD_NETWORK) as c:
        yield c


def test_seed_journey(cluster: Cluster, tmp_path: Path) -> None:
    workers = {f"{NAME}-worker-1": f"{SUBNET_PREFIX}.101", f"{NAME}-worker-2": f"{SUBNET_PREFIX}.102"}
    nodes = {MASTER: f"{SUBNET_PREFIX}.1", **workers}

    # Given three Nodes Ready: the master (the host's bridge address) and two workers, with their addresses.
    def nodes_ready() -> dict[str, str] | None:
        rows = cluster.rows("get", "nodes", "-o", "wide")
        ready = {r["NAME"]: r["INTERNAL-IP"] for r in rows if r["STATUS"] == "Ready"}
        return ready if ready == nodes else None
    eventually(nodes_ready, "master and both workers Ready")
    roles = {r["NAME"]: r["ROLES"] for r in cluster.rows("get", "nodes")}
    assert roles == {MASTER: "control-plane", **{w: "worker" for w in workers}}
    master = json.loads(cluster.kctl("get", "node", MASTER, "-o", "json"))
    assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}.items() \
        <= master["spec"]["taints"][0].items()

    # And the user's kubeconfig has the cluster's context, current, in kubectl's own format: the Kubernetes
    # API's HTTPS address for kubectl, kctl's gRPC ports in the cluster's extension, the admin's certificate.
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    assert config["current-context"] == f"flotilla-{NAME}"
    assert config["clusters"][0]["cluster"]["server"].startswith(f"https://{SUBNET_PREFIX}.1:")
    assert config["clusters"][0]["cluster"]["extensions"][0]["name"] == "flotilla.dev/grpc"
    assert {"client-certificate-data", "client-key-data"} <= set(config["users"][0]["user"])
    assert cluster.kubeconfig.stat().st_mode & 0o077 == 0  # it holds the admin's private key
    assert cluster.kctl("auth", "can-i", "delete", "nodes").strip() == "yes"
    if shutil.which("kubectl"):
        view = subprocess.run(["kubectl", "config", "view", "--minify", "-o", "jsonpath={.contexts[0].name}"],
                              env=cluster.env, capture_output=True, text=True, timeout=30)
        assert (view.returncode, view.stdout) == (0, f"flotilla-{NAME}"), view
        # And real kubectl, on the same context, reaches the Kubernetes API over HTTPS as the admin.
        got = subprocess.run(["kubectl", "get", "nodes", "-o", "name"], env=cluster.env, capture_output=True,
                             text=True, timeout=60)
        assert (got.returncode, sorted(got.stdout.split())) == (0, sorted(f"node/{n}" for n in nodes)), got

    # And a caller with no credentials is refused: on the token port as unauthenticated, on the
    # client-certificate port already at the TLS handshake.
    anonymous = tmp_path / "anonymous.conf"
    token_port = int(config["clusters"][0]["cluster"]["server"].rpartition(":")[2]) + 1
    anonymous.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "anon",
        "clusters": [{"name": "anon", "cluster": {
            **config["clusters"][0]["cluster"],
            "extensions": [{"name": "flotilla.dev/grpc",
                            "extension": {"server": f"{SUBNET_PREFIX}.1:{token_port}"}}]}}],
        "users": [{"name": "anon", "user": {}}],
        "contexts": [{"name": "anon", "context": {"cluster": "anon", "user": "anon"}}]}))
    refused = subprocess.run([KCTL, "--kubeconfig", str(anonymous), "get", "pods"], env=cluster.env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "nauthorized" in refused.stdout + refused.stderr, refused

    # And the workers joined with a bootstrap token: no kubelet credentials were minted for them at `up`;
    # each kubelet asked for its client certificate with a CertificateSigningRequest, approved and signed.
    folder = tmp_path / "clusters" / NAME
    assert not (folder / "config" / "kubeconfigs" / f"kubelet-{NAME}-worker-1.conf").exists()
    csrs = [r for r in cluster.rows("get", "csr") if r["REQUESTOR"].startswith("system:bootstrap:")]
    assert len(csrs) == 2 and all(r["CONDITION"] == "Approved,Issued" for r in csrs), csrs
    # And a worker's own kubeconfig (system:node:<name>, from its CSR) cannot change another Node.
    worker_config = folder / "nodes" / f"{NAME}-worker-1" / "kubelet.conf"
    hijack = subprocess.run([KCTL, "--kubeconfig", str(worker_config), "label", "node", f"{NAME}-worker-2",
                             "hijacked=yes"], env=cluster.env, capture_output=True, text=True, timeout=60)
    assert hijack.returncode != 0 and "may only modify its own Node" in hijack.stdout + hijack.stderr, hijack

    # And a new machine could join: a bootstrap token's join command finds the cluster by its CA pin on the
    # token port and reads kube-public/cluster-info (published at `up`), writing a bootstrap kubeconfig.
    join = cluster.kctl("token", "create", "--print-join-command").split()
    assert join[:3] == ["kctl", "join", f"{SUBNET_PREFIX}.1:{token_port}"] and "--token" in join, join
    cluster.kctl(*join[1:], "--bootstrap-kubeconfig", str(tmp_path / "bootstrap.conf"))
    bootstrap = yaml.safe_load((tmp_path / "bootstrap.conf").read_text())
    assert bootstrap["users"][0]["user"]["token"] == join[join.index("--token") + 1]

    # When I run nginx, it runs with an IP on one of the workers.
    cluster.kctl("run", "nginx", "--image=nginx")

    def nginx_running() -> dict[str, str] | None:
        rows = {r["NAME"]: r for r in cluster.rows("get", "pod", "-o", "wide")}
        pod = rows.get("nginx")
        return pod if pod and pod["STATUS"] == "Running" and pod["IP"] != "<none>" else None
    pod = eventually(nginx_running, "pod nginx Running")
    assert pod["NODE"] in workers
    # Pulled from the cluster registry on the master: nothing is imported into the nodes at `up`.
    status = json.loads(cluster.kctl("get", "pod", "nginx", "-o", "json"))["status"]["containerStatuses"][0]
    assert status["imageID"].startswith(f"{SUBNET_PREFIX}.1:5000/library/nginx@sha256:"), status

    # And expose it on a NodePort, then every node answers on that port from the host: the workers, and the
    # master too (its proxy runs in the host's namespace with node ports on the master's address only).
    cluster.kctl("expose", "pod", "nginx", "--type=NodePort", "--port=80")
    service = {r["NAME"]: r for r in cluster.rows("get", "svc")}["nginx"]
    node_port = service["PORT(S)"].split(":")[1].split("/")[0]
    for address in nodes.values():
        page = eventually(lambda a=address: http_get(f"http://{a}:{node_port}/"), f"NodePort on {address}")  # type: ignore[misc]
        assert "Welcome to nginx!" in page

    # And pods find it by its short name: the kubelet points their resolv.conf at the cluster DNS
    # (kube-dns at 10.96.0.10, served from the master) with the <ns>.svc.cluster.local search path.
    cluster_ip = service["CLUSTER-IP"]
    resolv = cluster.kctl("exec", "nginx", "--", "cat", "/etc/resolv.conf")
    assert "nameserver 10.96.0.10" in resolv and "search default.svc.cluster.local" in resolv
    # busybox's nslookup also tries the other search domains and exits 1 on their NXDOMAIN: read its answer.
    def short_name_answer() -> str:
        answer = cluster.kctl("exec", "nginx", "--", "nslookup", "nginx", check=False)
        assert f"Name:\tnginx.default.svc.cluster.local\nAddress: {cluster_ip}" in answer, answer
        return answer

    eventually(short_name_answer, "DNS answer from a pod")

    # And a pod that tolerates the control-plane taint runs on the master, reaches nginx on a worker by its pod
    # IP and by its ClusterIP (the master's proxy), and resolves the Service through kube-dns's ClusterIP.
    on_master = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "on-master"}, "spec": {
        "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
        "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                         "effect": "NoSchedule"}],
        "containers": [{"name": "sh", "image": "busybox", "command": ["sleep", "3600"]}]}}
    manifest = tmp_path / "on-master.yaml"
    manifest.write_text(yaml.safe_dump(on_master))
    cluster.kctl("apply", "-f", str(manifest))

    def on_master_running() -> dict[str, str] | None:
        row = {r["NAME"]: r for r in cluster.rows("get", "pod", "-o", "wide")}.get("on-master")
        return row if row and row["STATUS"] == "Running" else None
    assert eventually(on_master_running, "a tolerating pod Running")["NODE"] == MASTER
    page = eventually(lambda: cluster.kctl("exec", "on-master", "--", "busybox", "timeout", "3", "wget", "-qO-",
                                           f"http://{pod['IP']}/"), "nginx from the master's pod")
    assert "Welcome to nginx!" in page
    page = eventually(lambda: cluster.kctl("exec", "on-master", "--", "busybox", "timeout", "3", "wget", "-qO-",
                                           f"http://{cluster_ip}/"), "nginx's ClusterIP from the master's pod")
    assert "Welcome to nginx!" in page
    assert "nameserver 10.96.0.10" in cluster.kctl("exec", "on-master", "--", "cat", "/etc/resolv.conf")
    answer = cluster.kctl("exec", "on-master", "--", "nslookup", "nginx.default.svc.cluster.local", check=False)
    assert f"Address: {cluster_ip}" in answer, answer
    cluster.kctl("delete", "pod", "on-master")
    # And the master itself reaches the ClusterIP (the NodePort above proves its proxy holds the Service):
    # its own connections are masqueraded, so the pod answers an address it has a route to.
    assert "Welcome to nginx!" in http_get(f"http://{cluster_ip}/")

    # When I create a Deployment and scale it to 3, then 3 of its pods run, over both workers.
    cluster.kctl("create", "deployment", "deploy-nginx", "--image=nginx")
    cluster.kctl("scale", "deployment", "deploy-nginx", "--replicas=3")

    def three_running() -> list[dict[str, str]] | None:
        pods = [r for r in cluster.rows("get", "pods", "-o", "wide") if r["NAME"].startswith("deploy-nginx-")]
        running = [p for p in pods if p["STATUS"] == "Running"]
        return running if len(running) == 3 else None
    replicas = eventually(three_running, "3 deploy-nginx pods Running")
    assert {p["NODE"] for p in replicas} == set(workers)

    # And put a LoadBalancer in front: its EXTERNAL-IP, from the node subnet's pool, answers.
    cluster.kctl("expose", "deployment", "deploy-nginx", "--type=LoadBalancer", "--port=80")

    def external_ip() -> str | None:
        ip = {r["NAME"]: r for r in cluster.rows("get", "svc")}["deploy-nginx"]["EXTERNAL-IP"]
        return ip if ip.startswith(SUBNET_PREFIX) else None
    lb = eventually(external_ip, "LoadBalancer EXTERNAL-IP")
    assert "Welcome to nginx!" in eventually(lambda: http_get(f"http://{lb}/"), "LoadBalancer answers")

    # When a worker's kubelet and the apiserver are killed, the supervisor starts them again.
    pids = read_pids(tmp_path / "clusters" / NAME)
    for daemon in (f"kubelet/{NAME}-worker-1", "apiserver"):
        os.kill(pids[daemon], signal.SIGKILL)
    eventually(lambda: all(read_pids(tmp_path / "clusters" / NAME).get(d, pids[d]) != pids[d]
                           for d in (f"kubelet/{NAME}-worker-1", "apiserver")), "daemons restarted")
    eventually(nodes_ready, "every Node Ready after the restarts")
    assert "Welcome to nginx!" in eventually(lambda: http_get(f"http://{lb}/"), "LoadBalancer answers again")

    # And the master, tainted, ran none of the user's pods that do not tolerate it.
    assert all(p["NODE"] in workers for p in cluster.rows("get", "pods", "-o", "wide") if p["NAME"] != "on-master")
    # Logs, like exec above, go apiserver -> kubelet over TLS with the apiserver's client certificate.
    cluster.kctl("logs", "nginx")

    # When I delete it all, nothing is left.
    cluster.kctl("delete", "service", "nginx")
    cluster.kctl("delete", "service", "deploy-nginx")
    cluster.kctl("delete", "deployment", "deploy-nginx")
    cluster.kctl("delete", "pod", "nginx")
    eventually(lambda: not cluster.rows("get", "pods") or None, "no pods left")

    # And once the cluster is down, the host is as it was.
    cluster.kctl("cluster", "down", "--name", NAME, timeout=300)
    eventually(lambda: not host_leftovers(tmp_path) or None, "host clean", timeout=60)
    # And the user's kubeconfig no longer names it (the file stays, with whatever else it held).
    left = yaml.safe_load(cluster.kubeconfig.read_text())
    assert not left["contexts"] and not left["clusters"] and not left["users"] and not left["current-context"]
