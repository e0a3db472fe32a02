"""The local provider: a whole Flotilla cluster on this machine, made by `kctl cluster up`.

Layout (defaults; subnet, bridge, ports and pod network are options):

    host = master ── bridge flt0 192.168.56.1/24 ──┬── veth ── netns <cluster>-worker-1  eth0 192.168.56.101
    etcd and apiserver on loopback, DNS on .1:53,  └── veth ── netns <cluster>-worker-2  eth0 192.168.56.102
    scheduler, controller manager, LB controller

The master is the host side of the bridge (.1), not a namespace of its own:
the host must reach every node anyway (pod routes, NodePorts, kctl), and a
node's proxy programs its namespace from the host (`--netns`), so with the
control plane on the host nothing has to cross into a master namespace. The
apiserver stays on loopback (plaintext is loopback-only; each node reaches it
through provision/apiforward.py), DNS listens on the bridge address. There
is no kubelet on the master, hence no master Node (and no control-plane taint
to show).

Each worker is a network namespace with its own containerd (own root, state,
socket, runc root, CNI dirs, cgroup prefix), started inside the namespace with
nsenter; its kubelet runs in the namespace too (the apiserver dials the kubelet
API at the node's InternalIP) and registers the podCIDR 10.244.<i>.0/24; its
proxy runs on the host and programs the namespace's nftables. One
supervisor process per cluster (provision/supervisor.py) starts and restarts
all daemons. Everything lives in `~/.flotilla/clusters/<name>/` (or
$FLOTILLA_HOME/...): state.json, kubeconfig, logs/, nodes/<node>/.

`down` stops the supervisor (which stops the daemons), kills anything left,
tears each node's runtime down (runc state, shims, mounts, cgroups), deletes
namespaces, veths, bridge, host routes and the nft table, and removes the folder.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from nodeagent.containerd import NodeRuntime
from nodeagent.localnode import LocalNode
from provision import netns
from provision.images import import_node_images
from provision.processes import etcd_argv
from provision.supervisor import DaemonSpec, read_pids, write_specs

DEFAULT_ETCD_PORT = 12379  # not 2379: a distribution's own etcd may already hold that
DEFAULT_API_PORT = 6443
DEFAULT_SUBNET = "192.168.56.0/24"
DEFAULT_BRIDGE = "flt0"
DEFAULT_POD_NETWORK = "10.244.0.0/16"
DNS_SERVICE_IP = "10.96.0.10"
FIRST_WORKER_HOST = 101  # workers at .101, .102, ... as in the book's Vagrantfile
LB_POOL_HOSTS = (200, 250)
UP_TIMEOUT = 180.0
SOCKET_ROOT = Path("/run/flotilla")


def home() -> Path:
    return Path(os.environ.get("FLOTILLA_HOME", Path.home() / ".flotilla"))


def cluster_dir(name: str) -> Path:
    return home() / "clusters" / name


@dataclass
class NodeInfo:
    name: str
    address: str
    pod_cidr: str
    host_veth: str


@dataclass
class ClusterState:
    """What `up` made, written to state.json first so `down` can undo even a half-finished `up`."""

    name: str
    api_address: str
    etcd_url: str
    pids: dict[str, int]
    kubeconfig: str
    bridge: str = DEFAULT_BRIDGE
    subnet: str = DEFAULT_SUBNET
    master_address: str = ""
    nodes: list[dict[str, str]] = field(default_factory=list)
    supervisor_pid: int = 0

    def node_infos(self) -> list[NodeInfo]:
        return [NodeInfo(**n) for n in self.nodes]

    def links(self) -> list[netns.NodeLink]:
        return [netns.NodeLink(n.name, n.host_veth, n.address, n.pod_cidr) for n in self.node_infos()]

    @property
    def nft_table(self) -> str:
        return f"flotilla-{self.name}"


class ClusterRuntime(NodeRuntime):
    """A worker's containerd, with docker.io pulls pointed at the node's own loopback.

    Short image names the node does not have would otherwise make containerd
    look up and contact docker.io; here they fail at once and the kubelet falls
    back to the imported `localhost/...` image.
    """

    @property
    def socket(self) -> Path:
        # Unix socket paths are limited to 108 bytes (containerd's ttrpc check: 104); the cluster folder may be deep.
        return SOCKET_ROOT / self.node_name / "containerd.sock"

    def config(self) -> str:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        hosts = self.base / "certs.d" / "docker.io"
        hosts.mkdir(parents=True, exist_ok=True)
        # Without the [host] table containerd 1.6 still falls back to registry-1.docker.io.
        (hosts / "hosts.toml").write_text('server = "http://127.0.0.1:1"\n\n[host."http://127.0.0.1:1"]\n'
                                          '  capabilities = ["pull", "resolve"]\n')
        return super().config() + (f'\n[plugins."io.containerd.grpc.v1.cri".registry]\n'
                                   f'  config_path = "{self.base / "certs.d"}"\n')


def _alive(pid: int) -> bool:
    """Running (a zombie is not; one that is our own child, as the supervisor is in tests, is reaped here)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False
    except PermissionError:
        return True


