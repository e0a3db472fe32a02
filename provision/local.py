"""The local provider: a whole Flotilla cluster on this machine, made by `kctl cluster up`.

Layout (defaults; subnet, bridge, ports and pod network are options):

    host = master <name>-master ── bridge flt0 192.168.56.1/24 ──┬── veth ── netns <name>-worker-1  192.168.56.101
    etcd on loopback; apiserver (TLS), DNS on .1;                 └── veth ── netns <name>-worker-2  192.168.56.102
    scheduler, controller manager, LB controller;
    containerd + kubelet: Node <name>-master, pods 10.244.0.0/24, tainted control-plane:NoSchedule

The master is the host side of the bridge (.1), not a namespace of its own:
the host must reach every node anyway (pod routes, NodePorts, kctl), and a
node's proxy programs its namespace from the host (`--netns`), so with the
control plane on the host nothing has to cross into a master namespace. It is
a Node too: its own containerd (own root, socket, cgroup prefix and CNI bridge,
like a worker's) and kubelet register `<name>-master` with the control-plane
role and taint, so only pods that tolerate it run there.

Every component speaks TLS with its own identity (provision/components.py
makes the CA, certificates and kubeconfigs into `<cluster>/config/`): the
apiserver serves client certificates on <master>:<api port> and bearer tokens
on the next port, with RBAC; each kubelet's API serves its node's certificate
and takes only the apiserver's. Nothing uses the plaintext loopback port.

Each worker is a network namespace with its own containerd (own root, state,
socket, runc root, CNI dirs, cgroup prefix), started inside the namespace with
nsenter; its kubelet runs in the namespace too (the apiserver dials the kubelet
API at the node's InternalIP) and registers the podCIDR 10.244.<i>.0/24; its
proxy runs on the host and programs the namespace's nftables. Workers join as
kubeadm's do: `up` creates a bootstrap token (TTL 1 h) through the API, runs
`kctl join`'s discovery for each worker (the CA pinned by its hash) to write
the node's bootstrap kubeconfig, and the worker's kubelet, started once that
file exists, gets its own client certificate by a CertificateSigningRequest
(kept in nodes/<node>/kubelet.conf, which restarts reuse). The master's proxy
runs in the host's namespace with a table of the cluster's own
(`flotilla-proxy-<name>`) and node ports on the master's address only. One
supervisor process per cluster (provision/supervisor.py) starts and restarts
all daemons. Everything lives in `~/.flotilla/clusters/<name>/` (or
$FLOTILLA_HOME/...): state.json, kubeconfig (the admin's), config/ (PKI and
kubeconfigs), logs/, nodes/<node>/.

`down` stops the supervisor (which stops the daemons), kills anything left,
tears each node's runtime down (runc state, shims, mounts, cgroups, the
master's CNI bridge), deletes namespaces, veths, bridge, host routes and the
nft tables (the provisioner's and the master proxy's), and removes the folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from client import bootstrap, certificates
from client import config as clientconfig
from client.discovery import DiscoveryError, join_node
from nodeagent.proxy import nft
from proto import core_pb2, manifest
from proto.errors import AlreadyExists, ApiError
from provision import components, netns
from provision.containerd import NodeRuntime
from provision.images import registry as image_registry
from provision.images.base import push_node_images
from provision.localnode import LocalNode
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
JOIN_TOKEN_TTL = dt.timedelta(hours=1)  # long enough to add a node by hand after `up`, short-lived like kubeadm's
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
    host_veth: str  # "" for the master: it is the host itself, on the bridge
    control_plane: bool = False

    def plan(self) -> components.NodePlan:
        return components.NodePlan(self.name, self.address, self.pod_cidr, self.control_plane)


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
    nodes: list[dict[str, Any]] = field(default_factory=list)
    supervisor_pid: int = 0
    pod_network: str = DEFAULT_POD_NETWORK
    token_address: str = ""

    def node_infos(self) -> list[NodeInfo]:
        return [NodeInfo(**n) for n in self.nodes]

    def links(self) -> list[netns.NodeLink]:
        """The workers' places on the bridge (the master is the host: no namespace, no veth)."""
        return [netns.NodeLink(n.name, n.host_veth, n.address, n.pod_cidr) for n in self.node_infos()
                if not n.control_plane]

    @property
    def config_dir(self) -> Path:
        """The PKI and the components' kubeconfigs (provision/components.py)."""
        return cluster_dir(self.name) / "config"

    def components_plan(self) -> components.ClusterPlan:
        api_port = int(self.api_address.rpartition(":")[2])
        net = ipaddress.ip_network(self.subnet)
        return components.ClusterPlan(
            self.name, self.master_address, tuple(n.plan() for n in self.node_infos()), self.pod_network,
            self.etcd_url, self.config_dir, api_port=api_port,
            token_port=int(self.token_address.rpartition(":")[2] or api_port + 1), dns_ip=DNS_SERVICE_IP,
            lb_pool=f"{net[LB_POOL_HOSTS[0]]}-{net[LB_POOL_HOSTS[1]]}", registry=self.registry)

    @property
    def registry(self) -> str:
        """host:port of the cluster's image registry, on the master (provision/images/registry.py)."""
        return image_registry.registry_address(self.master_address)

    @property
    def nft_table(self) -> str:
        return f"flotilla-{self.name}"

    @property
    def proxy_table(self) -> str:
        """The master proxy's table (family ip): the host's namespace may hold other clusters' masters."""
        return f"flotilla-proxy-{self.name}"

    def worker_names(self) -> list[str]:
        return [n.name for n in self.node_infos() if not n.control_plane]


