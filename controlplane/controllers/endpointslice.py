"""The endpointslice controller: each Service's endpoints, in EndpointSlices of at most 100.

Beside the endpoints controller (one Endpoints object per Service, however
large), this one keeps what proxies, DNS and ingress controllers read today
(Kubernetes' pkg/controller/endpointslice). For every Service with a selector,
each matching pod with an address (and not finished) is an endpoint: its IP,
`targetRef` (the pod), `nodeName`, the node's zone, a `hostname` when the pod's
subdomain is the Service, and its conditions: `serving` = the pod is Ready,
`terminating` = it is being deleted, `ready` = serving and not terminating
(both forced true by `publishNotReadyAddresses`). A terminating pod stays
listed, so proxies can drain to it while nothing else serves.

Endpoints are grouped by their ports (the Service's ports resolved per pod,
named target ports looked up in its containers) and address type (the
Service's IP families), and each group is spread over slices named
`<service>-<random>`, labelled `kubernetes.io/service-name` and
`endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`,
owned by the Service. Churn is kept low as Kubernetes' reconciler keeps it:
an endpoint stays in the slice it is in (updated there if it changed); new
endpoints first fill slices being written anyway, then the unchanged slice
closest to full that takes them all, and only then a new slice; a slice left
empty is deleted, or rewritten instead of creating another. A Service with no
endpoints keeps one empty placeholder slice. A Service that is gone, lost its
selector or became ExternalName loses the slices this controller made;
slices anyone else manages are never touched.

This controller's own writes may not be in the informer yet when the Service
syncs again; a sync that would start from such a stale cache waits (a
Conflict, retried with back-off) rather than create the same slices twice.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from client import Client, InformerFactory, key_of, split_key
from client.controller import Controller, copy
from controlplane.controllers import podutil
from controlplane.controllers.endpoints import resolve_port
from proto import core_pb2, discovery_pb2, selectors
from proto.errors import Conflict, NotFound
from proto.wellknown import (
    ENDPOINTSLICE_CONTROLLER_NAME,
    LABEL_HEADLESS,
    LABEL_MANAGED_BY,
    LABEL_SERVICE_NAME,
    LABEL_TOPOLOGY_ZONE,
)

log = logging.getLogger(__name__)

EndpointSlice = discovery_pb2.EndpointSlice
EndpointPort = discovery_pb2.EndpointSlice.EndpointPort

MAX_ENDPOINTS_PER_SLICE = 100  # kube-controller-manager's --max-endpoints-per-slice
SERVICE_INDEX = "service"  # slices this controller manages, by "<namespace>/<service>"
_RESERVED_LABELS = (LABEL_SERVICE_NAME, LABEL_MANAGED_BY)

PortKey = tuple[tuple[str, str, int, str], ...]
EndpointKey = tuple[tuple[str, ...], str, str, str]


def managed_service_key(eps: EndpointSlice) -> list[str]:
    """The index of slices this controller manages: their Service's key."""
    labels = eps.metadata.labels
    if labels.get(LABEL_MANAGED_BY) != ENDPOINTSLICE_CONTROLLER_NAME or LABEL_SERVICE_NAME not in labels:
        return []
    return [f"{eps.metadata.namespace}/{labels[LABEL_SERVICE_NAME]}"]


# ---------------------------------------------------------------- what a Service should have


def address_types(svc: core_pb2.Service) -> list[str]:
    """IPv4 and/or IPv6, as the Service's IP families say (getAddressTypesForService)."""
    types = [f for f in ("IPv4", "IPv6") if f in svc.spec.ip_families]
    if types:
        return types
    ip = svc.spec.cluster_ip
    if ip and ip != "None":
        return ["IPv6" if ":" in ip else "IPv4"]
    return ["IPv4", "IPv6"]  # an old headless Service: whatever its pods have


def is_headless(svc: core_pb2.Service) -> bool:
    return svc.spec.cluster_ip in ("", "None")


def wants_slices(svc: core_pb2.Service | None) -> bool:
    return svc is not None and bool(svc.spec.selector) and svc.spec.type != "ExternalName"


