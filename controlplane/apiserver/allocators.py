"""Service IP and node port allocation, done by the apiserver when a Service is created.

A Service's clusterIP (from the service CIDR, 10.96.0.0/12) and its node ports
(30000-32767, for NodePort and LoadBalancer Services) must be unique in the
cluster and must survive apiserver restarts, so each allocated value is one
etcd key — `/registry/ranges/serviceips/<ip>`, `/registry/ranges/servicenodeports/<port>`
— written with the storage's create-if-absent transaction. Two concurrent
creates asking for the same value cannot both win: etcd says AlreadyExists to
the second, which then tries another value (or, if the user asked for that
value, is refused with Invalid, as kube-apiserver does). Values are released
when the Service is finally deleted, or when an update drops them.

Random probing keeps allocation O(1) while the ranges are sparse; after a run
of collisions the used keys are listed once and the first free value taken,
so a nearly full range is still served exactly.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from controlplane.apiserver.storage import Storage, prefix_end
from proto import core_pb2
from proto.errors import AlreadyExists, Invalid

log = logging.getLogger(__name__)

IP_PREFIX = b"/registry/ranges/serviceips/"
PORT_PREFIX = b"/registry/ranges/servicenodeports/"
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_NODE_PORTS = (30000, 32767)
RANDOM_TRIES = 20


@dataclass
class Allocation:
    """The keys one write took, so a failed write can give them back."""

    keys: list[bytes] = field(default_factory=list)


def _needs_node_ports(spec: core_pb2.ServiceSpec) -> bool:
    if spec.type == "NodePort":
        return True
    return spec.type == "LoadBalancer" and (not spec.HasField("allocate_load_balancer_node_ports")
                                            or spec.allocate_load_balancer_node_ports)


def _needs_cluster_ip(spec: core_pb2.ServiceSpec) -> bool:
    return spec.type != "ExternalName" and spec.cluster_ip != "None"


class ServiceAllocator:
    def __init__(self, storage: Storage, *, service_cidr: str = DEFAULT_SERVICE_CIDR,
                 node_ports: tuple[int, int] = DEFAULT_NODE_PORTS) -> None:
        self.storage = storage
        self.network = ipaddress.IPv4Network(service_cidr)
        self.node_ports = node_ports
        # The network and broadcast addresses are never handed out; .1 is kept for the
        # `kubernetes` Service, as in Kubernetes, unless asked for by name.
        self._first = int(self.network.network_address) + 2
        self._last = int(self.network.broadcast_address) - 1

    # ---------------------------------------------------------------- public

    async def allocate(self, svc: core_pb2.Service, old: core_pb2.Service | None = None) -> Allocation:
        """Fill in the clusterIP and node ports `svc` needs and `old` did not already hold."""
        taken = Allocation()
        owner = f"{svc.metadata.namespace}/{svc.metadata.name}".encode()
        what = f'Service "{svc.metadata.name}"'
        try:
            spec = svc.spec
            if _needs_cluster_ip(spec) and not (old is not None and old.spec.cluster_ip == spec.cluster_ip
                                                and spec.cluster_ip):
                ip = await self._allocate_ip(spec.cluster_ip, owner, what)
                taken.keys.append(IP_PREFIX + ip.encode())
                spec.cluster_ip = ip
                del spec.cluster_ips[:]
                spec.cluster_ips.append(ip)
            if _needs_node_ports(spec):
                held = {p.node_port for p in old.spec.ports} if old is not None and _needs_node_ports(old.spec) \
                    else set()
                for i, port in enumerate(spec.ports):
                    if port.node_port and port.node_port in held:
                        continue
                    number = await self._allocate_port(port.node_port, owner, what, f"spec.ports[{i}].nodePort")
                    taken.keys.append(PORT_PREFIX + str(number).encode())
                    port.node_port = number
        except BaseException:
            await self.release_keys(taken.keys)
            raise
        return taken

    async def release(self, svc: core_pb2.Service, keep: core_pb2.Service | None = None) -> None:
        """Give back what `svc` held (and `keep`, its successor, does not)."""
        await self.release_keys([k for k in self.held(svc) if keep is None or k not in self.held(keep)])

    def held(self, svc: core_pb2.Service) -> list[bytes]:
        keys: list[bytes] = []
        if _needs_cluster_ip(svc.spec) and svc.spec.cluster_ip:
            keys.append(IP_PREFIX + svc.spec.cluster_ip.encode())
        if _needs_node_ports(svc.spec):
            keys += [PORT_PREFIX + str(p.node_port).encode() for p in svc.spec.ports if p.node_port]
        return keys

    async def release_keys(self, keys: list[bytes]) -> None:
        for key in keys:
            stored = await self.storage.get(key)
            if stored is None:
                continue
            try:
                await self.storage.delete(key, stored.revision)
            except Exception as exc:  # a leak is harmless; a failed delete must not fail the caller
                log.warning("could not release %s: %s", key.decode(), exc)

    # ---------------------------------------------------------------- cluster IPs

    async def _allocate_ip(self, requested: str, owner: bytes, what: str) -> str:
        if requested:
            try:
                value = int(ipaddress.IPv4Address(requested))
            except ValueError:
                raise Invalid(what, [("spec.clusterIP", f'Invalid value: "{requested}": must be a valid IP '
                                      "address")]) from None
            if not int(self.network.network_address) < value < int(self.network.broadcast_address):
                raise Invalid(what, [("spec.clusterIP", f'Invalid value: "{requested}": provided IP is not in '
                                      f"the valid range. The range of valid IPs is {self.network}")])
            if not await self._take(IP_PREFIX + requested.encode(), owner):
                raise Invalid(what, [("spec.clusterIP", f'Invalid value: "{requested}": provided IP is already '
                                      "allocated")])
            return requested
        found = await self._take_any(IP_PREFIX, self._first, self._last, owner,
                                     lambda v: str(ipaddress.IPv4Address(v)))
        if found is None:
            raise Invalid(what, [("spec.clusterIP", f"Internal error: failed to allocate a serviceIP: range "
                                  f"{self.network} is full")])
        return str(ipaddress.IPv4Address(found))

    # ---------------------------------------------------------------- node ports

    async def _allocate_port(self, requested: int, owner: bytes, what: str, path: str) -> int:
        low, high = self.node_ports
        if requested:
            if not low <= requested <= high:
                raise Invalid(what, [(path, f"Invalid value: {requested}: provided port is not in the valid "
                                      f"range. The range of valid ports is {low}-{high}")])
            if not await self._take(PORT_PREFIX + str(requested).encode(), owner):
                raise Invalid(what, [(path, f"Invalid value: {requested}: provided port is already allocated")])
            return requested
        value = await self._take_any(PORT_PREFIX, low, high, owner, str)
        if value is None:
            raise Invalid(what, [(path, f"Internal error: failed to allocate a nodePort: range {low}-{high} "
                                  "is full")])
        return value

    # ---------------------------------------------------------------- etcd

    async def _take(self, key: bytes, owner: bytes) -> bool:
        try:
            await self.storage.create(key, owner)
            return True
        except AlreadyExists:
            return False

    async def _take_any(self, prefix: bytes, first: int, last: int, owner: bytes,
                        to_key: Callable[[int], str]) -> int | None:
        """Any free value in [first, last]: random probes, then one scan of what is taken."""
        for _ in range(RANDOM_TRIES):
            value = random.randint(first, last)
            if await self._take(prefix + to_key(value).encode(), owner):
                return value
        page = await self.storage.range(prefix, prefix_end(prefix))
        taken = {kv.key[len(prefix):].decode() for kv in page.items}
        for value in range(first, last + 1):
            suffix = to_key(value)
            if suffix not in taken and await self._take(prefix + suffix.encode(), owner):
                return value
        return None