class ClusterRuntime(NodeRuntime):
    """A node's containerd, pulling over plain HTTP from the cluster registry (docker.io names included)."""

    @property
    def socket(self) -> Path:
        # Unix socket paths are limited to 108 bytes (containerd's ttrpc check: 104); the cluster folder may be deep.
        return SOCKET_ROOT / self.node_name / "containerd.sock"

    def config(self) -> str:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        return super().config()


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


def plan(name: str, *, workers: int, subnet: str, bridge: str, pod_network: str) -> list[NodeInfo]:
    """The master (the host's bridge address .1, pods 10.244.0.0/24) and the workers (.10i, 10.244.i.0/24)."""
    net = ipaddress.ip_network(subnet)
    pods = ipaddress.ip_network(pod_network)
    pod_subnets = pods.subnets(new_prefix=24)
    nodes = [NodeInfo(f"{name}-master", str(net[1]), str(next(pod_subnets)), "", control_plane=True)]
    for i in range(1, workers + 1):
        node = f"{name}-worker-{i}"
        nodes.append(NodeInfo(node, str(net[FIRST_WORKER_HOST - 1 + i]), str(next(pod_subnets)),
                              f"{bridge}-w{i}"[:15]))
    return nodes


def bootstrap_kubeconfig_path(folder: Path, node: str) -> Path:
    """Where `up` joins a worker: its bootstrap kubeconfig (the token), which its kubelet waits for."""
    return folder / "nodes" / node / "bootstrap-kubeconfig"


def kubelet_kubeconfig_path(folder: Path, node: str) -> Path:
    """A worker kubelet's own credentials, written by its TLS bootstrap (and reused when it restarts)."""
    return folder / "nodes" / node / "kubelet.conf"


def _node(state: ClusterState, info: NodeInfo, folder: Path) -> LocalNode:
    settings = components.kubelet_settings(state.components_plan(), info.plan())
    # Any free port for the kubelet API: the master's kubelet shares the host with whatever else runs here.
    settings["port"] = 0
    if info.control_plane:
        # The master's kubelet runs in the host's namespace, whose routes to the pods the provisioner owns
        # (netns.add_host_pod_routes): another cluster's master on this host must not sweep them either.
        settings["node_routes"] = False
    else:
        settings["bootstrap_kubeconfig"] = str(bootstrap_kubeconfig_path(folder, info.name))
        settings["kubeconfig"] = str(kubelet_kubeconfig_path(folder, info.name))
    node = LocalNode(info.name, folder / "nodes" / info.name, state.api_address, info.address, info.pod_cidr,
                     settings)
    node.runtime = ClusterRuntime(info.name, node.base / "containerd", registry=state.registry)
    return node


