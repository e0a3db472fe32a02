"""The LoadBalancer controller: give each LoadBalancer Service an address from the pool.

Shape of every Flotilla controller: a Service informer whose handlers enqueue the
Service's key, and one worker whose `sync` reads the cache and writes status. One
worker, because choosing an address is a read-modify-write of the pool: two
concurrent syncs could pick the same free address. `in_use` is rebuilt from the
cache (every ingress IP already written) plus what this controller assigned and
has not seen come back through the watch yet, so an address is never handed out twice.

A Service that stops being of type LoadBalancer (or is deleted) frees its address;
with the pool exhausted a Service stays pending (no ingress, EXTERNAL-IP <pending>)
and is retried when an address is freed.

It runs inside the controller manager (`--lb-pool`, controller `service-lb`, as
Kubernetes' cloud controller manager runs its service controller) on the shared
informers, or on its own in `flotilla-lb-controller`.
"""

from __future__ import annotations

import logging

from client.api import Client
from client.controller import Controller
from client.informer import InformerFactory, enqueue, key_of, split_key
from controlplane.loadbalancer.pool import choose
from proto import core_pb2
from proto.errors import NotFound

log = logging.getLogger(__name__)


class LoadBalancerController(Controller):
    name = "service-lb"

    def __init__(self, client: Client, pool: list[str], *, namespace: str = "",
                 factory: InformerFactory | None = None) -> None:
        # Without a shared factory (the standalone daemon, tests) it runs one of its own.
        super().__init__(client, factory, workers=1)
        self.pool = pool
        self.services = self.factory.informer(core_pb2.Service, namespace)
        self.informers = [self.services]
        self.assigned: dict[str, str] = {}  # Service key -> address written, until the cache shows it
        enqueue(self.services, self.queue)
        self.services.add_handler(on_delete=self._freed)

    def _freed(self, svc: core_pb2.Service) -> None:
        self.assigned.pop(key_of(svc), None)
        # An address came free: Services waiting for one get another chance.
        for pending in self.services.store.list():
            if _wants_address(pending) and not _ingress_ips(pending):
                self.queue.add(key_of(pending))

    def in_use(self, *, besides: str) -> set[str]:
        used = {ip for svc in self.services.store.list() if key_of(svc) != besides for ip in _ingress_ips(svc)}
        return used | {ip for key, ip in self.assigned.items() if key != besides}

    async def sync(self, key: str) -> None:
        svc = self.services.store.get(key)
        if svc is None:
            self.assigned.pop(key, None)
            return
        current = _ingress_ips(svc)
        if not _wants_address(svc):
            if current & set(self.pool):
                await self._write(svc, None)
                self._freed(svc)
            return
        taken = self.in_use(besides=key)
        if current and not current & taken:
            self.assigned.pop(key, None)  # the cache shows what we wrote: it counts from there
            return
        ip = choose(self.pool, taken, svc.spec.load_balancer_ip)
        if ip is None:
            namespace, name = split_key(key)
            log.warning("no free LoadBalancer address for %s/%s in the pool", namespace, name)
            return
        self.assigned[key] = ip
        await self._write(svc, ip)

    async def _write(self, svc: core_pb2.Service, ip: str | None) -> None:
        new = core_pb2.Service()
        new.CopyFrom(svc)  # never mutate the cached object
        del new.status.load_balancer.ingress[:]
        if ip is not None:
            new.status.load_balancer.ingress.add(ip=ip, ip_mode="VIP")
        try:
            await self.client.update_status(new)
        except NotFound:
            self.assigned.pop(key_of(svc), None)


def _wants_address(svc: core_pb2.Service) -> bool:
    return svc.spec.type == "LoadBalancer"


def _ingress_ips(svc: core_pb2.Service) -> set[str]:
    return {ingress.ip for ingress in svc.status.load_balancer.ingress if ingress.ip}
