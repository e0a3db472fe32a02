"""Node IPAM: gives every node its slice of the pod network (`spec.podCIDR`).

The cluster CIDR (`--cluster-cidr`, 10.244.0.0/16) is cut into subnets of
`--node-cidr-mask-size` (/24: 256 nodes of up to 254 pods). A node without a
podCIDR gets the lowest free subnet; the node's CNI plugin hands pod IPs out of
it. Which subnets are taken is read from the node cache itself (the nodes are
the allocation record, so a restart loses nothing), plus the ones this process
just handed out that the cache has not seen yet. One worker, so two nodes never
get the same subnet from one process; leader election keeps it to one process.
"""

from __future__ import annotations

import ipaddress
import logging

from client import Client, InformerFactory, key_of
from client.controller import Controller, copy
from client.events import WARNING, EventRecorder
from proto import core_pb2
from proto.errors import ApiError, NotFound

log = logging.getLogger(__name__)


class NodeIpamController(Controller):
    name = "nodeipam"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 cluster_cidr: str = "10.244.0.0/16", node_mask: int = 24) -> None:
        super().__init__(client, factory, workers=1)
        self.recorder = recorder
        self.cluster = ipaddress.ip_network(cluster_cidr)
        self.node_mask = node_mask
        self._pending: dict[str, str] = {}  # node -> subnet handed out, until the cache shows it
        self.nodes = factory.informer(core_pb2.Node)
        self.informers = [self.nodes]
        self.nodes.add_handler(on_add=self._enqueue, on_update=lambda _o, n: self._enqueue(n),
                               on_delete=self._enqueue)

    def _enqueue(self, node: core_pb2.Node) -> None:
        self.queue.add(key_of(node))

    async def sync(self, name: str) -> None:
        node = self.nodes.store.get(name)
        if node is None:
            self._pending.pop(name, None)
            return
        if node.spec.pod_cidr:
            self._pending.pop(name, None)
            return
        used = {n.spec.pod_cidr for n in self.nodes.store.list() if n.spec.pod_cidr}
        used |= {cidr for other, cidr in self._pending.items() if other != name}
        subnet = self._pending.get(name) or next(
            (str(s) for s in self.cluster.subnets(new_prefix=self.node_mask) if str(s) not in used), None)
        if subnet is None:
            self.recorder.event(node, WARNING, "CIDRNotAvailable",
                                f"Node {name} status is now: CIDRNotAvailable")
            raise ApiError(f"no free podCIDR left in {self.cluster} for node {name}")
        self._pending[name] = subnet
        new = copy(node)
        new.spec.pod_cidr = subnet
        del new.spec.pod_cidrs[:]
        new.spec.pod_cidrs.append(subnet)
        try:
            await self.client.update(new)
        except NotFound:
            self._pending.pop(name, None)
            return
        log.info("node %s: podCIDR %s", name, subnet)