def _daemon_specs(state: ClusterState, folder: Path, *, etcd_port: int) -> list[DaemonSpec]:
    logs = folder / "logs"
    cluster = state.components_plan()
    master_api = f"tcp:{state.api_address}"
    # The registry first: `up` pushes the base images to it while the rest starts.
    specs = [DaemonSpec("registry", image_registry.argv(image_registry.write_config(folder / "registry",
                                                                                     state.registry)),
                        str(logs / "registry.log"), f"tcp:{state.registry}"),
             DaemonSpec("etcd", etcd_argv(folder / "etcd", etcd_port, etcd_port + 1), str(logs / "etcd.log"),
                        f"tcp:127.0.0.1:{etcd_port}")]
    for daemon, argv in components.control_plane_argvs(cluster).items():
        specs.append(DaemonSpec(daemon, argv, str(logs / f"{daemon}.log"), master_api if daemon == "apiserver" else ""))
    containerd = shutil.which("containerd") or "/usr/bin/containerd"
    for info in state.node_infos():
        node = _node(state, info, folder)
        rt = node.runtime
        for d in (rt.base, rt.runc_root, rt.cni_conf_dir, rt.cni_data_dir):
            d.mkdir(parents=True, exist_ok=True)
        rt.config_path.write_text(rt.config())
        # A worker's daemons run inside its namespace (the apiserver dials its kubelet at the node's InternalIP);
        # nsenter, not `ip netns exec`, which remounts /sys and hides the cgroup mounts. The master is the host.
        enter = [] if info.control_plane else ["nsenter", f"--net=/run/netns/{info.name}"]
        kubelet = node.kubelet_argv()
        if not info.control_plane:
            # Started once `up` has joined the node (written its bootstrap kubeconfig), as kubeadm's kubelet
            # waits for `kubeadm join`; exiting instead would cost the supervisor's restart back-off.
            kubelet = ["sh", "-c", 'until [ -e "$0" ]; do sleep 0.1; done; exec "$@"',
                       str(bootstrap_kubeconfig_path(folder, info.name)), *kubelet]
        specs += [
            DaemonSpec(f"containerd/{info.name}", [*enter, containerd, "--config", str(rt.config_path)],
                       str(logs / f"containerd-{info.name}.log"), f"path:{rt.socket}"),
            DaemonSpec(f"kubelet/{info.name}", [*enter, *kubelet], str(logs / f"kubelet-{info.name}.log")),
        ]
        if info.control_plane:
            # In the host's namespace: a table of this cluster's own, node ports on the master's address only
            # (not on the machine's other interfaces), and no LoadBalancer announcing -- the master is the
            # host, and an announced /32 would land on the host's bridge; like kubeadm's control-plane nodes
            # (node.kubernetes.io/exclude-from-external-load-balancers) it stays out of the LB pool.
            argv = components.proxy_argv(cluster, info.plan(), table=state.proxy_table,
                                         nodeport_addresses=[f"{info.address}/32"], announce=False)
        else:
            # The proxy programs the node's namespace from the host.
            argv = components.proxy_argv(cluster, info.plan(), netns=info.name)
        specs.append(DaemonSpec(f"proxy/{info.name}", argv, str(logs / f"proxy-{info.name}.log")))
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


def node_statuses(state: ClusterState) -> dict[str, str]:
    """Each registered Node: Ready or NotReady, by its Ready condition (read as the admin, over TLS).

    In-process rather than through `kctl get nodes`: `up` polls this several times a second while the
    daemons start, and a kctl process per poll would take the CPU they need.
    """
    async def read() -> list[core_pb2.Node]:
        async with clientconfig.load(kubeconfig=state.kubeconfig).client(timeout=5) as client:
            return (await client.list(core_pb2.Node)).items

    try:
        nodes = asyncio.run(read())
    except (ApiError, clientconfig.ConfigError) as err:
        raise RuntimeError(f"cannot list Nodes: {err}") from None
    return {node.metadata.name: "Ready" if any(c.type == "Ready" and c.status == "True"
                                               for c in node.status.conditions) else "NotReady"
            for node in nodes}


