"""The proxy's control loop: keep the node's nftables table in step with Services and Endpoints.

One informer each on Services and Endpoints (shared through an `InformerFactory`);
their handlers only put the Service's key ("namespace/name": an Endpoints object
is named after its Service) on a work queue. Once the caches have synced, the
whole table is programmed at once (`full_sync`); then one worker takes keys off
the queue and `sync_service` renders that Service's fragment from the caches,
compares it with the fragment last applied, and commits the difference as one
nft transaction. One worker, because nft transactions on one table should not
race; a burst of changes to one Service still costs one sync (the queue
collapses duplicate keys). After a sync that removed UDP endpoints, their
conntrack flows are deleted (conntrack.py), so clients move to the others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterable

from client.api import Client
from client.informer import InformerFactory, key_of, split_key
from client.workqueue import WorkQueue, run_workers
from nodeagent.proxy import nft, rules
from nodeagent.proxy.conntrack import ConntrackCleaner, stale_flows
from proto import core_pb2

log = logging.getLogger(__name__)



class Proxier:
    def __init__(self, client: Client, *, node_name: str, netns: str | None = None, table: str = rules.TABLE,
                 nodeport_addresses: Iterable[str] = ()) -> None:
        self.node_name = node_name
        self.netns = netns  # run nft in this network namespace (tests); None is the proxy's own
        self.table = table
        self.nodeport_addresses = tuple(nodeport_addresses)  # CIDRs node ports answer on; () is every local one
        self.factory = InformerFactory(client)
        self.services = self.factory.informer(core_pb2.Service)
        self.endpoints = self.factory.informer(core_pb2.Endpoints)
        self.queue: WorkQueue[str] = WorkQueue("proxy")
        # What the kernel holds, per Service key: the base the next change is diffed against.
        self.applied: dict[str, rules.Fragment] = {}
        # The ServicePorts behind each applied fragment: which endpoints a change removed.
        self.applied_ports: dict[str, list[rules.ServicePort]] = {}
        self.conntrack = ConntrackCleaner(netns=netns)
        # Blocks of the endpoints map, one per service port, stable while the port exists.
        self.slots: dict[str, int] = {}  # ServicePort.id -> slot
        self.free_slots: list[int] = []
        self.port_ids: dict[str, set[str]] = {}  # Service key -> ids of its ports holding slots
        for informer in (self.services, self.endpoints):
            informer.add_handler(self._enqueue, lambda _old, new: self._enqueue(new), self._enqueue)

    def _enqueue(self, obj: core_pb2.Service | core_pb2.Endpoints) -> None:
        self.queue.add(key_of(obj))

    async def run(self) -> None:
        """Program everything once the caches are warm, then follow changes until cancelled."""
        self.factory.start()
        try:
            await self.factory.wait_for_cache_sync()
            delay = 0.5
            while True:
                try:
                    await self.full_sync()
                    break
                except nft.NftError as err:
                    # Nothing was applied (the transaction is atomic): try again, no faster than 30 s apart.
                    log.error("full sync failed, retrying in %.1f s: %s", delay, err)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
            await run_workers(self.queue, self.sync_service, 1)
        finally:
            self.queue.shutdown()
            self.factory.stop()

    def desired(self, key: str) -> rules.Fragment:
        """The fragment Service `key` should have, from the caches (taking slots for new ports)."""
        return rules.render_service(self.desired_ports(key))

    def desired_ports(self, key: str) -> list[rules.ServicePort]:
        svc = self.services.store.get(key)
        if svc is None:
            return []
        ports = rules.service_ports(svc, self.endpoints.store.get(key), self.node_name)
        return [dataclasses.replace(sp, slot=self._slot(key, sp.slot_ids[0]),
                                    external_slot=self._slot(key, sp.slot_ids[-1]) if sp.split_policies else 0)
                for sp in ports]

    def _slot(self, key: str, port_id: str) -> int:
        slot = self.slots.get(port_id)
        if slot is None:
            slot = self.free_slots.pop() if self.free_slots else len(self.slots)
            self.slots[port_id] = slot
        self.port_ids.setdefault(key, set()).add(port_id)
        return slot

    def _release_slots(self, key: str, keep: set[str]) -> None:
        """Give back the slots of ports that are gone, once the kernel no longer uses them."""
        for port_id in self.port_ids.get(key, set()) - keep:
            self.free_slots.append(self.slots.pop(port_id))
        if keep:
            self.port_ids[key] = keep
        else:
            self.port_ids.pop(key, None)

    def _port_ids(self, key: str) -> set[str]:
        svc = self.services.store.get(key)
        # Which blocks a port needs depends on its policies, not its endpoints: no Endpoints needed here.
        return {i for sp in rules.service_ports(svc, None) for i in sp.slot_ids} if svc is not None else set()

    async def _apply(self, transaction: str) -> None:
        await nft.apply(transaction, netns=self.netns)

    async def full_sync(self) -> None:
        """Replace the whole table: on start, so rules left by an earlier run are corrected too."""
        started = time.perf_counter()
        ports = {key: self.desired_ports(key) for key in self.services.store.list_keys()}
        wanted = {key: rules.render_service(p) for key, p in ports.items()}
        wanted = {key: frag for key, frag in wanted.items() if frag != rules.Fragment()}
        keep = set(rules.BASE_CHAINS).union(*(frag.chains for frag in wanted.values()))
        stale = [name for name in await nft.list_chains(netns=self.netns, table=self.table) if name not in keep]
        await self._apply(rules.declarations(wanted.values(), table=self.table))
        await self._apply(rules.full_sync(wanted.values(), stale, table=self.table,
                                          nodeport_addresses=self.nodeport_addresses))
        self.applied = wanted
        self.applied_ports = {key: ports[key] for key in wanted}
        log.info("programmed %d services in %.3f s", len(wanted), time.perf_counter() - started)

    async def sync_service(self, key: str) -> None:
        ports = self.desired_ports(key)
        new = rules.render_service(ports)
        old = self.applied.get(key, rules.Fragment())
        transaction = rules.fragment_diff(old, new, table=self.table)
        if transaction:
            await self._apply(transaction)
        self._release_slots(key, self._port_ids(key))
        old_ports = self.applied_ports.pop(key, [])
        if new == rules.Fragment():
            self.applied.pop(key, None)
        else:
            self.applied[key] = new
            self.applied_ports[key] = ports
        # Only once the rules no longer pick them: a flow deleted earlier could be re-made to the old endpoint.
        await self.conntrack.delete(stale_flows(old_ports, ports))
        if transaction:
            namespace, name = split_key(key)
            log.debug("synced service %s/%s", namespace, name)
