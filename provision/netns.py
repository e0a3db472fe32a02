"""The local cluster's network: a host bridge, one network namespace per node, and routes.

What docs/local-network.md describes, as code. The host gets a bridge
(`flt0`, the first address of the cluster subnet); each node is a network
namespace whose `eth0` is one end of a veth pair, the other end enslaved to the
bridge. Pod networks are routed "host-gw" style: every node and the host have a
route to each node's podCIDR via that node's address, so pods talk across nodes
with their own source addresses, and the host reaches pods and NodePorts. The
host's routes are made here; the nodes' own are kept by their kubelets.

Nodes get no default route: nothing in a node can reach beyond the cluster
subnet, which keeps the cluster off every other network.

Every function here is idempotent in the direction it goes (adding what exists,
deleting what is gone, are both fine), so a `down` after a half-finished `up`
cleans up whatever was made.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _ip(*args: str, netns: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done


@dataclass(frozen=True)
class NodeLink:
    """One node's place on the cluster network."""

    netns: str
    host_veth: str
    address: str
    pod_cidr: str


def link_exists(name: str) -> bool:
    return _ip("link", "show", name, check=False).returncode == 0


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def routed(cidr: str) -> bool:
    """Whether the host already routes exactly this network (another cluster's pods, say)."""
    return bool(_ip("route", "show", "exact", cidr, check=False).stdout.strip())


def create_bridge(bridge: str, address: str, prefix: int) -> None:
    if not link_exists(bridge):
        _ip("link", "add", bridge, "type", "bridge")
    _ip("addr", "replace", f"{address}/{prefix}", "dev", bridge)
    _ip("link", "set", bridge, "up")


def create_node(bridge: str, node: NodeLink, prefix: int) -> None:
    """The namespace, its eth0 on the bridge with the node's address, and loopback up."""
    if not netns_exists(node.netns):
        _ip("netns", "add", node.netns)
    if not link_exists(node.host_veth):
        _ip("link", "add", node.host_veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
    _ip("link", "set", node.host_veth, "master", bridge, "up")
    _ip("addr", "replace", f"{node.address}/{prefix}", "dev", "eth0", netns=node.netns)
    _ip("link", "set", "eth0", "up", netns=node.netns)
    _ip("link", "set", "lo", "up", netns=node.netns)
    # Nodes route pod traffic for each other and for the host (new namespaces start with 0).
    subprocess.run(["nsenter", f"--net=/run/netns/{node.netns}", "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                   capture_output=True, check=True)


def add_host_pod_routes(nodes: list[NodeLink], bridge: str) -> None:
    """host-gw on the host: a route to each node's podCIDR via that node.

    Only the host's: inside the nodes, each kubelet keeps its routes to the other
    nodes' pods itself (nodeagent/kubelet/routes.py), as nodes come and go. The
    host is no node, so the provisioner owns its routes.
    """
    for node in nodes:
        _ip("route", "replace", node.pod_cidr, "via", node.address, "dev", bridge)


def allow_bridge_forwarding(table: str, bridge: str) -> None:
    """Accept node-to-node traffic that crosses the host's FORWARD hook (br_netfilter) even under a drop policy."""
    rules = (f"table inet {table} {{\n  chain forward {{\n    type filter hook forward priority -5; policy accept;\n"
             f'    iifname "{bridge}" oifname "{bridge}" accept\n  }}\n}}\n')
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, capture_output=True, check=True)


def confine_host_pods(table: str, pod_bridge: str, cluster_cidrs: list[str]) -> None:
    """Pods on the host's own CNI bridge (the master Node's) may reach the cluster's networks only.

    Nodes have no default route, the host does: without this, a master pod's packet for anything
    else (a ClusterIP, as the master runs no proxy, or an outside address) would leave the machine.
    """
    rules = (f"table inet {table} {{\n  chain confine-host-pods {{\n"
             f"    type filter hook forward priority -4; policy accept;\n"
             f'    iifname "{pod_bridge}" ip daddr != {{ {", ".join(cluster_cidrs)} }} drop\n'
             f'    iifname "{pod_bridge}" meta nfproto ipv6 drop\n  }}\n}}\n')
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, capture_output=True, check=True)


def remove_all(bridge: str, nodes: list[NodeLink], table: str) -> None:
    """Undo everything above; each step tolerates what is already gone."""
    subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
    for node in nodes:
        remove_node(node)
    _ip("link", "del", bridge, check=False)


def remove_node(node: NodeLink) -> None:
    """One node off the network (`kctl cluster remove-worker`, and `down` for each): the host's route to its
    pods, its veth (the namespace's eth0 goes with it) and its namespace. The other nodes' routes to its
    pods are their kubelets' to drop, once its Node is gone."""
    _ip("route", "del", node.pod_cidr, "via", node.address, check=False)
    _ip("link", "del", node.host_veth, check=False)
    _ip("netns", "del", node.netns, check=False)