def load_state(name: str) -> ClusterState | None:
    path = cluster_dir(name) / "state.json"
    if not path.exists():
        return None
    return ClusterState(**json.loads(path.read_text()))


def save_state(state: ClusterState) -> None:
    (cluster_dir(state.name) / "state.json").write_text(json.dumps(asdict(state), indent=2))


def kubeconfig_text(name: str, server: str) -> str:
    """A kubeconfig-shaped file pointing kctl at this cluster (no TLS yet: loopback only)."""
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": f"{name}-admin", "user": {}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin",
                                                "namespace": "default"}}],
    }, sort_keys=False)


def plan(name: str, *, workers: int, subnet: str, bridge: str, pod_network: str) -> list[NodeInfo]:
    net = ipaddress.ip_network(subnet)
    pods = ipaddress.ip_network(pod_network)
    pod_subnets = pods.subnets(new_prefix=24)
    next(pod_subnets)  # .0.0/24 stays unused, so worker i gets 10.244.i.0/24
    nodes = []
    for i in range(1, workers + 1):
        node = f"{name}-worker-{i}"
        nodes.append(NodeInfo(node, str(net[FIRST_WORKER_HOST - 1 + i]), str(next(pod_subnets)),
                              f"{bridge}-w{i}"[:15]))
    return nodes


def _node(state: ClusterState, info: NodeInfo, folder: Path) -> LocalNode:
    node = LocalNode(info.name, folder / "nodes" / info.name, state.api_address, info.address, info.pod_cidr,
                     {"port": 0, "cluster_registry": "localhost", "cluster_dns": [DNS_SERVICE_IP]})
    node.runtime = ClusterRuntime(info.name, node.base / "containerd")
    return node