def should_be_endpoint(pod: core_pb2.Pod) -> bool:
    """A pod with an address that has not finished; terminating pods count (ShouldPodBeInEndpoints)."""
    if pod.status.phase in ("Succeeded", "Failed"):
        return False
    return bool(pod.status.pod_ip or pod.status.pod_ips)


def pod_addresses(pod: core_pb2.Pod, address_type: str) -> list[str]:
    ips = [p.ip for p in pod.status.pod_ips] or [pod.status.pod_ip]
    version = 6 if address_type == "IPv6" else 4
    found = []
    for ip in ips:
        try:
            if ipaddress.ip_address(ip).version == version:
                found.append(ip)
        except ValueError:
            continue
    return found


def endpoint_ports(svc: core_pb2.Service, pod: core_pb2.Pod) -> list[EndpointPort]:
    """The Service's ports as this pod serves them; a named target port it lacks is left out."""
    ports = []
    for sp in svc.spec.ports:
        number = resolve_port(pod, sp)
        if number is None:
            continue
        port = EndpointPort(name=sp.name, protocol=sp.protocol or "TCP", port=number)
        if sp.app_protocol:
            port.app_protocol = sp.app_protocol
        ports.append(port)
    return ports


def port_key(ports: Iterable[EndpointPort]) -> PortKey:
    return tuple(sorted((p.name, p.protocol, p.port, p.app_protocol) for p in ports))


def endpoint_key(ep: discovery_pb2.Endpoint) -> EndpointKey:
    """What makes an endpoint the same one, whatever its conditions (Kubernetes' endpoint hash)."""
    return tuple(ep.addresses), ep.hostname, ep.target_ref.namespace, ep.target_ref.name


def pod_endpoint(pod: core_pb2.Pod, node: core_pb2.Node | None, svc: core_pb2.Service,
                 addresses: list[str]) -> discovery_pb2.Endpoint:
    """The pod as an endpoint of `svc` (podToEndpoint)."""
    publish = svc.spec.publish_not_ready_addresses
    serving = publish or podutil.is_ready(pod)
    terminating = pod.metadata.HasField("deletion_timestamp")
    ep = discovery_pb2.Endpoint(addresses=addresses)
    # "ready" is never true for a terminating endpoint: old consumers read it alone.
    ep.conditions.ready = publish or (serving and not terminating)
    ep.conditions.serving = serving
    ep.conditions.terminating = terminating
    ref = ep.target_ref
    ref.kind, ref.namespace, ref.name, ref.uid = "Pod", pod.metadata.namespace, pod.metadata.name, pod.metadata.uid
    if pod.spec.node_name:
        ep.node_name = pod.spec.node_name
    if node is not None and node.metadata.labels.get(LABEL_TOPOLOGY_ZONE):
        ep.zone = node.metadata.labels[LABEL_TOPOLOGY_ZONE]
    if pod.spec.hostname and pod.spec.subdomain == svc.metadata.name:
        ep.hostname = pod.spec.hostname
    return ep


@dataclass
class EndpointGroup:
    """The endpoints that share one set of ports (Kubernetes' endpointMeta), by identity."""

    ports: list[EndpointPort]
    endpoints: dict[EndpointKey, discovery_pb2.Endpoint] = field(default_factory=dict)


def desired_groups(svc: core_pb2.Service, pods: Iterable[core_pb2.Pod], nodes: dict[str, core_pb2.Node],
                   address_type: str) -> dict[PortKey, EndpointGroup]:
    groups: dict[PortKey, EndpointGroup] = {}
    for pod in sorted(pods, key=lambda p: p.metadata.name):
        if not should_be_endpoint(pod):
            continue
        addresses = pod_addresses(pod, address_type)
        if not addresses:
            continue
        ports = endpoint_ports(svc, pod)
        group = groups.setdefault(port_key(ports), EndpointGroup(ports))
        ep = pod_endpoint(pod, nodes.get(pod.spec.node_name), svc, addresses)
        group.endpoints[endpoint_key(ep)] = ep
    return groups


