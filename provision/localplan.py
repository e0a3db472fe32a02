"""The local provider's plan and state: what a cluster on this machine is, and what `up` made of it.

`plan` places the nodes (the master at the bridge's .1 with the pod network's
first /24, worker i at .10i with the i-th /24 after it, as in the book's
Vagrantfile); `next_workers` places the ones `kctl cluster add-worker` adds to a
running cluster the same way: the lowest free worker number (its name, address
and veth follow from it) and the lowest free /24 of the pod network, the rule
the controller manager's node IPAM follows for nodes that register without a
podCIDR, so a node joined by hand and one added here never meet.
`ClusterState` is written to `<cluster>/state.json` before anything is made,
so `down` can undo even a half-finished `up`, and it derives
the components' plan (provision/components.py) that every daemon's files and
flags come from. Nothing here touches the host.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from provision import components, netns
from provision.images import registry as image_registry
from provision.provider import Options, ProvisionError, cluster_dir, home

DEFAULTS = Options()
DNS_SERVICE_IP = components.DEFAULT_DNS_IP
FIRST_WORKER_HOST = 101  # workers at .101, .102, ... as in the book's Vagrantfile
FIRST_MASTER_HOST = 11  # with several masters: .11, .12, ... (the host keeps .1: registry, kctl's side)
MAX_MASTERS = 7  # etcd's advice: more members only slow every write down
LB_POOL_HOSTS = (200, 250)
NODE_CIDR_MASK = 24  # the controller manager's --node-cidr-mask-size (its default): each node's podCIDR


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
    bridge: str = DEFAULTS.bridge
    subnet: str = DEFAULTS.subnet
    master_address: str = ""
    nodes: list[dict[str, Any]] = field(default_factory=list)
    supervisor_pid: int = 0
    pod_network: str = DEFAULTS.pod_network
    token_address: str = ""
    # gRPC with client certificates ("" in a state.json from before: the port after the token port).
    grpc_address: str = ""
    # Air-gapped: nodes pull docker.io names only from the cluster registry (provision/containerd.py).
    offline: bool = False
    # Several masters (provision/localha.py): the API's virtual IP, announced by one master at a time; "" for
    # one master, which is the host itself.
    api_vip: str = ""

    def node_infos(self) -> list[NodeInfo]:
        return [NodeInfo(**n) for n in self.nodes]

    def links(self) -> list[netns.NodeLink]:
        """The namespace nodes' places on the bridge (a single master is the host: no namespace, no veth)."""
        return [netns.NodeLink(n.name, n.host_veth, n.address, n.pod_cidr) for n in self.node_infos()
                if n.host_veth]

    @property
    def folder(self) -> Path:
        return cluster_dir(self.name)

    @property
    def config_dir(self) -> Path:
        """The PKI and the components' kubeconfigs (provision/components.py)."""
        return self.folder / "config"

    @property
    def grpc_server(self) -> str:
        """HOST:PORT of the apiserver's gRPC with client certificates (the daemons' and kctl's)."""
        return self.components_plan().grpc_server

    def components_plan(self) -> components.ClusterPlan:
        api_port = int(self.api_address.rpartition(":")[2])
        net = ipaddress.ip_network(self.subnet)
        # With several masters every client dials the virtual IP: kubeconfigs, certificates and flags name it.
        return components.ClusterPlan(
            self.name, self.api_vip or self.master_address, tuple(n.plan() for n in self.node_infos()),
            self.pod_network, self.etcd_url, self.config_dir, api_port=api_port,
            token_port=int(self.token_address.rpartition(":")[2] or api_port + 1),
            grpc_port=int(self.grpc_address.rpartition(":")[2] or api_port + 2), dns_ip=DNS_SERVICE_IP,
            lb_pool=f"{net[LB_POOL_HOSTS[0]]}-{net[LB_POOL_HOSTS[1]]}", registry=self.registry,
            offline=self.offline, ha=bool(self.api_vip))

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

    @property
    def ha(self) -> bool:
        """Several masters, each a namespace node behind the API's virtual IP (provision/localha.py)."""
        return bool(self.api_vip)

    def etcd_endpoints(self) -> list[str]:
        """Every etcd member's client URL (one master: the loopback one)."""
        if not self.ha:
            return [self.etcd_url]
        url = urlsplit(self.etcd_url)
        return [f"{url.scheme}://{n.address}:{url.port}" for n in self.master_infos()]

    def master_infos(self) -> list[NodeInfo]:
        return [n for n in self.node_infos() if n.control_plane]

    def worker_names(self) -> list[str]:
        return [n.name for n in self.node_infos() if not n.control_plane]

    def add_nodes(self, infos: Collection[NodeInfo]) -> None:
        """Workers added to a running cluster, kept in address order (the master first) as `up` lists them."""
        self.nodes += [asdict(n) for n in infos]
        self.nodes.sort(key=lambda n: ipaddress.ip_address(n["address"]))

    def remove_nodes(self, names: Collection[str]) -> None:
        self.nodes = [n for n in self.nodes if n["name"] not in names]


