"""The `kubernetes` Service in `default`: how pods find the apiservers, whichever of them are alive.

As kube-apiserver's "kubernetes service" controller with the lease endpoint
reconciler, every apiserver, every RECONCILE_PERIOD:

1. makes sure `default/kubernetes` exists: ClusterIP the first address of the service
   range (10.96.0.1), port 443 named `https` to the apiservers' port, no selector;
2. renews its own Lease `kube-system/apiserver-<hash of its address>` (labelled
   `apiserver.kubernetes.io/identity=kube-apiserver`, its address in an annotation,
   LEASE_SECONDS long);
3. lists those Leases and writes `default/kubernetes`'s Endpoints and EndpointSlice
   with the addresses whose Lease is live — so an apiserver that stops renewing drops
   out within LEASE_SECONDS, and a new one is in within a period.

On a clean stop an apiserver deletes its Lease and takes itself out at once. The
address it advertises is `--advertise-address` (default: the host of
`--https-listen`); a loopback or unspecified one cannot be an endpoint (Endpoints
validation refuses them), so such an apiserver keeps the Service but publishes none.
All writes are the apiserver's own (no caller), through the registry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import time
from collections.abc import Sequence

from controlplane.apiserver.allocators import DEFAULT_SERVICE_CIDR
from controlplane.apiserver.registry import Registry
from proto import coordination_pb2, core_pb2, discovery_pb2, kinds
from proto.errors import AlreadyExists, ApiError, Conflict, NotFound

log = logging.getLogger("apiserver.kubernetes-service")

NAMESPACE = "default"
NAME = "kubernetes"
LEASE_NAMESPACE = "kube-system"
IDENTITY_LABEL = "apiserver.kubernetes.io/identity"
IDENTITY = "kube-apiserver"
ADDRESS_ANNOTATION = "flotilla.dev/advertise-address"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
LEASE_SECONDS = 15  # Kubernetes' master lease TTL
RECONCILE_PERIOD = 5.0

SERVICES, ENDPOINTS, SLICES, LEASES = (kinds.resolve(r) for r in
                                       ("services", "endpoints", "endpointslices", "leases"))


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--advertise-address", default="",
                        help="the address this apiserver publishes in the kubernetes Service's endpoints "
                             "(default: the host of --https-listen)")


def service_ip(service_cidr: str = DEFAULT_SERVICE_CIDR) -> str:
    return str(ipaddress.ip_network(service_cidr)[1])


def publishable(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_unspecified or ip.is_link_local)


class KubernetesService:
    def __init__(self, registry: Registry, *, address: str, port: int, cluster_ip: str = "",
                 lease_seconds: int = LEASE_SECONDS) -> None:
        self.registry = registry
        self.address = address
        self.port = port
        self.cluster_ip = cluster_ip or service_ip()
        self.lease_seconds = lease_seconds
        self.lease_name = "apiserver-" + hashlib.sha256(f"{address}:{port}".encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ one pass

    async def reconcile(self) -> list[str]:
        """Service, own Lease, endpoints; the addresses published."""
        await self.ensure_service()
        if publishable(self.address):
            await self.renew_lease()
        addresses = await self.live_addresses()
        await self.write_endpoints(addresses)
        return addresses

    async def ensure_service(self) -> None:
        svc = core_pb2.Service(api_version="v1", kind="Service")
        svc.metadata.name, svc.metadata.namespace = NAME, NAMESPACE
        svc.metadata.labels.update({"component": "apiserver", "provider": "kubernetes"})
        svc.spec.type, svc.spec.cluster_ip, svc.spec.session_affinity = "ClusterIP", self.cluster_ip, "None"
        svc.spec.ports.add(name="https", protocol="TCP", port=443, target_port=str(self.port))
        try:  # read first: a create of an existing one is refused for its clusterIP before its name
            current = await self.registry.get(SERVICES, NAMESPACE, NAME)
        except NotFound:
            with contextlib.suppress(AlreadyExists):
                await self.registry.create(SERVICES, NAMESPACE, svc)
                log.info("created Service %s/%s (%s:443)", NAMESPACE, NAME, self.cluster_ip)
            return
        assert isinstance(current, core_pb2.Service)
        wanted = [(p.name, p.protocol, p.port, p.target_port) for p in svc.spec.ports]
        if [(p.name, p.protocol, p.port, p.target_port) for p in current.spec.ports] != wanted:
            del current.spec.ports[:]
            current.spec.ports.extend(svc.spec.ports)
            with contextlib.suppress(Conflict):  # another apiserver fixed it first
                await self.registry.update(SERVICES, NAMESPACE, current)

    async def renew_lease(self) -> None:
        now = time.time()
        try:
            lease = await self.registry.get(LEASES, LEASE_NAMESPACE, self.lease_name)
            assert isinstance(lease, coordination_pb2.Lease)
        except NotFound:
            lease = coordination_pb2.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
            lease.metadata.name, lease.metadata.namespace = self.lease_name, LEASE_NAMESPACE
        lease.metadata.labels[IDENTITY_LABEL] = IDENTITY
        lease.metadata.annotations[ADDRESS_ANNOTATION] = self.address
        lease.spec.holder_identity = self.lease_name
        lease.spec.lease_duration_seconds = self.lease_seconds
        lease.spec.renew_time.FromNanoseconds(int(now * 1e9))
        if not lease.metadata.uid:
            lease.spec.acquire_time.FromNanoseconds(int(now * 1e9))
            with contextlib.suppress(AlreadyExists):
                await self.registry.create(LEASES, LEASE_NAMESPACE, lease)
            return
        with contextlib.suppress(Conflict):
            await self.registry.update(LEASES, LEASE_NAMESPACE, lease)

    async def live_addresses(self) -> list[str]:
        items, _, _, _ = await self.registry.list(LEASES, LEASE_NAMESPACE, f"{IDENTITY_LABEL}={IDENTITY}")
        now, live = time.time(), set()
        for raw in items:
            lease = coordination_pb2.Lease()
            lease.ParseFromString(raw)
            address = lease.metadata.annotations.get(ADDRESS_ANNOTATION, "")
            expires = lease.spec.renew_time.ToNanoseconds() / 1e9 + lease.spec.lease_duration_seconds
            if publishable(address) and expires > now:
                live.add(address)
        return sorted(live, key=ipaddress.ip_address)

    async def write_endpoints(self, addresses: Sequence[str]) -> None:
        endpoints = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
        endpoints.metadata.name, endpoints.metadata.namespace = NAME, NAMESPACE
        endpoints.metadata.labels["endpointslice.kubernetes.io/skip-mirror"] = "true"
        if addresses:
            subset = endpoints.subsets.add()
            subset.addresses.extend(core_pb2.EndpointAddress(ip=a) for a in addresses)
            subset.ports.add(name="https", port=self.port, protocol="TCP")
        await self._put(ENDPOINTS, endpoints, lambda old: list(old.subsets) == list(endpoints.subsets))
        slice_ = discovery_pb2.EndpointSlice(api_version="discovery.k8s.io/v1", kind="EndpointSlice",
                                             address_type="IPv4")
        slice_.metadata.name, slice_.metadata.namespace = NAME, NAMESPACE
        slice_.metadata.labels[SERVICE_NAME_LABEL] = NAME
        for address in addresses:
            endpoint = slice_.endpoints.add(addresses=[address])
            endpoint.conditions.ready = True
        slice_.ports.add(name="https", protocol="TCP", port=self.port)
        await self._put(SLICES, slice_, lambda old: (list(old.endpoints), list(old.ports)) ==
                        (list(slice_.endpoints), list(slice_.ports)))

    async def _put(self, kind: kinds.Kind, obj: core_pb2.Endpoints | discovery_pb2.EndpointSlice,
                   same: object) -> None:
        try:
            current = await self.registry.get(kind, NAMESPACE, NAME)
        except NotFound:
            with contextlib.suppress(AlreadyExists):
                await self.registry.create(kind, NAMESPACE, obj)
            return
        if same(current):  # type: ignore[operator]
            return
        obj.metadata.resource_version = current.metadata.resource_version  # type: ignore[attr-defined]
        obj.metadata.uid = current.metadata.uid  # type: ignore[attr-defined]
        with contextlib.suppress(Conflict):  # another apiserver wrote meanwhile; the next pass compares again
            await self.registry.update(kind, NAMESPACE, obj)

    # ------------------------------------------------------------------ the loop

    async def run(self, period: float = RECONCILE_PERIOD) -> None:
        """Reconcile every `period` until cancelled (the apiserver calls `withdraw` as it stops)."""
        while True:
            try:
                await self.reconcile()
            except ApiError as err:
                log.warning("kubernetes Service: %s", err)
            await asyncio.sleep(period)

    async def withdraw(self) -> None:
        """A clean stop: our Lease goes, and the endpoints without us at once."""
        if not publishable(self.address):
            return
        try:
            with contextlib.suppress(NotFound):
                await self.registry.delete(LEASES, LEASE_NAMESPACE, self.lease_name)
            await self.write_endpoints([a for a in await self.live_addresses() if a != self.address])
        except (ApiError, OSError) as err:
            log.warning("kubernetes Service: could not withdraw %s: %s", self.address, err)


def from_options(registry: Registry, opts: argparse.Namespace) -> KubernetesService | None:
    """The reconciler for this apiserver's flags; None without an HTTPS listener (no port to publish)."""
    if not opts.https_listen:
        return None
    host, _, port = opts.https_listen.rpartition(":")
    address = opts.advertise_address or host.strip("[]")
    if not publishable(address):
        log.info("kubernetes Service: %s cannot be an endpoint; pass --advertise-address to publish this "
                 "apiserver", address)
    return KubernetesService(registry, address=address, port=int(port))