def slice_labels(svc: core_pb2.Service) -> dict[str, str]:
    """The Service's labels (but the reserved ones), the headless mark, and whose slice it is."""
    labels = {k: v for k, v in svc.metadata.labels.items() if k not in _RESERVED_LABELS}
    if is_headless(svc):
        labels[LABEL_HEADLESS] = ""
    labels[LABEL_SERVICE_NAME] = svc.metadata.name
    labels[LABEL_MANAGED_BY] = ENDPOINTSLICE_CONTROLLER_NAME
    return labels


def new_slice(svc: core_pb2.Service, ports: list[EndpointPort], address_type: str) -> EndpointSlice:
    eps = EndpointSlice(api_version="discovery.k8s.io/v1", kind="EndpointSlice", address_type=address_type)
    eps.metadata.generate_name = f"{svc.metadata.name}-"
    eps.metadata.namespace = svc.metadata.namespace
    eps.metadata.labels.update(slice_labels(svc))
    podutil.set_controller(eps, svc)
    eps.ports.extend(ports)
    return eps


def owned_by(eps: EndpointSlice, svc: core_pb2.Service) -> bool:
    ref = podutil.controller_ref(eps)
    return ref is not None and ref.uid == svc.metadata.uid


# ---------------------------------------------------------------- the reconciler (pure)


@dataclass
class Plan:
    """The writes that bring a Service's slices to what it should have."""

    create: list[EndpointSlice] = field(default_factory=list)
    update: list[EndpointSlice] = field(default_factory=list)
    delete: list[EndpointSlice] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.create or self.update or self.delete)


def _slice_to_fill(slices: Iterable[EndpointSlice], count: int, limit: int) -> EndpointSlice | None:
    """The slice closest to full that still takes `count` more endpoints (getSliceToFill)."""
    fitting = [s for s in slices if limit - len(s.endpoints) >= count]
    return min(fitting, key=lambda s: limit - len(s.endpoints), default=None)


def _fill(eps: EndpointSlice, wanted: dict[EndpointKey, discovery_pb2.Endpoint], limit: int) -> None:
    while wanted and len(eps.endpoints) < limit:
        eps.endpoints.append(wanted.pop(next(iter(wanted))))


def _reconcile_group(svc: core_pb2.Service, existing: list[EndpointSlice], group: EndpointGroup,
                     address_type: str, limit: int, plan: Plan) -> None:
    """One port group's slices (reconcileByPortMapping): keep endpoints where they are, fill, then create."""
    wanted = dict(group.endpoints)
    labels = slice_labels(svc)
    updating: list[EndpointSlice] = []
    unchanged: dict[str, EndpointSlice] = {}
    # 1. Endpoints stay in their slice (updated if their conditions changed); the gone ones leave.
    for current in existing:
        kept: list[discovery_pb2.Endpoint] = []
        changed = False
        for ep in current.endpoints:
            fresh = wanted.pop(endpoint_key(ep), None)
            if fresh is None:
                changed = True
                continue
            changed = changed or fresh != ep
            kept.append(fresh)
        relabel = dict(current.metadata.labels) != labels
        if changed and not kept:
            plan.delete.append(current)
        elif changed or relabel:
            updated = copy(current)
            del updated.endpoints[:]
            updated.endpoints.extend(kept)
            updated.metadata.labels.clear()
            updated.metadata.labels.update(labels)
            updating.append(updated)
        else:
            unchanged[current.metadata.name] = current
    # 2. New endpoints go first into slices written anyway, the fullest first.
    for updated in sorted(updating, key=lambda s: -len(s.endpoints)):
        _fill(updated, wanted, limit)
    plan.update.extend(updating)
    # 3. Then into the one unchanged slice closest to full that takes them all, else new slices.
    while wanted:
        target = _slice_to_fill(unchanged.values(), len(wanted), limit) if len(wanted) < limit else None
        if target is None:
            target = new_slice(svc, group.ports, address_type)
            plan.create.append(target)
        else:
            del unchanged[target.metadata.name]
            target = copy(target)
            plan.update.append(target)
        _fill(target, wanted, limit)


