"""The endpoints controller: keeps each Service's Endpoints equal to its pods' addresses.

For every Service with a selector, the Endpoints object of the same name
lists the IP of each matching pod that has one, with the Service's ports
resolved against the pod (`targetPort` by number, or by the name of a
container port). Ready pods go in `addresses`, the others in
`notReadyAddresses` (unless `publishNotReadyAddresses`), so the proxy only
routes to pods that passed their readiness probe. Pods that resolve a named
port differently land in separate subsets, as in Kubernetes.
"""

from __future__ import annotations

import logging

from client import Client, InformerFactory, key_of, split_key
from client.controller import Controller
from controlplane.controllers import podutil
from proto import core_pb2, selectors
from proto.errors import AlreadyExists, NotFound

log = logging.getLogger(__name__)


def resolve_port(pod: core_pb2.Pod, port: core_pb2.ServicePort) -> int | None:
    """The pod's port for a Service port: a number as is, a name looked up in the containers."""
    target = port.target_port or str(port.port)
    if target.isdigit():
        return int(target)
    for container in pod.spec.containers:
        for cp in container.ports:
            if cp.name == target and (cp.protocol or "TCP") == (port.protocol or "TCP"):
                return cp.container_port
    return None


def build_subsets(svc: core_pb2.Service, pods: list[core_pb2.Pod]) -> list[core_pb2.EndpointSubset]:
    groups: dict[tuple[tuple[str, int, str], ...], core_pb2.EndpointSubset] = {}
    for pod in sorted(pods, key=lambda p: p.status.pod_ip):
        if not pod.status.pod_ip or pod.metadata.HasField("deletion_timestamp"):
            continue
        ports: list[tuple[str, int, str]] = []
        for sp in svc.spec.ports:
            number = resolve_port(pod, sp)
            if number is not None:
                ports.append((sp.name, number, sp.protocol or "TCP"))
        if svc.spec.ports and not ports:
            continue
        key = tuple(ports)
        subset = groups.get(key)
        if subset is None:
            subset = groups[key] = core_pb2.EndpointSubset()
            for name, number, protocol in ports:
                subset.ports.add(name=name, port=number, protocol=protocol)
        address = core_pb2.EndpointAddress(ip=pod.status.pod_ip)
        if pod.spec.node_name:
            address.node_name = pod.spec.node_name
        ref = address.target_ref
        ref.kind, ref.namespace, ref.name, ref.uid = "Pod", pod.metadata.namespace, pod.metadata.name, pod.metadata.uid
        if podutil.is_ready(pod) or svc.spec.publish_not_ready_addresses:
            subset.addresses.append(address)
        else:
            subset.not_ready_addresses.append(address)
    return list(groups.values())


class EndpointsController(Controller):
    name = "endpoints"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 5) -> None:
        super().__init__(client, factory, workers=workers)
        self.services = factory.informer(core_pb2.Service)
        self.pods = factory.informer(core_pb2.Pod)
        self.endpoints = factory.informer(core_pb2.Endpoints)
        self.informers = [self.services, self.pods, self.endpoints]
        self.services.add_handler(on_add=self._enqueue, on_update=lambda _o, n: self._enqueue(n),
                                  on_delete=self._enqueue)
        self.pods.add_handler(on_add=self._pod_changed, on_update=self._pod_updated, on_delete=self._pod_changed)
        self.endpoints.add_handler(on_delete=self._endpoints_deleted)

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

    def _endpoints_deleted(self, ep: core_pb2.Endpoints) -> None:
        # Someone deleted the Endpoints of a live Service: put them back.
        if self.services.store.get(key_of(ep)) is not None:
            self.queue.add(key_of(ep))

    async def sync(self, key: str) -> None:
        namespace, name = split_key(key)
        svc = self.services.store.get(key)
        current = self.endpoints.store.get(key)
        if svc is None:
            if current is not None:
                try:
                    await self.client.delete(core_pb2.Endpoints, name, namespace)
                except NotFound:
                    pass
            return
        if not svc.spec.selector:
            return  # Endpoints of selector-less Services are the user's to write
        pods = self.pods.store.select(selectors.from_match_labels(svc.spec.selector), namespace)
        ep = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
        ep.metadata.name, ep.metadata.namespace = name, namespace
        ep.metadata.labels.update(svc.metadata.labels)
        ep.subsets.extend(build_subsets(svc, pods))
        if current is None:
            try:
                await self.client.create(ep)
            except AlreadyExists:
                existing = await self.client.get(core_pb2.Endpoints, name, namespace)
                ep.metadata.resource_version = existing.metadata.resource_version
                await self.client.update(ep)
            return
        if list(current.subsets) == list(ep.subsets) and dict(current.metadata.labels) == dict(ep.metadata.labels):
            return
        ep.metadata.resource_version = current.metadata.resource_version
        await self.client.update(ep)