def publish(state: ClusterState, token: bootstrap.Token, ca_pem: bytes, ttl: dt.timedelta = JOIN_TOKEN_TTL) -> bool:
    """What a new cluster serves: kube-public/cluster-info, a bootstrap token (what `kctl token create`
    makes) and kube-dns, created in-process as the admin.

    In-process rather than through `kctl apply`: a kctl process costs ~1 s of CPU on a busy machine, and the
    workers' kubelets wait for their join, which needs these. Idempotent, so `up` may retry it while the
    apiserver warms up.
    """
    cluster = state.components_plan()
    info = bootstrap.cluster_info(f"https://{cluster.api_server}", ca_pem,
                                  f"{cluster.master_address}:{cluster.token_port}")
    secret = bootstrap.token_secret(token, ttl=ttl, description=f"kctl cluster up: joins the nodes of {state.name}")

    async def create() -> None:
        async with clientconfig.load(kubeconfig=state.kubeconfig).client(timeout=10) as client:
            for namespace in (bootstrap.CLUSTER_INFO_NAMESPACE, bootstrap.TOKEN_NAMESPACE):
                ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
                ns.metadata.name = namespace
                with contextlib.suppress(AlreadyExists):
                    await client.create(ns)
            dns = [manifest.from_dict(doc) for doc in yaml.safe_load_all(dns_manifest(state.master_address))]
            for obj in (info, secret, *dns):
                with contextlib.suppress(AlreadyExists):
                    await client.create(obj)

    try:
        asyncio.run(create())
    except (ApiError, clientconfig.ConfigError) as err:
        raise RuntimeError(f"cannot publish cluster-info, a bootstrap token and kube-dns: {err}") from None
    return True


def join_command(state: ClusterState, token: bootstrap.Token, ca_pem: bytes) -> str:
    pin = certificates.ca_cert_hash(ca_pem)
    return f"kctl join {state.token_address} --token {token} --discovery-token-ca-cert-hash {pin}"


def join_workers(state: ClusterState, token: bootstrap.Token, ca_pem: bytes, deadline: float, folder: Path) -> None:
    """`kctl join` for each worker: discover the cluster, pin its CA, write the node's bootstrap kubeconfig."""
    pins = (certificates.ca_cert_hash(ca_pem),)

    def join(node: str) -> bool:
        try:
            join_node(state.token_address, str(token), pins, bootstrap_kubeconfig_path(folder, node))
        except DiscoveryError as err:
            # Right after its Secret is created the apiserver may not know the token yet (its authenticator
            # learns tokens from a watch): Unauthorized until then, so try again until the deadline.
            raise RuntimeError(str(err)) from None
        return True

    for node in state.worker_names():
        _wait(lambda node=node: join(node), f"{node} joining with a bootstrap token", deadline, folder)


def ready_nodes(state: ClusterState) -> set[str]:
    return {node for node, status in node_statuses(state).items() if status == "Ready"}


class Progress(Protocol):
    """Told as `up` goes: each phase's start, and what it made when it is done (kctl renders it)."""

    def phase(self, name: str) -> None: ...

    def done(self, detail: str) -> None: ...


class Quiet:
    def phase(self, name: str) -> None:
        pass

    def done(self, detail: str) -> None:
        pass


def _copy_private(source: Path, target: Path) -> None:
    """Copy a kubeconfig (it holds a private key) readable by its owner only."""
    target.touch(mode=0o600)
    target.chmod(0o600)
    target.write_bytes(source.read_bytes())