def _is_placeholder(eps: EndpointSlice, svc: core_pb2.Service, address_type: str) -> bool:
    return (eps.address_type == address_type and not eps.endpoints and not eps.ports
            and dict(eps.metadata.labels) == slice_labels(svc))


def reconcile(svc: core_pb2.Service, groups_by_type: dict[str, dict[PortKey, EndpointGroup]],
              existing: list[EndpointSlice], limit: int = MAX_ENDPOINTS_PER_SLICE) -> Plan:
    """What to create, update and delete so `existing` (the Service's managed slices) hold the groups."""
    plan = Plan()
    for address_type, groups in groups_by_type.items():
        mine = [s for s in existing if s.address_type == address_type]
        by_ports: dict[PortKey, list[EndpointSlice]] = {}
        deleting_before = len(plan.delete)
        creating_before = len(plan.create)
        for eps in mine:
            key = port_key(eps.ports)
            if owned_by(eps, svc) and key in groups:
                by_ports.setdefault(key, []).append(eps)
            else:
                plan.delete.append(eps)  # another Service's of the same name, or ports no pod has now
        for key, group in groups.items():
            _reconcile_group(svc, by_ports.get(key, []), group, address_type, limit, plan)
        # A Service without endpoints keeps one empty slice, so consumers can tell "none" from "not yet".
        deleting = plan.delete[deleting_before:]
        if len(deleting) == len(mine) and len(plan.create) == creating_before:
            if len(deleting) == 1 and _is_placeholder(deleting[0], svc, address_type):
                plan.delete.pop()
            else:
                plan.create.append(new_slice(svc, [], address_type))
    for eps in existing:
        if eps.address_type not in groups_by_type:
            plan.delete.append(eps)
    _recycle(svc, plan)
    return plan


def _recycle(svc: core_pb2.Service, plan: Plan) -> None:
    """Rewrite a slice about to be deleted instead of creating another (finalize)."""
    kept: list[EndpointSlice] = []
    for doomed in plan.delete:
        fresh = plan.create[-1] if plan.create else None
        if fresh is not None and fresh.address_type == doomed.address_type and owned_by(doomed, svc):
            plan.create.pop()
            fresh.metadata.name = doomed.metadata.name
            fresh.metadata.ClearField("generate_name")
            fresh.metadata.resource_version = doomed.metadata.resource_version
            plan.update.append(fresh)
        else:
            kept.append(doomed)
    plan.delete = kept


# ---------------------------------------------------------------- stale cache guard


class SliceTracker:
    """Slices this controller wrote, per Service, until its informer shows them (endpointSliceTracker)."""

    DELETED = -1

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl  # after this long an expectation is dropped, whatever happened
        self._expected: dict[str, dict[str, tuple[int, float]]] = {}  # service key -> slice uid -> (rv, when)

    def wrote(self, service: str, eps: EndpointSlice) -> None:
        self._expected.setdefault(service, {})[eps.metadata.uid] = (int(eps.metadata.resource_version),
                                                                     time.monotonic())

    def deleted(self, service: str, eps: EndpointSlice) -> None:
        self._expected.setdefault(service, {})[eps.metadata.uid] = (self.DELETED, time.monotonic())

    def gone(self, eps: EndpointSlice) -> None:
        """The informer saw the slice deleted: nothing more of it will arrive."""
        for expected in self._expected.values():
            expected.pop(eps.metadata.uid, None)

    def forget(self, service: str) -> None:
        self._expected.pop(service, None)

    def stale(self, service: str, cached: Iterable[EndpointSlice]) -> bool:
        """Whether the cache still lacks one of our writes for `service`."""
        expected = self._expected.get(service)
        if not expected:
            return False
        by_uid = {eps.metadata.uid: eps for eps in cached}
        now = time.monotonic()
        for uid, (version, when) in list(expected.items()):
            have = by_uid.get(uid)
            if version == self.DELETED:
                seen = have is None
            else:
                seen = have is not None and int(have.metadata.resource_version or 0) >= version
            if seen or now - when > self.ttl:
                del expected[uid]
        return bool(expected)


# ---------------------------------------------------------------- the controller