def _daemon_specs(state: ClusterState, folder: Path, *, etcd_port: int, pod_network: str) -> list[DaemonSpec]:
    logs = folder / "logs"
    py = sys.executable
    kubeconfig = state.kubeconfig
    net = ipaddress.ip_network(state.subnet)
    specs = [
        DaemonSpec("etcd", etcd_argv(folder / "etcd", etcd_port, etcd_port + 1), str(logs / "etcd.log"),
                   f"tcp:127.0.0.1:{etcd_port}"),
        DaemonSpec("apiserver", [py, "-m", "controlplane.apiserver.main", "--etcd-servers", state.etcd_url,
                                 "--listen", state.api_address], str(logs / "apiserver.log"),
                   f"tcp:{state.api_address}"),
        DaemonSpec("scheduler", [py, "-m", "controlplane.scheduler.main", "--server", state.api_address],
                   str(logs / "scheduler.log")),
        DaemonSpec("controller-manager", [py, "-m", "controlplane.controllers.main", "--server", state.api_address,
                                          "--cluster-cidr", pod_network], str(logs / "controller-manager.log")),
        # No --upstream: names outside the cluster get REFUSED rather than leaving this machine.
        DaemonSpec("dns", [py, "-m", "controlplane.dns.main", "--kubeconfig", kubeconfig,
                           "--listen", f"{state.master_address}:53"], str(logs / "dns.log")),
        DaemonSpec("lb-controller", [py, "-m", "controlplane.loadbalancer.main", "--kubeconfig", kubeconfig,
                                     "--lb-pool", f"{net[LB_POOL_HOSTS[0]]}-{net[LB_POOL_HOSTS[1]]}"],
                   str(logs / "lb-controller.log")),
    ]
    api_port = state.api_address.rpartition(":")[2]
    for info in state.node_infos():
        node = _node(state, info, folder)
        rt = node.runtime
        for d in (rt.base, rt.runc_root, rt.cni_conf_dir, rt.cni_data_dir):
            d.mkdir(parents=True, exist_ok=True)
        rt.config_path.write_text(rt.config())
        containerd = shutil.which("containerd") or "/usr/bin/containerd"
        specs += [
            # nsenter, not `ip netns exec`: that remounts /sys and hides the cgroup mounts.
            DaemonSpec(f"containerd/{info.name}", ["nsenter", f"--net=/run/netns/{info.name}", containerd,
                                                   "--config", str(rt.config_path)],
                       str(logs / f"containerd-{info.name}.log"), f"path:{rt.socket}"),
            # The apiserver on the node's loopback (see apiforward.py), so the kubelet can run inside.
            DaemonSpec(f"api-forward/{info.name}", [py, "-m", "provision.apiforward", info.name, api_port,
                                                    str(node.base / "api-forward.ready")],
                       str(logs / f"api-forward-{info.name}.log"), f"path:{node.base / 'api-forward.ready'}"),
            # Inside the node's namespace: the apiserver dials the kubelet API at the node's InternalIP.
            DaemonSpec(f"kubelet/{info.name}", ["nsenter", f"--net=/run/netns/{info.name}", *node.kubelet_argv()],
                       str(logs / f"kubelet-{info.name}.log")),
            DaemonSpec(f"proxy/{info.name}", [py, "-m", "nodeagent.proxy.main", "--kubeconfig", kubeconfig,
                                              "--node-name", info.name, "--node-ip", info.address,
                                              "--netns", info.name], str(logs / f"proxy-{info.name}.log")),
        ]
    return specs


def kctl(state: ClusterState, *args: str, stdin: str | None = None, check: bool = True) -> str:
    """Run a kctl command against this cluster (the same path a user takes)."""
    done = subprocess.run([sys.executable, "-c", "from kctl.main import main; main()", *args], input=stdin,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KCTL_CONFIG": state.kubeconfig})
    if check and done.returncode != 0:
        raise RuntimeError(f"kctl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def dns_manifest(master_address: str) -> str:
    """kube-dns: a Service at 10.96.0.10 whose Endpoints (no selector) name the master's DNS server."""
    ports = [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
    meta = {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}}
    return yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"clusterIP": DNS_SERVICE_IP, "ports": [{**p, "targetPort": 53} for p in ports]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta,
         "subsets": [{"addresses": [{"ip": master_address}], "ports": ports}]},
    ], sort_keys=False)


def ready_nodes(state: ClusterState) -> set[str]:
    out = kctl(state, "get", "nodes", check=False)
    return {line.split()[0] for line in out.splitlines()[1:] if len(line.split()) > 1 and line.split()[1] == "Ready"}


def _wait(check: object, what: str, deadline: float, folder: Path) -> None:
    last = ""
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as err:
            last = f" (last error: {err})"
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready in time{last}; logs in {folder / 'logs'}")