def _answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=0.5):
        return True


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
       write_default_config: bool = True, timeout: float = UP_TIMEOUT, progress: Progress | None = None
       ) -> ClusterState:
    """Make the cluster and wait until every Node (master and workers) is Ready (a running cluster is left as it is)."""
    progress = progress or Quiet()
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
    master = str(net[1])
    state = ClusterState(name, f"{master}:{api_port}", f"http://127.0.0.1:{etcd_port}", {},
                         str(folder / "kubeconfig"), bridge, subnet, master, [asdict(n) for n in nodes],
                         pod_network=pod_network, token_address=f"{master}:{api_port + 1}")
    save_state(state)  # before anything is made: `down` undoes whatever the steps below got to
    try:
        progress.phase("addresses")
        netns.create_bridge(bridge, state.master_address, net.prefixlen)
        for link in state.links():
            netns.create_node(bridge, link, net.prefixlen)
        # The host's routes to the pods; each node's kubelet keeps its own to the other nodes' pods.
        netns.add_host_pod_routes(state.links(), bridge)
        netns.allow_bridge_forwarding(state.nft_table, bridge)
        master_node = _node(state, nodes[0], folder)
        netns.confine_host_pods(state.nft_table, master_node.runtime.bridge, [subnet, pod_network])
        progress.done(f"master {master} on {bridge}, workers "
                      + ", ".join(n.address for n in nodes if not n.control_plane) + f", pods {pod_network}")

        progress.phase("certificates")
        cluster = state.components_plan()
        files = components.bundle(cluster, token_joined=state.worker_names())
        files.write(state.config_dir)
        _copy_private(Path(cluster.kubeconfig_path(components.ADMIN)), Path(state.kubeconfig))
        progress.done(f"CA, {sum(f.endswith('.crt') for f in files.files) - 1} serving/client certificates, "
                      f"{sum(f.endswith('.conf') for f in files.files)} kubeconfigs in {state.config_dir}")

        progress.phase("images")
        write_specs(folder, _daemon_specs(state, folder, etcd_port=etcd_port))
        with open(folder / "logs" / "supervisor.log", "ab") as log:
            supervisor = subprocess.Popen([sys.executable, "-m", "provision.supervisor", str(folder)],
                                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        state.supervisor_pid = supervisor.pid
        save_state(state)
        _wait(lambda: image_registry.ready(state.registry), "image registry", deadline, folder)
        pushed = push_node_images(state.registry)
        progress.done(", ".join(p.reference.partition("/")[2] for p in pushed) + f" pushed to {state.registry}")

        progress.phase("control plane")
        # The port first (cheap to poll; the apiserver opens it once RBAC is loaded), then one kctl.
        _wait(lambda: _answers(state.api_address), "apiserver", deadline, folder)
        # kube-public/cluster-info (so that `kctl join` and `kctl token create --print-join-command` work), a
        # bootstrap token for the workers, and kube-dns.
        token = bootstrap.generate_token()
        _wait(lambda: publish(state, token, files.ca().cert_pem), "cluster-info, a bootstrap token and kube-dns",
              deadline, folder)
        progress.done(f"apiserver https://{state.api_address} (tokens :{cluster.token_port}), etcd, scheduler, "
                      f"controller manager, DNS {master}:53 (kube-dns {DNS_SERVICE_IP})")

        progress.phase("join")
        join_workers(state, token, files.ca().cert_pem, deadline, folder)
        ttl_hours = JOIN_TOKEN_TTL.total_seconds() / 3600
        progress.done(f"{len(nodes) - 1} workers joined with a bootstrap token (TTL {ttl_hours:g} h); "
                      f"to add a node: {join_command(state, token, files.ca().cert_pem)}")

        progress.phase("nodes")
        _wait(lambda: (folder / "supervisor.ready").exists(), "every daemon started", deadline, folder)
        progress.done(f"containerd, kubelet and proxy on {len(nodes)} nodes")

        progress.phase("node readiness")
        _wait(lambda: ready_nodes(state) >= {n.name for n in nodes}, "Nodes Ready", deadline, folder)
        progress.done(f"{len(nodes)} Nodes Ready")
    except BaseException:
        down(name, remove=False)  # keep the logs: they say why (the next up or down removes them)
        (folder / "state.json").unlink(missing_ok=True)  # nothing runs: not a cluster any more
        raise
    state.pids = read_pids(folder)
    save_state(state)
    if write_default_config:
        default = default_kctl_config()
        default.parent.mkdir(parents=True, exist_ok=True)
        _copy_private(Path(state.kubeconfig), default)
    return state


def default_kctl_config() -> Path:
    """Where kctl looks when no --kubeconfig is given ($KCTL_CONFIG, else ~/.kctl/config)."""
    return Path(os.environ.get("KCTL_CONFIG", Path.home() / ".kctl" / "config"))


def _forget_default_config(state: ClusterState) -> None:
    """Remove kctl's default config if it is still this cluster's copy (as `kind delete` drops its context):
    left behind, every later kctl call would dial a cluster that is gone."""
    default = default_kctl_config()
    with contextlib.suppress(OSError):
        if default.read_bytes() == Path(state.kubeconfig).read_bytes():
            default.unlink()


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
        _forget_default_config(state)
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
        with contextlib.suppress(nft.NftError):  # the master proxy's rules stay when it stops, on purpose
            nft.apply_sync(nft.cleanup_transaction(state.proxy_table))
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
