"""The node's NetworkPolicy loop: keep its nftables table in step with policies, pods and namespaces.

The shared controller shape (client/controller.py): informers on
NetworkPolicies, Pods and Namespaces (cluster-wide: a peer may be any pod)
whose handlers only queue keys — `policy:<ns>/<name>`, `pod:<ns>/<name>`,
`namespace:<name>` — and one worker. Syncing such a key only updates the
index (compiler's input) and marks the policies it may change; it then queues
`apply`, which recompiles just those policies, rebuilds the pod layer if
isolated pods changed, and commits the difference as one nft transaction. A
burst of events (a hundred pods starting) thus costs one transaction: `apply`
waits in the queue behind them and the queue keeps one copy of it.

Most pod events are status updates that change nothing policies look at (IP,
labels, node, named ports): the index compares and stops there. A pod that
does change refills the shared peer sets whose selectors it matches (before or
after), and recompiles only the policies it is a target of (or, through
egress named ports, a resolved destination of): work per event is one check
per distinct peer selector and per policy, never per pod.

The first key is `full-sync`: once the caches are warm the whole table is
written in one transaction, so rules an earlier run left are replaced too; a
failed transaction (nothing of it applied) makes the next `apply` a full sync
as well. With no NetworkPolicy in the cluster there is no table at all: no
rule is in any packet's path until someone writes a policy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from client.api import Client
from client.controller import Controller
from client.informer import enqueue, key_of
from nodeagent.netpol import compiler
from nodeagent.netpol.index import ClusterIndex, PodInfo, pod_info
from nodeagent.proxy import nft
from proto import core_pb2, networking_pb2
from proto.selectors import LabelSelector, from_message

log = logging.getLogger(__name__)

FULL_SYNC = "full-sync"
APPLY = "apply"


@dataclass(frozen=True)
class _Watch:
    """Which pods may change a policy's own compiled form (peer sets are shared, and kept apart).

    Its targets (the pods of this node it selects) always; its peers only where an
    egress rule resolves named ports on them, which puts their IPs in a set of its own.
    """

    namespace: str
    targets: LabelSelector
    peers: tuple[compiler.PeerSpec, ...]  # the peers of egress rules with named ports
    namespaced_peers: bool  # one of those selects namespaces by label
    any_pod: bool  # egress named ports over any destination or ipBlocks: every pod may matter


def _watch(policy: networking_pb2.NetworkPolicy) -> _Watch:
    spec = policy.spec
    peers: list[compiler.PeerSpec] = []
    any_pod = False
    for rule in spec.egress:
        if not any(p.HasField("port") and not p.port.isdigit() for p in rule.ports):
            continue
        if not rule.to or any(p.HasField("ip_block") for p in rule.to):
            any_pod = True
        peers += [compiler.peer_spec(p, policy.metadata.namespace) for p in rule.to if not p.HasField("ip_block")]
    return _Watch(policy.metadata.namespace, from_message(spec.pod_selector), tuple(peers),
                  any(p.namespaces is not None for p in peers), any_pod)


class NetworkPolicyController(Controller):
    name = "netpol"

    def __init__(self, client: Client, *, node_name: str, netns: str | None = None,
                 table: str = compiler.TABLE) -> None:
        # As the proxy: a failed nft transaction applied nothing; retry 0.5 s, 1 s, ... up to 30 s apart.
        super().__init__(client, workers=1, base_delay=0.5, max_delay=30.0)
        self.node_name = node_name
        self.netns = netns
        self.table = table
        self.policies = self.factory.informer(networking_pb2.NetworkPolicy)
        self.pods = self.factory.informer(core_pb2.Pod)
        self.namespaces = self.factory.informer(core_pb2.Namespace)
        self.informers = [self.policies, self.pods, self.namespaces]
        enqueue(self.policies, self.queue, key=lambda obj: f"policy:{key_of(obj)}")
        enqueue(self.pods, self.queue, key=lambda obj: f"pod:{key_of(obj)}")
        enqueue(self.namespaces, self.queue, key=lambda obj: f"namespace:{key_of(obj)}")
        self.index = ClusterIndex()
        self.compiled: dict[str, compiler.Compiled] = {}  # what the kernel holds, per policy key
        self.pod_layer = compiler.pod_layer({}, self.index)
        # The shared peer sets the compiled policies name, and the layer holding them in the kernel.
        self.peer_specs: dict[str, compiler.PeerSpec] = {}
        self.peer_layer = compiler.Fragment()
        self.dirty_peers: set[str] = set()  # peer sets whose pods may have changed
        self.watches: dict[str, _Watch] = {}
        self.dirty: set[str] = set()  # policy keys to recompile at the next apply
        self.pods_changed = False  # a pod of this node changed: the pod layer may differ
        self.table_present = False
        self.full_needed = True
        self.queue.add(FULL_SYNC)

    async def sync(self, key: str) -> None:
        kind, _, name = key.partition(":")
        if key in (FULL_SYNC, APPLY):
            await (self.full_sync() if self.full_needed or key == FULL_SYNC else self.apply())
        elif self.full_needed:
            return  # the full sync reads everything from the caches when it runs
        elif kind == "policy":
            self.dirty.add(name)
            self.queue.add(APPLY)
        elif kind == "pod":
            self.sync_pod(name)
        elif kind == "namespace":
            self.sync_namespace(name)

    # ------------------------------------------------------------ index updates

    def sync_pod(self, key: str) -> None:
        pod = self.pods.store.get(key)
        info = pod_info(pod) if pod is not None else None
        old = self.index.pods.get(key)
        if old == info:
            return  # a status update policies do not see
        self.index.set_pod(key, info)
        if self.node_name in (getattr(old, "node", None), getattr(info, "node", None)):
            self.pods_changed = True
        self.dirty |= {policy for policy, watch in self.watches.items() if self._touches(watch, old, info)}
        for was in (old, info):
            if was is not None:
                namespace_labels = self.index.namespaces.get(was.namespace, {})
                self.dirty_peers |= {name for name, spec in self.peer_specs.items()
                                     if spec.matches(was, namespace_labels)}
        self.queue.add(APPLY)

    def _touches(self, watch: _Watch, *infos: PodInfo | None) -> bool:
        for info in infos:
            if info is None:
                continue
            if watch.any_pod:
                return True
            if (info.namespace == watch.namespace and info.node == self.node_name
                    and watch.targets.matches(info.label_map())):
                return True
            namespace_labels = self.index.namespaces.get(info.namespace, {})
            if any(peer.matches(info, namespace_labels) for peer in watch.peers):
                return True
        return False

    def sync_namespace(self, name: str) -> None:
        ns = self.namespaces.store.get(name)
        labels = dict(ns.metadata.labels) if ns is not None else None
        if self.index.namespaces.get(name) == labels:
            return
        self.index.set_namespace(name, labels)
        self.dirty |= {policy for policy, watch in self.watches.items() if watch.namespaced_peers}
        self.dirty_peers |= {name for name, spec in self.peer_specs.items() if spec.namespaces is not None}
        self.queue.add(APPLY)

    # ------------------------------------------------------------ the kernel

    def _fill_index(self) -> None:
        self.index = ClusterIndex()
        for ns in self.namespaces.store.list():
            self.index.set_namespace(ns.metadata.name, ns.metadata.labels)
        for pod in self.pods.store.list():
            self.index.set_pod(key_of(pod), pod_info(pod))

    async def full_sync(self) -> None:
        """Write the whole table from the caches (or remove it when there is no policy)."""
        started = time.perf_counter()
        self.dirty.clear()
        self.dirty_peers.clear()
        self.pods_changed = False
        self._fill_index()
        policies = {key_of(p): p for p in self.policies.store.list()}
        cache: compiler.PeerCache = {}
        compiled = {key: compiler.compile_policy(p, self.index, self.node_name, cache) for key, p in policies.items()}
        layer = compiler.pod_layer(compiled, self.index)
        specs = compiler.peer_specs(compiled)
        peers = compiler.peer_layer(specs.values(), self.index)
        self.full_needed = True  # until the transaction is in
        if policies:
            fragments = [compiled[key].fragment for key in sorted(compiled)]
            await nft.apply(compiler.full_table([peers, *fragments, layer], table=self.table), netns=self.netns)
        else:
            await nft.apply(compiler.delete_table(table=self.table), netns=self.netns)
        self.full_needed = False
        self.table_present = bool(policies)
        self.compiled, self.pod_layer = compiled, layer
        self.peer_specs, self.peer_layer = specs, peers
        self.watches = {key: _watch(p) for key, p in policies.items()}
        log.info("network policies: %d in the cluster, %d isolating pods of this node; table written in %.3f s",
                 len(policies), sum(1 for c in compiled.values() if c.fragment.chains),
                 time.perf_counter() - started)

    async def apply(self) -> None:
        """Recompile the dirty policies and commit what changed as one transaction."""
        present = bool(self.policies.store.list_keys())
        if present != self.table_present:
            await self.full_sync()  # the first policy creates the table, the last one removes it
            return
        if not self.table_present:
            self.dirty.clear()
            self.dirty_peers.clear()
            self.pods_changed = False
            return
        dirty, self.dirty = self.dirty, set()
        cache: compiler.PeerCache = {}
        changes = []
        compiled = dict(self.compiled)
        targets_changed = False
        for key in sorted(dirty):
            policy = self.policies.store.get(key)
            old = self.compiled.get(key, compiler.Compiled())
            new = compiler.compile_policy(policy, self.index, self.node_name, cache) if policy else compiler.Compiled()
            changes.append((old.fragment, new.fragment))
            targets_changed |= (old.ingress_targets, old.egress_targets) != (new.ingress_targets, new.egress_targets)
            if policy is None:
                compiled.pop(key, None)
                self.watches.pop(key, None)
            else:
                compiled[key] = new
                self.watches[key] = _watch(policy)
        layer = self.pod_layer
        if targets_changed or self.pods_changed:
            layer = compiler.pod_layer(compiled, self.index)
        specs = compiler.peer_specs(compiled) if dirty else self.peer_specs
        peers = compiler.update_peer_layer(self.peer_layer, self.peer_specs, specs, self.dirty_peers, self.index)
        # Peer sets first: new ones must exist before the rules naming them, and go only after them.
        changes = [(self.peer_layer, peers), *changes, (self.pod_layer, layer)]
        transaction = compiler.diff(changes, table=self.table)
        try:
            await nft.apply(transaction, netns=self.netns)
        except nft.NftError:
            self.full_needed = True  # start again from the caches: the kernel holds the old state
            raise
        self.compiled, self.pod_layer = compiled, layer
        self.peer_specs, self.peer_layer = specs, peers
        self.dirty_peers = set()
        self.pods_changed = False
        if transaction:
            log.debug("network policies: %d recompiled, %d lines committed", len(dirty), transaction.count("\n"))
