"""The LoadBalancer announcer (MetalLB's L2 mode): one node answers for each LoadBalancer address.

Every node's proxy DNATs a LoadBalancer address, but the network must send the
packets to some node: one node per Service holds the address on its interface
(a /32, so the kernel answers ARP for it) and tells the segment with a
gratuitous ARP (`arping -U`), so neighbours update their caches at once rather
than after ~45 s. Which node: the holder of the Lease `lb-<service>` in the
Service's namespace, through the same leader election the controller manager
uses. If that node dies its Lease expires, another node's elector wins and
announces; a node that loses the Lease (or the Service its address) removes the
/32 again. A Service with `externalTrafficPolicy: Local` is only answered by
nodes with one of its endpoints, so only those nodes stand for its Lease.

Shape: the shared controller (client/controller.py) on Service and Endpoints
informers whose handlers enqueue the Service's key; `sync` starts or stops one
election task per LoadBalancer Service with an address. One worker: elections
are started and stopped in the order their Services changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from client.api import Client
from client.controller import Controller
from client.informer import enqueue, split_key
from client.leaderelection import LeaderElectionConfig, LeaderElector
from nodeagent.l2announce import L2Speaker, interface_of
from proto import core_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseTiming:
    duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


__all__ = ["Announcer", "LeaseTiming", "interface_of"]


class Announcer(Controller):
    name = "lb-announcer"

    def __init__(self, client: Client, *, node_name: str, interface: str, netns: str | None = None,
                 timing: LeaseTiming = LeaseTiming(), namespace: str = "") -> None:
        super().__init__(client, workers=1)
        self.node_name = node_name
        self.interface = interface
        self.netns = netns
        self.timing = timing
        self.services = self.factory.informer(core_pb2.Service, namespace)
        self.endpoints = self.factory.informer(core_pb2.Endpoints, namespace)
        self.informers = [self.services, self.endpoints]
        self.elections: dict[str, tuple[frozenset[str], asyncio.Task[None]]] = {}
        self.speaker = L2Speaker(interface, netns=netns)
        self._leading: set[str] = set()
        for informer in self.informers:
            enqueue(informer, self.queue)  # an Endpoints object is named after its Service

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            # Each election's `finally` withdraws its addresses: a stopped announcer holds none.
            for _, task in self.elections.values():
                task.cancel()
            await asyncio.gather(*(task for _, task in self.elections.values()), return_exceptions=True)

    def announced(self) -> list[str]:
        """Keys of the Services this node is announcing now (tests, logs)."""
        return sorted(self._leading)

    async def sync(self, key: str) -> None:
        svc = self.services.store.get(key)
        ips = frozenset(i.ip for i in svc.status.load_balancer.ingress if i.ip) \
            if svc is not None and svc.spec.type == "LoadBalancer" and self._may_answer(svc, key) else frozenset()
        current = self.elections.get(key)
        if current is not None and current[0] == ips:
            return
        if current is not None:
            current[1].cancel()  # its `finally` withdraws the addresses
            with contextlib.suppress(asyncio.CancelledError):
                await current[1]
            del self.elections[key]
        if ips:
            self.elections[key] = (ips, asyncio.create_task(self._elect(key, ips), name=f"lb-election {key}"))

    def _may_answer(self, svc: core_pb2.Service, key: str) -> bool:
        """With externalTrafficPolicy Local, this node drops the Service's traffic unless it runs an endpoint."""
        if svc.spec.external_traffic_policy != "Local":
            return True
        endpoints = self.endpoints.store.get(key)
        return endpoints is not None and any(address.node_name == self.node_name for subset in endpoints.subsets
                                             for address in subset.addresses)

    async def _elect(self, key: str, ips: frozenset[str]) -> None:
        namespace, name = split_key(key)
        elector = LeaderElector(self.client, LeaderElectionConfig(
            name=f"lb-{name}", identity=self.node_name, namespace=namespace,
            lease_duration=self.timing.duration, renew_deadline=self.timing.renew_deadline,
            retry_period=self.timing.retry_period))
        while True:
            # run() returns when the Lease is lost; then stand by for it again.
            await elector.run(lambda: self._announce(key, ips))

    async def _announce(self, key: str, ips: frozenset[str]) -> None:
        """Hold the addresses while leading; withdrawn when cancelled (Lease lost or Service changed)."""
        self._leading = self._leading | {key}
        try:
            for ip in sorted(ips):
                self.speaker.hold(ip)
            log.info("%s: announcing %s for %s", self.node_name, ", ".join(sorted(ips)), key)
            await asyncio.Event().wait()
        finally:
            for ip in sorted(ips):
                self.speaker.withdraw(ip)
            self._leading = self._leading - {key}
            log.info("%s: stopped announcing %s", self.node_name, key)