def up(name: str = "flotilla", *, workers: int = 2, subnet: str = DEFAULT_SUBNET, bridge: str = DEFAULT_BRIDGE,
       api_port: int = DEFAULT_API_PORT, etcd_port: int = DEFAULT_ETCD_PORT, pod_network: str = DEFAULT_POD_NETWORK,
       write_default_config: bool = True, timeout: float = UP_TIMEOUT) -> ClusterState:
    """Make the cluster and wait until every worker Node is Ready (a running cluster is left as it is)."""
    state = load_state(name)
    if state and state.supervisor_pid and _alive(state.supervisor_pid):
        return state
    if state or cluster_dir(name).exists():
        down(name)
    if os.geteuid() != 0:
        raise RuntimeError("the local provider makes network namespaces: run as root")
    if netns.link_exists(bridge):
        raise RuntimeError(f"interface {bridge} already exists: pick another --bridge (or cluster down its owner)")
    nodes = plan(name, workers=workers, subnet=subnet, bridge=bridge, pod_network=pod_network)
    taken = [cidr for cidr in (subnet, *(n.pod_cidr for n in nodes)) if netns.routed(cidr)]
    if taken:
        raise RuntimeError(f"this host already routes {', '.join(taken)}: pick another --subnet / --pod-network")
    deadline = time.monotonic() + timeout
    folder = cluster_dir(name)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    net = ipaddress.ip_network(subnet)
    api_address = f"127.0.0.1:{api_port}"
    state = ClusterState(name, api_address, f"http://127.0.0.1:{etcd_port}", {}, str(folder / "kubeconfig"),
                         bridge, subnet, str(net[1]), [asdict(n) for n in nodes])
    save_state(state)  # before anything is made: `down` undoes whatever the steps below got to
    try:
        Path(state.kubeconfig).write_text(kubeconfig_text(name, api_address))
        netns.create_bridge(bridge, state.master_address, net.prefixlen)
        for link in state.links():
            netns.create_node(bridge, link, net.prefixlen)
        netns.add_pod_routes(state.links(), bridge)
        netns.allow_bridge_forwarding(state.nft_table, bridge)
        write_specs(folder, _daemon_specs(state, folder, etcd_port=etcd_port, pod_network=pod_network))
        with open(folder / "logs" / "supervisor.log", "ab") as log:
            supervisor = subprocess.Popen([sys.executable, "-m", "provision.supervisor", str(folder)],
                                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        state.supervisor_pid = supervisor.pid
        save_state(state)
        sockets = [str(_node(state, n, folder).runtime.socket) for n in nodes]
        _wait(lambda: all(Path(s).exists() for s in sockets), "containerd", deadline, folder)
        import_node_images(sockets)
        _wait(lambda: (folder / "supervisor.ready").exists(), "control plane", deadline, folder)
        _wait(lambda: bool(kctl(state, "apply", "-f", "-", stdin=dns_manifest(state.master_address))),
              "kube-dns Service", deadline, folder)
        _wait(lambda: ready_nodes(state) >= {n.name for n in nodes}, "worker Nodes", deadline, folder)
    except BaseException:
        down(name, remove=False)  # keep the logs: they say why (the next up or down removes them)
        (folder / "state.json").unlink(missing_ok=True)  # nothing runs: not a cluster any more
        raise
    state.pids = read_pids(folder)
    save_state(state)
    if write_default_config:
        default = Path(os.environ.get("KCTL_CONFIG", Path.home() / ".kctl" / "config"))
        default.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(state.kubeconfig, default)
    return state


def _stop(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def down(name: str = "flotilla", *, remove: bool = True) -> bool:
    """Remove everything the cluster made. False if there is no such cluster."""
    state = load_state(name)
    folder = cluster_dir(name)
    if state is None and not folder.exists():
        return False
    if state is not None:
        if state.supervisor_pid:
            _stop(state.supervisor_pid, timeout=60)  # it stops the daemons in reverse start order
        # If the supervisor had been killed, its daemons are still here.
        for pid in {*read_pids(folder).values(), *state.pids.values()}:
            if _alive(pid):
                _stop(pid, timeout=10)
        for info in state.node_infos():
            runtime = _node(state, info, folder).runtime
            runtime.cleanup()
            shutil.rmtree(runtime.socket.parent, ignore_errors=True)
        netns.remove_all(state.bridge, state.links(), state.nft_table)
        with contextlib.suppress(OSError):
            SOCKET_ROOT.rmdir()  # only when no other cluster's node still has its socket there
    if remove:
        shutil.rmtree(folder, ignore_errors=True)
    return True


def status(name: str = "flotilla") -> dict[str, bool]:
    """Each supervised daemon (and the supervisor): running or not."""
    state = load_state(name)
    if state is None:
        return {}
    running = read_pids(cluster_dir(name))
    specs = json.loads((cluster_dir(name) / "supervisor.json").read_text()) if (
        cluster_dir(name) / "supervisor.json").exists() else []
    result = {"supervisor": bool(state.supervisor_pid) and _alive(state.supervisor_pid)}
    for spec in specs:
        pid = running.get(spec["name"])
        result[spec["name"]] = pid is not None and _alive(pid)
    return result


def names() -> list[str]:
    root = home() / "clusters"
    return sorted(p.name for p in root.iterdir() if (p / "state.json").exists()) if root.exists() else []