class EndpointSliceController(Controller):
    name = "endpointslice"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 5,
                 max_endpoints_per_slice: int = MAX_ENDPOINTS_PER_SLICE) -> None:
        super().__init__(client, factory, workers=workers)
        self.max_endpoints_per_slice = max_endpoints_per_slice
        self.tracker = SliceTracker()
        self.services = factory.informer(core_pb2.Service)
        self.pods = factory.informer(core_pb2.Pod)
        self.nodes = factory.informer(core_pb2.Node)
        self.slices = factory.informer(EndpointSlice)
        self.slices.store.add_index(SERVICE_INDEX, managed_service_key)
        self.informers = [self.services, self.pods, self.nodes, self.slices]
        self.services.add_handler(on_add=self._enqueue, on_update=lambda _o, n: self._enqueue(n),
                                  on_delete=self._enqueue)
        self.pods.add_handler(on_add=self._pod_changed, on_update=self._pod_updated, on_delete=self._pod_changed)
        self.slices.add_handler(on_add=self._slice_changed, on_update=lambda _o, n: self._slice_changed(n),
                                on_delete=self._slice_deleted)

    # ---------------------------------------------------------------- handlers: keys only

    def _enqueue(self, svc: core_pb2.Service) -> None:
        self.queue.add(key_of(svc))

    def _services_for(self, pod: core_pb2.Pod) -> set[str]:
        return podutil.selecting_services(pod, self.services.store)

    def _pod_changed(self, pod: core_pb2.Pod) -> None:
        for key in self._services_for(pod):
            self.queue.add(key)

    def _pod_updated(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        if old.metadata.resource_version == new.metadata.resource_version:
            return
        for key in self._services_for(old) | self._services_for(new):
            self.queue.add(key)

    def _slice_changed(self, eps: EndpointSlice) -> None:
        # Someone else changed one of ours (or the watch delivers our write): compare again.
        for key in managed_service_key(eps):
            self.queue.add(key)

    def _slice_deleted(self, eps: EndpointSlice) -> None:
        self.tracker.gone(eps)
        self._slice_changed(eps)

    # ---------------------------------------------------------------- sync

    async def sync(self, key: str) -> None:
        namespace, _ = split_key(key)
        svc = self.services.store.get(key)
        existing = [s for s in self.slices.store.list_by_index(SERVICE_INDEX, key)
                    if not s.metadata.HasField("deletion_timestamp")]
        if self.tracker.stale(key, existing):
            raise Conflict("EndpointSlice informer cache is out of date")
        if svc is None or not wants_slices(svc):
            await self._delete_all(key, existing)
            if svc is None:
                self.tracker.forget(key)
            return
        pods = self.pods.store.select(selectors.from_match_labels(svc.spec.selector), namespace)
        nodes = {p.spec.node_name: n for p in pods if p.spec.node_name
                 and (n := self.nodes.store.get(p.spec.node_name)) is not None}
        groups = {t: desired_groups(svc, pods, nodes, t) for t in address_types(svc)}
        plan = reconcile(svc, groups, existing, self.max_endpoints_per_slice)
        if plan:
            await self._apply(key, svc, plan)

    async def _apply(self, key: str, svc: core_pb2.Service, plan: Plan) -> None:
        # Creates first, so consumers never see fewer endpoints than there are; deletes last.
        if not svc.metadata.HasField("deletion_timestamp"):
            for eps in plan.create:
                self.tracker.wrote(key, await self.client.create(eps))
        for eps in plan.update:
            self.tracker.wrote(key, await self.client.update(eps))
        await self._delete_all(key, plan.delete)
        log.debug("service %s: %d slices created, %d updated, %d deleted", key, len(plan.create),
                  len(plan.update), len(plan.delete))

    async def _delete_all(self, key: str, slices: list[EndpointSlice]) -> None:
        for eps in slices:
            try:
                await self.client.delete(EndpointSlice, eps.metadata.name, eps.metadata.namespace,
                                         uid=eps.metadata.uid)
            except NotFound:
                continue
            self.tracker.deleted(key, eps)