def worker(cluster: str, bridge: str, subnet: str, number: int, pod_cidr: str) -> NodeInfo:
    """Worker `number`: `<cluster>-worker-<number>` at .(100 + number), its veth `<bridge>-w<number>`."""
    net = ipaddress.ip_network(subnet)
    return NodeInfo(f"{cluster}-worker-{number}", str(net[FIRST_WORKER_HOST - 1 + number]), pod_cidr,
                    f"{bridge}-w{number}"[:15])


def master(cluster: str, bridge: str, subnet: str, number: int, pod_cidr: str) -> NodeInfo:
    """Master `number` of a cluster with several: `<cluster>-master-<number>` at .(10 + number), a namespace
    like a worker's with its veth `<bridge>-m<number>`."""
    net = ipaddress.ip_network(subnet)
    return NodeInfo(f"{cluster}-master-{number}", str(net[FIRST_MASTER_HOST - 1 + number]), pod_cidr,
                    f"{bridge}-m{number}"[:15], control_plane=True)


def plan(name: str, *, workers: int, subnet: str, bridge: str, pod_network: str, masters: int = 1) -> list[NodeInfo]:
    """The master (the host's bridge address .1, pods 10.244.0.0/24) and the workers (.10i, 10.244.i.0/24);
    with several masters, master i at .1i in a namespace of its own, the first /24s theirs."""
    net = ipaddress.ip_network(subnet)
    pods = ipaddress.ip_network(pod_network)
    pod_subnets = pods.subnets(new_prefix=NODE_CIDR_MASK)
    if masters > 1:
        nodes = [master(name, bridge, subnet, i, str(next(pod_subnets))) for i in range(1, masters + 1)]
    else:
        nodes = [NodeInfo(f"{name}-master", str(net[1]), str(next(pod_subnets)), "", control_plane=True)]
    nodes += [worker(name, bridge, subnet, i, str(next(pod_subnets))) for i in range(1, workers + 1)]
    return nodes


def max_worker_number(subnet: str) -> int:
    """The highest worker number with an address: workers stop below the LoadBalancer pool (and the
    subnet's broadcast address)."""
    net = ipaddress.ip_network(subnet)
    return min(LB_POOL_HOSTS[0], net.num_addresses - 1) - FIRST_WORKER_HOST


def worker_addresses(subnet: str) -> str:
    """Where workers go in `subnet`, for messages."""
    net, last = ipaddress.ip_network(subnet), max_worker_number(subnet)
    if last < 1:
        return f"workers start at host .{FIRST_WORKER_HOST}, outside it"
    return (f"workers take {net[FIRST_WORKER_HOST]}-{net[FIRST_WORKER_HOST - 1 + last]}"
            + (f" (the LoadBalancer pool starts at {net[LB_POOL_HOSTS[0]]})" if net.num_addresses > LB_POOL_HOSTS[0]
               else "") + ", and every one is in use")


def next_workers(state: ClusterState, count: int, *, taken_names: Collection[str] = (),
                 taken_addresses: Collection[str] = (), taken_pod_cidrs: Collection[str] = ()) -> list[NodeInfo]:
    """`count` more workers for a running cluster, as `up` would have placed them.

    Each gets the lowest worker number whose name, address and veth no node uses (the state's, and the
    `taken_*` ones: Nodes the API knows that the state does not, joined by hand), and the lowest /24 of the
    pod network no node holds -- node IPAM's rule, so the podCIDR its kubelet registers with is the one IPAM
    would have handed out. ProvisionError when the subnet or the pod network has no room left.
    """
    if count < 1:
        raise ProvisionError(f"cannot add {count} workers: give --count 1 or more")
    infos = state.node_infos()
    names = {n.name for n in infos} | set(taken_names)
    addresses = {n.address for n in infos} | set(taken_addresses)
    veths = {n.host_veth for n in infos if n.host_veth}
    cidrs = {n.pod_cidr for n in infos} | set(taken_pod_cidrs)
    free_cidrs = (str(c) for c in ipaddress.ip_network(state.pod_network).subnets(new_prefix=NODE_CIDR_MASK)
                  if str(c) not in cidrs)
    last = max_worker_number(state.subnet)
    made: list[NodeInfo] = []
    number = 0
    while len(made) < count:
        number += 1
        if number > last:
            raise ProvisionError(f"subnet {state.subnet} has no free worker address for "
                                 f"{count - len(made)} more worker(s): {worker_addresses(state.subnet)}")
        candidate = worker(state.name, state.bridge, state.subnet, number, "")
        if candidate.name in names or candidate.address in addresses or candidate.host_veth in veths:
            continue
        candidate.pod_cidr = next(free_cidrs, "")
        if not candidate.pod_cidr:
            raise ProvisionError(f"the pod network {state.pod_network} has no free /{NODE_CIDR_MASK} left for "
                                 f"{candidate.name}: every one is some node's podCIDR")
        made.append(candidate)
    return made


