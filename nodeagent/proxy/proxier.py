"""The proxy's control loop: keep the node's nftables table in step with Services and EndpointSlices.

The shared controller shape (client/controller.py): one informer each on
Services and EndpointSlices (as kube-proxy reads them, indexed by their
Service), whose handlers only put the Service's key ("namespace/name": a slice
names its Service in its kubernetes.io/service-name label) on the work queue,
and one worker that calls `sync(key)`.

The first key is `FULL_SYNC` (kube-proxy's first `syncProxyRules`, a full
one): the whole table is programmed at once from the warm caches, so rules left
by an earlier run are corrected too. Until it has succeeded, Service keys are
dropped — the full sync, re-queued with back-off while nft fails, reads every
Service from the cache when it runs. After it, `sync_service` renders one
Service's fragment from the caches, compares it with the fragment last applied,
and commits the difference as one nft transaction: per-Service keys, rather
than kube-proxy's single "sync everything" key, because that diff is what keeps
a change at 10,000 Services within milliseconds (bench/proxy.py). One worker,
because nft transactions on one table should not race; a burst of changes to
one Service still costs one sync (the queue collapses duplicate keys). After a
sync that removed UDP endpoints, their conntrack flows are deleted
(conntrack.py), so clients move to the others.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable

from client.api import Client
from client.controller import Controller
from client.endpointslices import SERVICE_INDEX, service_index, service_key_of
from client.informer import enqueue, split_key
from nodeagent.proxy import nft, rules
from nodeagent.proxy.conntrack import ConntrackCleaner, stale_flows
from proto import core_pb2, discovery_pb2

log = logging.getLogger(__name__)

# The queue key of the full sync: Service keys always hold a "/", so it is never one.
FULL_SYNC = "full-sync"


class Proxier(Controller):
    name = "proxy"

    def __init__(self, client: Client, *, node_name: str, netns: str | None = None, table: str = rules.TABLE,
                 nodeport_addresses: Iterable[str] = ()) -> None:
        # Nothing was applied when an nft transaction fails (it is atomic): retry it 0.5 s, 1 s, ...
        # up to 30 s apart, rather than hammering nft every few milliseconds.
        super().__init__(client, workers=1, base_delay=0.5, max_delay=30.0)
        self.node_name = node_name
        self.netns = netns  # run nft in this network namespace (tests); None is the proxy's own
        self.table = table
        self.nodeport_addresses = tuple(nodeport_addresses)  # CIDRs node ports answer on; () is every local one
        self.services = self.factory.informer(core_pb2.Service)
        self.slices = self.factory.informer(discovery_pb2.EndpointSlice)
        self.slices.store.add_index(SERVICE_INDEX, service_index)
        self.informers = [self.services, self.slices]
        self.full_synced = False
        # What the kernel holds, per Service key: the base the next change is diffed against.
        self.applied: dict[str, rules.Fragment] = {}
        # The ServicePorts behind each applied fragment: which endpoints a change removed.
        self.applied_ports: dict[str, list[rules.ServicePort]] = {}
        self.conntrack = ConntrackCleaner(netns=netns)
        # Blocks of the endpoints map, one per service port, stable while the port exists.
        self.slots: dict[str, int] = {}  # ServicePort.id -> slot
        self.free_slots: list[int] = []
        self.port_ids: dict[str, set[str]] = {}  # Service key -> ids of its ports holding slots
        enqueue(self.services, self.queue)
        enqueue(self.slices, self.queue, service_key_of)
        # Queued before the informers start, so the worker takes it first once the caches are warm.
        self.queue.add(FULL_SYNC)

    async def sync(self, key: str) -> None:
        """Program everything (`FULL_SYNC`), or one Service once everything has been."""
        if key == FULL_SYNC:
            await self.full_sync()
            self.full_synced = True
        elif self.full_synced:
            await self.sync_service(key)

    def desired(self, key: str) -> rules.Fragment:
        """The fragment Service `key` should have, from the caches (taking slots for new ports)."""
        return rules.render_service(self.desired_ports(key))

    def desired_ports(self, key: str) -> list[rules.ServicePort]:
        svc = self.services.store.get(key)
        if svc is None:
            return []
        ports = rules.service_ports(svc, self.slices.store.list_by_index(SERVICE_INDEX, key), self.node_name)
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
        # Which blocks a port needs depends on its policies, not its endpoints: no slices needed here.
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
