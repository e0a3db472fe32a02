"""Node routes, host-gw style: this node reaches every other node's pods through that node.

Every node has a podCIDR (the IPAM controller hands them out) and an InternalIP
on a network all nodes share. With no overlay, "any pod reaches any pod, any
node reaches any pod" needs, on every node, one route per other node:

    <other node's podCIDR> via <other node's InternalIP> dev <our InternalIP's interface>

(flannel's host-gw backend; Calico without IPIP does the same through BGP). The
kubelet keeps them, in the network namespace it runs in, on the shared
controller (client/controller.py): a Node informer whose handlers put the
Node's name on the work queue, and `sync(name)` makes the kernel hold that
node's route — or none, once the node is gone, or when it is this node or has
no podCIDR or InternalIP yet.

Ownership: every route written here carries the route protocol
`ROUTE_PROTOCOL` (`ip route` shows "proto 77"), and only routes with that
protocol are ever replaced or deleted (the kernel itself refuses a delete
whose protocol does not match): routes of the CNI plugin, the provisioner or an
administrator are never touched, even one to a Node's podCIDR (it stays, with a
warning). At start and every `resync_period`, routes of that protocol
that no current Node wants are removed too, so a Node deleted while the kubelet
was down loses its route all the same.

Scope: a gateway must be on the network of our InternalIP (host-gw needs one L2
segment); a Node elsewhere gets no route and one warning. A kubelet whose
InternalIP is loopback (a test node sharing the host's namespace) keeps no
routes at all, so it can never change the host's routing.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from client.controller import Controller
from client.informer import Informer, enqueue
from proto import core_pb2

if TYPE_CHECKING:
    from pyroute2 import AsyncIPRoute

log = logging.getLogger(__name__)

# A route protocol number of our own (rtnetlink's rtm_protocol; 0-4 are the kernel's, and routing
# daemons use 8-19, 42, 99, 186-192). It marks the routes this module owns, and only those.
ROUTE_PROTOCOL = 77
MAIN_TABLE = 254  # RT_TABLE_MAIN
# The queue key of the sweep of stale routes: Node names are never empty, and one worker runs the
# sweep and the per-Node syncs in turn, so they never race.
SWEEP = ""


class NodeRoutesError(Exception):
    """The node's own address cannot carry host-gw routes (not on any interface here)."""


@dataclass(frozen=True)
class NodeRoute:
    """One other node's pods: `destination` (its podCIDR) via `gateway` (its InternalIP)."""

    destination: str
    gateway: str


def routes_possible(node_ip: str) -> bool:
    """Whether a node with this InternalIP can keep host-gw routes (not loopback: a test node in the host)."""
    return not ipaddress.ip_address(node_ip).is_loopback


def internal_ip(node: core_pb2.Node) -> str:
    return next((a.address for a in node.status.addresses if a.type == "InternalIP"), "")


def desired_route(node: core_pb2.Node | None, *, own_name: str,
                  link: ipaddress.IPv4Network) -> NodeRoute | None:
    """The route this node should hold for `node` (None: no route), a pure function of the Node.

    `link` is the network of our own InternalIP: only gateways on it can be next hops.
    """
    if node is None or node.metadata.name == own_name or not node.spec.pod_cidr:
        return None
    gateway = internal_ip(node)
    try:
        destination = ipaddress.ip_network(node.spec.pod_cidr)
        address = ipaddress.ip_address(gateway)
    except ValueError:
        return None  # no InternalIP yet, or not IPv4-shaped: nothing to route through
    if destination.version != 4 or address not in link:
        return None
    return NodeRoute(str(destination), gateway)