def new_state(options: Options) -> ClusterState:
    """The state of a cluster `options` describe, before anything is made (what `up` saves first)."""
    folder = cluster_dir(options.name)
    master = str(ipaddress.ip_network(options.subnet)[1])
    if not 1 <= options.masters <= MAX_MASTERS:
        raise ProvisionError(f"cannot make {options.masters} masters: give --masters 1 to {MAX_MASTERS} (an odd "
                             "number: etcd's quorum is a majority)")
    nodes = plan(options.name, workers=options.workers, subnet=options.subnet, bridge=options.bridge,
                 pod_network=options.pod_network, masters=options.masters)
    if options.masters > 1:
        return _ha_state(options, folder, master, nodes)
    # etcd speaks only TLS, with client certificates (provision/components.py makes its PKI).
    return ClusterState(options.name, f"{master}:{options.api_port}", f"https://127.0.0.1:{options.etcd_port}", {},
                        str(folder / "kubeconfig"), options.bridge, options.subnet, master,
                        [asdict(n) for n in nodes], pod_network=options.pod_network,
                        token_address=f"{master}:{options.api_port + 1}",
                        grpc_address=f"{master}:{options.api_port + 2}", offline=options.offline)


def api_vip(options: Options) -> str:
    """The API's virtual IP: --api-vip, else the subnet's last usable address (past the LoadBalancer pool)."""
    net = ipaddress.ip_network(options.subnet)
    vip = options.api_vip or str(net[-2])
    try:
        address = ipaddress.ip_address(vip)
    except ValueError:
        raise ProvisionError(f"--api-vip {vip} is not an IP address") from None
    if address not in net or address in (net.network_address, net.broadcast_address, net[1]):
        raise ProvisionError(f"--api-vip {vip} must be a free host address of the subnet {net} (not .1, the host's)")
    return vip


def _ha_state(options: Options, folder: Path, host: str, nodes: list[NodeInfo]) -> ClusterState:
    """Several masters: the API at the virtual IP, etcd's first member as the operator's endpoint."""
    vip = api_vip(options)
    if any(n.address == vip for n in nodes):
        raise ProvisionError(f"--api-vip {vip} is a node's address: pick another")
    first = next(n for n in nodes if n.control_plane)
    return ClusterState(options.name, f"{vip}:{options.api_port}", f"https://{first.address}:{options.etcd_port}",
                        {}, str(folder / "kubeconfig"), options.bridge, options.subnet, host,
                        [asdict(n) for n in nodes], pod_network=options.pod_network,
                        token_address=f"{vip}:{options.api_port + 1}", grpc_address=f"{vip}:{options.api_port + 2}",
                        offline=options.offline, api_vip=vip)


def load_state(name: str) -> ClusterState | None:
    path = cluster_dir(name) / "state.json"
    if not path.exists():
        return None
    return ClusterState(**json.loads(path.read_text()))


def save_state(state: ClusterState) -> None:
    (state.folder / "state.json").write_text(json.dumps(asdict(state), indent=2))


def names() -> list[str]:
    """The local clusters on this machine: every cluster folder with a state.json."""
    root = home() / "clusters"
    return sorted(p.name for p in root.iterdir() if (p / "state.json").exists()) if root.exists() else []


def bootstrap_kubeconfig_path(folder: Path, node: str) -> Path:
    """Where `up` joins a worker: its bootstrap kubeconfig (the token), which its kubelet waits for."""
    return folder / "nodes" / node / "bootstrap-kubeconfig"


def kubelet_kubeconfig_path(folder: Path, node: str) -> Path:
    """A worker kubelet's own credentials, written by its TLS bootstrap (and reused when it restarts)."""
    return folder / "nodes" / node / "kubelet.conf"
