"""The endpointslice mirroring controller: a selector-less Service's Endpoints, copied into EndpointSlices.

A Service without a selector has no pods for the endpointslice controller to
follow: its endpoints are whatever someone writes into its v1 Endpoints (kube-dns
naming the masters' DNS servers, a database outside the cluster). Proxies, DNS
and ingress read EndpointSlices only, so, as Kubernetes' EndpointSliceMirroring
controller does, this one mirrors each such Endpoints object into slices:

- only when the Service exists, has no selector, and the Endpoints is not
  labelled `endpointslice.kubernetes.io/skip-mirror: "true"` (the apiserver
  labels the `kubernetes` Service's so, writing its slice itself);
- one slice per Endpoints subset and address type: its ports; `addresses` as
  ready endpoints, `notReadyAddresses` as not ready (with their hostname,
  nodeName and targetRef); at most 1000 addresses per subset, as Kubernetes;
- named `<endpoints>-<random>`, labelled with the Endpoints' labels plus
  `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by:
  endpointslicemirroring-controller.k8s.io`, owned by the Endpoints (so the
  collector removes them with it);
- rewritten in place when the Endpoints change, removed when it goes, its
  Service goes or gains a selector. Slices anyone else manages are never touched.
"""

from __future__ import annotations

import ipaddress
import logging

from client import Client, InformerFactory, key_of, split_key
from client.controller import Controller, copy
from proto import core_pb2, discovery_pb2
from proto.errors import Conflict, NotFound
from proto.wellknown import LABEL_MANAGED_BY, LABEL_SERVICE_NAME

log = logging.getLogger(__name__)

CONTROLLER_NAME = "endpointslicemirroring-controller.k8s.io"
LABEL_SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"
MAX_ADDRESSES_PER_SUBSET = 1000  # Kubernetes' mirroring limit; beyond it addresses are dropped
MIRRORED_INDEX = "mirrored"  # our slices by "<namespace>/<service>"

EndpointSlice = discovery_pb2.EndpointSlice


def _mirrored_key(eps: EndpointSlice) -> list[str]:
    service = eps.metadata.labels.get(LABEL_SERVICE_NAME)
    if eps.metadata.labels.get(LABEL_MANAGED_BY) != CONTROLLER_NAME or not service:
        return []
    return [f"{eps.metadata.namespace}/{service}"]


def should_mirror(svc: core_pb2.Service | None, ep: core_pb2.Endpoints | None) -> bool:
    return (svc is not None and ep is not None and not svc.spec.selector and svc.spec.type != "ExternalName"
            and ep.metadata.labels.get(LABEL_SKIP_MIRROR) != "true")


def _address_type(ip: str) -> str:
    try:
        return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    except ValueError:
        return ""  # not an IP (validation refuses it): not mirrored


def desired_slices(ep: core_pb2.Endpoints) -> list[EndpointSlice]:
    """The slices `ep` mirrors to, without names: one per subset and address type, in subset order."""
    out: list[EndpointSlice] = []
    for subset in ep.subsets:
        listed = [(a, True) for a in subset.addresses] + [(a, False) for a in subset.not_ready_addresses]
        by_type: dict[str, EndpointSlice] = {}
        for address, ready in listed[:MAX_ADDRESSES_PER_SUBSET]:
            address_type = _address_type(address.ip)
            if not address_type:
                continue
            eps = by_type.get(address_type)
            if eps is None:
                eps = by_type[address_type] = EndpointSlice(api_version="discovery.k8s.io/v1", kind="EndpointSlice",
                                                            address_type=address_type)
                for port in subset.ports:
                    eps.ports.add(name=port.name, port=port.port, protocol=port.protocol or "TCP")
            endpoint = eps.endpoints.add(addresses=[address.ip])
            endpoint.conditions.ready = ready
            if address.hostname:
                endpoint.hostname = address.hostname
            if address.node_name:
                endpoint.node_name = address.node_name
            if address.HasField("target_ref"):
                endpoint.target_ref.CopyFrom(address.target_ref)
        out.extend(by_type[t] for t in sorted(by_type))
    return out


def _labelled(eps: EndpointSlice, ep: core_pb2.Endpoints) -> EndpointSlice:
    eps.metadata.namespace = ep.metadata.namespace
    eps.metadata.labels.update(ep.metadata.labels)
    eps.metadata.labels[LABEL_SERVICE_NAME] = ep.metadata.name
    eps.metadata.labels[LABEL_MANAGED_BY] = CONTROLLER_NAME
    eps.metadata.owner_references.add(api_version="v1", kind="Endpoints", name=ep.metadata.name,
                                      uid=ep.metadata.uid, controller=True, block_owner_deletion=True)
    return eps


def _same(current: EndpointSlice, wanted: EndpointSlice) -> bool:
    return (current.address_type == wanted.address_type and list(current.ports) == list(wanted.ports)
            and list(current.endpoints) == list(wanted.endpoints)
            and dict(current.metadata.labels) == dict(wanted.metadata.labels)
            and list(current.metadata.owner_references) == list(wanted.metadata.owner_references))


class EndpointSliceMirroringController(Controller):
    name = "endpointslicemirroring"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 2) -> None:
        super().__init__(client, factory, workers=workers)
        self.services = factory.informer(core_pb2.Service)
        self.endpoints = factory.informer(core_pb2.Endpoints)
        self.slices = factory.informer(EndpointSlice)
        self.slices.store.add_index(MIRRORED_INDEX, _mirrored_key)
        self.informers = [self.services, self.endpoints, self.slices]
        for informer in (self.services, self.endpoints):
            informer.add_handler(on_add=self._enqueue, on_update=lambda _o, n: self._enqueue(n),
                                 on_delete=self._enqueue)
        self.slices.add_handler(on_add=self._slice_changed, on_update=lambda _o, n: self._slice_changed(n),
                                on_delete=self._slice_changed)

    def _enqueue(self, obj: core_pb2.Service | core_pb2.Endpoints) -> None:
        self.queue.add(key_of(obj))

    def _slice_changed(self, eps: EndpointSlice) -> None:
        for key in _mirrored_key(eps):
            self.queue.add(key)

    async def sync(self, key: str) -> None:
        namespace, name = split_key(key)
        svc = self.services.store.get(key)
        ep = self.endpoints.store.get(key)
        existing = sorted(self.slices.store.list_by_index(MIRRORED_INDEX, key), key=lambda s: s.metadata.name)
        wanted = [_labelled(eps, ep) for eps in desired_slices(ep)] if should_mirror(svc, ep) and ep else []
        # Pair the slices there with the ones wanted, in order: rewrite what differs, then create or delete the rest.
        for current, target in zip(existing, wanted, strict=False):
            if _same(current, target):
                continue
            updated = copy(target)
            updated.metadata.name = current.metadata.name
            updated.metadata.resource_version = current.metadata.resource_version
            await self.client.update(updated)  # a Conflict (stale cache) retries the sync with back-off
        for target in wanted[len(existing):]:
            target.metadata.generate_name = f"{name}-"
            await self.client.create(target)
        for extra in existing[len(wanted):]:
            try:
                await self.client.delete(EndpointSlice, extra.metadata.name, namespace, uid=extra.metadata.uid)
            except (NotFound, Conflict):
                pass
        if wanted or existing:
            log.debug("mirrored %s: %d slice(s)", key, len(wanted))