class NodeRoutes(Controller):
    """Keeps `<podCIDR> via <InternalIP>` for every other Node in this network namespace."""

    name = "node-routes"

    def __init__(self, nodes: Informer[core_pb2.Node], *, node_name: str, node_ip: str,
                 resync_period: float = 60.0, netns: str | None = None) -> None:
        # The Node informer is the kubelet's, run by the kubelet's factory (the one Controller makes for
        # us stays empty). Netlink errors retry 0.5 s to 30 s apart: the kernel is not a busy apiserver.
        super().__init__(nodes.client, workers=1, resync_period=resync_period, base_delay=0.5, max_delay=30.0)
        self.nodes = nodes
        self.informers = [nodes]
        self.netns = netns  # a named network namespace to keep routes in (tests); None: our own
        self.node_name = node_name
        self.node_ip = node_ip
        # What this kubelet wrote per Node name: what to delete when the Node goes or changes.
        self.applied: dict[str, NodeRoute] = {}
        self._warned: set[NodeRoute] = set()
        self._ipr: AsyncIPRoute | None = None
        self._oif = 0
        self._link: ipaddress.IPv4Network | None = None
        enqueue(nodes, self.queue)  # a Node's key is its name

    async def run(self) -> None:
        """Find our interface, drop stale routes, then follow Nodes until cancelled."""
        if not routes_possible(self.node_ip):
            log.info("node routes: InternalIP %s is loopback, keeping no routes", self.node_ip)
            return
        # Imported here: pyroute2 costs ~12 MiB, which kubelets that keep no routes need not pay.
        from pyroute2 import AsyncIPRoute

        async with AsyncIPRoute(netns=self.netns) as ipr:
            self._ipr = ipr
            try:
                while True:
                    try:
                        self._oif, self._link = await self._interface(ipr, self.node_ip)
                        break
                    except NodeRoutesError as err:
                        # The address may come later (DHCP, a link still coming up): wait, never take
                        # the rest of the kubelet down with us.
                        log.error("node routes: %s; looking again in %.0f s", err, self.resync_period)
                        await asyncio.sleep(self.resync_period)
                self.queue.add(SWEEP)  # routes of Nodes deleted while we were away
                await super().run()
            finally:
                self._ipr = None

    @staticmethod
    async def _interface(ipr: AsyncIPRoute, node_ip: str) -> tuple[int, ipaddress.IPv4Network]:
        async for addr in await ipr.get_addr(family=socket.AF_INET):
            if addr.get("address") == node_ip:
                network = ipaddress.IPv4Network(f"{node_ip}/{addr['prefixlen']}", strict=False)
                log.info("node routes: next hops on %s (interface index %d)", network, addr["index"])
                return int(addr["index"]), network
        raise NodeRoutesError(f"no interface in this network namespace holds the node IP {node_ip}")

    def desired(self, name: str) -> NodeRoute | None:
        assert self._link is not None
        return desired_route(self.nodes.store.get(name), own_name=self.node_name, link=self._link)

    async def owned_routes(self) -> dict[str, NodeRoute]:
        """The kernel's routes of our protocol through our interface in the main table, by destination.

        Through our interface only: kubelets of several clusters may share one namespace (local
        clusters' masters all live in the host's), each on its own bridge, and must not sweep each other's.
        """
        assert self._ipr is not None
        found = {}
        async for route in await self._ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE,
                                                      proto=ROUTE_PROTOCOL):
            if route["proto"] != ROUTE_PROTOCOL or route.get("table") != MAIN_TABLE:
                continue  # older kernels do not filter dumps: check again
            if route.get("oif") != self._oif:
                continue
            destination = f"{route.get('dst')}/{route['dst_len']}"
            found[destination] = NodeRoute(destination, route.get("gateway") or "")
        return found

    async def remove_stale(self) -> None:
        """Delete our routes that no Node wants (Nodes deleted while we were away, changed CIDRs)."""
        wanted = {self.desired(name) for name in self.nodes.store.list_keys()}
        for route in (await self.owned_routes()).values():
            if route not in wanted:
                await self._delete(route)
        # Forget what we applied for Nodes whose routes the kernel no longer has; sync puts them back.
        live = set((await self.owned_routes()).values())
        self.applied = {name: route for name, route in self.applied.items() if route in live}

    async def sync(self, name: str) -> None:
        if name == SWEEP:
            await self.remove_stale()
            return
        want = self.desired(name)
        had = self.applied.get(name)
        if had is not None and had != want:
            await self._delete(had)
            del self.applied[name]
        if want is None:
            self._report_unroutable(name)
            return
        if had == want:
            return
        if await self._write(want):
            self.applied[name] = want

    def _report_unroutable(self, name: str) -> None:
        node = self.nodes.store.get(name)
        if node is None or name == self.node_name or not node.spec.pod_cidr or not internal_ip(node):
            return
        route = NodeRoute(node.spec.pod_cidr, internal_ip(node))
        if route not in self._warned:
            self._warned.add(route)
            log.warning("node routes: %s (%s) is not on this node's network %s: no route to its pods",
                        name, route.gateway, self._link)

    async def _write(self, route: NodeRoute) -> bool:
        """Add the route, or correct ours; False when someone else's route has that destination (left alone)."""
        assert self._ipr is not None
        request = {"dst": route.destination, "gateway": route.gateway, "oif": self._oif, "table": MAIN_TABLE,
                   "proto": ROUTE_PROTOCOL}
        from pyroute2.netlink.exceptions import NetlinkError  # loaded by run() already

        try:
            await self._ipr.route("add", **request)
        except NetlinkError as err:
            if err.code != errno.EEXIST:
                raise
            owner = await self._owner(route.destination)
            if owner != ROUTE_PROTOCOL:
                if route not in self._warned:
                    self._warned.add(route)
                    log.warning("node routes: a route to %s (protocol %s) is not ours: leaving it",
                                route.destination, owner)
                return False
            await self._ipr.route("replace", **request)  # ours, with an old gateway: correct it
        log.info("node routes: %s via %s", route.destination, route.gateway)
        return True

    async def _owner(self, destination: str) -> int | None:
        """The protocol of the main table's route to exactly `destination` (None: no such route)."""
        assert self._ipr is not None
        network, _, length = destination.partition("/")
        async for found in await self._ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE):
            if found.get("dst") == network and str(found["dst_len"]) == length:
                return int(found["proto"])
        return None

    async def _delete(self, route: NodeRoute) -> None:
        assert self._ipr is not None
        from pyroute2.netlink.exceptions import NetlinkError  # loaded by run() already

        try:
            # The protocol in the request makes the kernel refuse to delete anyone else's route.
            await self._ipr.route("del", dst=route.destination, table=MAIN_TABLE, proto=ROUTE_PROTOCOL)
        except NetlinkError as err:
            if err.code != errno.ESRCH:  # already gone
                raise
        log.info("node routes: removed %s via %s", route.destination, route.gateway)

    def resync(self) -> None:
        """Level-triggered: sweep stale routes, then re-check every Node.

        The sweep also forgets applied routes the kernel lost (deleted by hand), so their sync writes them again.
        """
        self.queue.add(SWEEP)
        super().resync()
