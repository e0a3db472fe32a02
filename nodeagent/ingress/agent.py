"""The ingress agent: Flotilla's built-in ingress controller (flotilla.dev/ingress-haproxy), one per node.

The shared controller shape (client/controller.py): informers on Ingresses,
IngressClasses, Services, EndpointSlices, Secrets, Nodes and the agents'
heartbeat Leases, whose handlers all put one key on the work queue. Every
Ingress shares one haproxy, so the unit of work is the whole configuration:
`sync` rebuilds the Model from the caches (routes.py), renders it (config.py)
and hands the difference to haproxy (haproxy.py) — a graceful reload when the
configuration's shape or the certificates changed, runtime slot updates when
only endpoints did, nothing when nothing did. A burst of changes costs one
sync: the queue collapses the key.

Which Ingresses are ours: those whose class (spec.ingressClassName, or the old
`kubernetes.io/ingress.class` annotation) is an IngressClass with our
controller name. If no such class exists, the agent creates the default one
(`flotilla`, annotated is-default-class), so `cluster up` needs no step of its
own and a cluster whose class was deleted gets it back.

Status: each agent renews a heartbeat Lease (`ingress-<node>` in kube-system)
every HEARTBEAT seconds. The agent of the lowest-named node among the live
heartbeats is the one writer: it sets every one of our Ingresses'
status.loadBalancer.ingress to the InternalIPs of the nodes with live
heartbeats (where haproxy listens), sorted, with ports 80 and 443.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time

from client.api import Client
from client.controller import Controller, copy
from client.endpointslices import SERVICE_INDEX, service_index
from client.informer import enqueue
from nodeagent.ingress import config, routes
from nodeagent.ingress.haproxy import Haproxy
from proto import coordination_pb2, core_pb2, discovery_pb2, networking_pb2
from proto.errors import AlreadyExists, Conflict, NotFound
from proto.wellknown import (
    ANNOTATION_DEFAULT_INGRESS_CLASS,
    ANNOTATION_INGRESS_CLASS,
    DEFAULT_INGRESS_CLASS,
    INGRESS_CONTROLLER_NAME,
)

log = logging.getLogger(__name__)

SYNC = "ingress/sync"  # the one key: everything feeds one configuration
HEARTBEAT = 10.0  # seconds between an agent's Lease renewals
HEARTBEAT_EXPIRY = 40.0  # a Lease not renewed for this long is a gone agent
LEASE_NAMESPACE = "kube-system"
LEASE_PREFIX = "ingress-"
LEASE_LABEL = "flotilla.dev/ingress-agent"


class IngressAgent(Controller):
    name = "ingress"

    def __init__(self, client: Client, settings: config.Settings, *, node_name: str, netns: str | None = None,
                 ensure_default_class: bool = True, haproxy: Haproxy | None = None) -> None:
        # haproxy failures are local (a bind, a file): retry them calmly, as the proxy does nft.
        super().__init__(client, workers=1, base_delay=0.5, max_delay=30.0, resync_period=HEARTBEAT)
        self.settings = settings
        self.node_name = node_name
        self.ensure_default_class = ensure_default_class
        self.haproxy = haproxy or Haproxy(settings, netns=netns)
        self.ingresses = self.factory.informer(networking_pb2.Ingress)
        self.classes = self.factory.informer(networking_pb2.IngressClass)
        self.services = self.factory.informer(core_pb2.Service)
        self.slices = self.factory.informer(discovery_pb2.EndpointSlice)
        self.slices.store.add_index(SERVICE_INDEX, service_index)
        self.secrets = self.factory.informer(core_pb2.Secret, field_selector="type=kubernetes.io/tls")
        self.nodes = self.factory.informer(core_pb2.Node)
        self.leases = self.factory.informer(coordination_pb2.Lease, LEASE_NAMESPACE, label_selector=LEASE_LABEL)
        self.informers = [self.ingresses, self.classes, self.services, self.slices, self.secrets, self.nodes,
                          self.leases]
        for informer in self.informers:
            enqueue(informer, self.queue, lambda _obj: SYNC)
        self.applied: config.Rendered | None = None
        self.applied_certificates: dict[str, bytes] = {}
        self.reloads = 0  # full reloads (starts included), for tests and the bench
        self.slot_updates = 0  # runtime slot changes without a reload
        self._class_created = False
        self.queue.add(SYNC)

    def resync(self) -> None:
        self.queue.add(SYNC)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._heartbeat())
            try:
                await super().run()
            finally:
                await self.haproxy.stop()

    # ------------------------------------------------------------ what is ours

    def our_classes(self) -> set[str]:
        return {ic.metadata.name for ic in self.classes.store.list() if ic.spec.controller == INGRESS_CONTROLLER_NAME}

    def our_ingresses(self) -> list[networking_pb2.Ingress]:
        classes = self.our_classes()
        found = []
        for ing in self.ingresses.store.list():
            name = (ing.spec.ingress_class_name if ing.spec.HasField("ingress_class_name")
                    else ing.metadata.annotations.get(ANNOTATION_INGRESS_CLASS, ""))
            if name in classes:
                found.append(ing)
        return found

    def model(self) -> routes.Model:
        return routes.build(
            self.our_ingresses(),
            services=lambda ns, name: self.services.store.get_by_name(ns, name),
            slices=lambda ns, name: self.slices.store.list_by_index(SERVICE_INDEX, f"{ns}/{name}"),
            secrets=lambda ns, name: self.secrets.store.get_by_name(ns, name))

    # ------------------------------------------------------------ sync

    async def sync(self, key: str) -> None:
        await self._ensure_default_class()
        model = self.model()
        for problem in model.problems:
            log.warning("ingress: %s", problem)
        previous = self.applied.slots if self.applied is not None else None
        rendered = config.render(model, self.settings, previous)
        certificates = {cert.name: cert.pem for cert in model.certificates}
        await self._converge(rendered, certificates)
        await self._write_status()

    async def _converge(self, rendered: config.Rendered, certificates: dict[str, bytes]) -> None:
        applied = self.applied
        if (applied is not None and self.haproxy.running and applied.shape == rendered.shape
                and applied.crt_list == rendered.crt_list and certificates == self.applied_certificates):
            if applied.slots != rendered.slots:
                # Endpoints only: the running workers take them at once, without a reload. The file
                # first: a worker that starts meanwhile (a reload) starts from the new slots.
                self.haproxy.write(rendered, certificates)
                self.slot_updates += await self.haproxy.set_slots(applied.slots, rendered.slots)
            self.applied = rendered
            return
        await self.haproxy.apply(rendered, certificates)
        self.reloads += 1
        self.applied, self.applied_certificates = rendered, certificates

    async def _ensure_default_class(self) -> None:
        if not self.ensure_default_class or self._class_created or self.our_classes():
            return
        ic = networking_pb2.IngressClass(api_version="networking.k8s.io/v1", kind="IngressClass")
        ic.metadata.name = DEFAULT_INGRESS_CLASS
        ic.metadata.annotations[ANNOTATION_DEFAULT_INGRESS_CLASS] = "true"
        ic.spec.controller = INGRESS_CONTROLLER_NAME
        with contextlib.suppress(AlreadyExists):
            await self.client.create(ic)
            log.info("created the default IngressClass %s", DEFAULT_INGRESS_CLASS)
        self._class_created = True

    # ------------------------------------------------------------ status

    def live_agents(self) -> list[str]:
        """Node names of the agents whose heartbeat Lease is fresh, sorted."""
        now = time.time()
        names = []
        for lease in self.leases.store.list():
            renewed = lease.spec.renew_time.ToDatetime(tzinfo=datetime.UTC).timestamp() \
                if lease.spec.HasField("renew_time") else 0.0
            if now - renewed < HEARTBEAT_EXPIRY and lease.spec.holder_identity:
                names.append(lease.spec.holder_identity)
        return sorted(set(names))

    def addresses(self, agents: list[str]) -> list[str]:
        found = []
        for name in agents:
            node = self.nodes.store.get(name)
            for address in node.status.addresses if node is not None else ():
                if address.type == "InternalIP":
                    found.append(address.address)
                    break
        return sorted(found)

    async def _write_status(self) -> None:
        agents = self.live_agents()
        if not agents or agents[0] != self.node_name:
            return  # not the writer
        wanted = networking_pb2.IngressLoadBalancerStatus()
        for ip in self.addresses(agents):
            point = wanted.ingress.add(ip=ip)
            point.ports.add(port=self.settings.http_port, protocol="TCP")
            point.ports.add(port=self.settings.https_port, protocol="TCP")
        for ing in self.our_ingresses():
            if ing.status.load_balancer == wanted:
                continue
            updated = copy(ing)
            updated.status.load_balancer.CopyFrom(wanted)
            try:
                await self.client.update_status(updated)
            except (Conflict, NotFound):
                self.queue.add_after(SYNC, 1.0)  # a newer copy is on its way: write from it

    async def _heartbeat(self) -> None:
        """Renew this agent's Lease every HEARTBEAT seconds (created on first use)."""
        name = LEASE_PREFIX + self.node_name
        while True:
            try:
                await self._renew(name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next beat retries; a missed one only delays status
                log.warning("ingress heartbeat: %s", exc)
            await asyncio.sleep(HEARTBEAT)

    async def _renew(self, name: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        try:
            lease = await self.client.get(coordination_pb2.Lease, name, LEASE_NAMESPACE)
        except NotFound:
            lease = coordination_pb2.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
            lease.metadata.name, lease.metadata.namespace = name, LEASE_NAMESPACE
            lease.metadata.labels[LEASE_LABEL] = self.node_name
            lease.spec.holder_identity = self.node_name
            lease.spec.lease_duration_seconds = int(HEARTBEAT_EXPIRY)
            lease.spec.renew_time.FromDatetime(now)
            await self.client.create(lease)
            return
        lease.spec.holder_identity = self.node_name
        lease.spec.renew_time.FromDatetime(now)
        await self.client.update(lease)
