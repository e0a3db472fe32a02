"""The kubelet daemon: wires the node's loops together and runs them.

    apiserver ──watch pods (spec.nodeName=<node>)──► informer ─┐
    containerd ──relist (PLEG)─────────────────────────────────┤ keys
    probe results, back-off timers, periodic resync ───────────┤
                                                               ▼
                                   pod work queue ──► workers: PodSyncer.sync(key)

beside them: node registration + Lease + status (node.py), the kubelet API for
logs and exec (server.py), usage reports (metrics.py), routes to the other
nodes' pods (routes.py), image garbage collection (imagegc.py) and the
eviction manager keeping the disk from filling up (eviction.py). Every loop is the
shared informer / work-queue shape of the rest of Flotilla; a key is never
synced by two workers at once, so one pod's sync never races itself.

Stopping the kubelet stops only the kubelet: containers keep running, and the
next kubelet adopts them (PLEG's first relist finds them by their labels).
"""

from __future__ import annotations

import asyncio
import logging

from client import config as clientconfig
from client.api import Client
from client.controller import Controller
from client.events import EventRecorder
from client.informer import Informer, InformerFactory, enqueue
from nodeagent.kubelet import network
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.eviction import EvictionManager
from nodeagent.kubelet.imagegc import ImageGCManager, statvfs_stats
from nodeagent.kubelet.metrics import MetricsPublisher
from nodeagent.kubelet.node import NodeStatusManager
from nodeagent.kubelet.pleg import PLEG
from nodeagent.kubelet.pods import PodSyncer
from nodeagent.kubelet.probes import ProbeManager
from nodeagent.kubelet.routes import NodeRoutes, routes_possible
from nodeagent.kubelet.runtime import Runtime
from nodeagent.kubelet.server import ServingTLS, serve
from nodeagent.kubelet.volumes.localpath import LocalPathCleaner
from proto import core_pb2

log = logging.getLogger(__name__)


class Kubelet:
    def __init__(self, config: KubeletConfig) -> None:
        if not config.node_name or not config.node_ip:
            raise ValueError("the kubelet needs a node name and a node IP")
        self.config = config
        self.port = 0

    def network_ready(self) -> bool:
        return bool(network.current_pod_cidr(self.config.cni_conf_dir))

    def set_pod_cidr(self, cidr: str) -> None:
        """Write the CNI conflist for this node's pod CIDR (containerd picks it up by itself)."""
        config = network.conflist(network=f"flotilla-{self.config.node_name}", bridge=self.config.cni_bridge,
                                  pod_cidr=cidr, data_dir=self.config.cni_data_dir)
        if network.write_conflist(self.config.cni_conf_dir, config):
            log.info("pod network: %s on bridge %s", cidr, self.config.cni_bridge)

    async def run(self) -> None:
        config = self.config
        # With a kubeconfig its server wins unless --server was given on purpose.
        client = clientconfig.for_component(server=config.server or None, kubeconfig=config.kubeconfig).client()
        runtime = Runtime(config.containerd_socket)
        factory = InformerFactory(client)
        server = None
        try:
            await client.wait_ready(timeout=60)
            pods = factory.informer(core_pb2.Pod, field_selector=f"spec.nodeName={config.node_name}")
            workers = PodWorkers(client, factory, pods, workers=config.pod_workers,
                                 resync_period=config.sync_frequency)
            queue = workers.queue
            tls = ServingTLS.from_files(config.tls_cert_file, config.tls_private_key_file, config.client_ca_file)
            server, self.port = await serve(runtime, pods.store, f"{config.listen_address or config.node_ip}:"
                                                                 f"{config.port}", tls)
            if config.pod_cidr:
                self.set_pod_cidr(config.pod_cidr)
            node = NodeStatusManager(client, runtime, config, kubelet_port=lambda: self.port,
                                     on_pod_cidr=self.set_pod_cidr)
            registered = await node.register()
            if registered.spec.pod_cidr:
                self.set_pod_cidr(registered.spec.pod_cidr)
            routes = (NodeRoutes(factory.informer(core_pb2.Node), node_name=config.node_name,
                                 node_ip=config.node_ip, resync_period=config.node_routes_resync)
                      if config.node_routes and routes_possible(config.node_ip) else None)
            factory.start()
            await factory.wait_for_cache_sync()
            recorder = EventRecorder(client, "kubelet", host=config.node_name)
            recorder.start()
            probes = ProbeManager(runtime, queue.add, default_period=config.probe_default_period,
                                  default_timeout=config.probe_default_timeout, record=recorder.event)
            workers.syncer = PodSyncer(client, runtime, config, pods.store, probes, queue.add_after,
                                       self.network_ready, record=recorder.event)
            pleg = PLEG(runtime, config.relist_period, queue.add)
            local_path = LocalPathCleaner(client, workers.syncer.volumes.claim_paths)
            metrics = MetricsPublisher(client, runtime, config.node_name, config.metrics_period)
            image_gc = ImageGCManager(runtime, high_threshold=config.image_gc_high_threshold,
                                      low_threshold=config.image_gc_low_threshold, min_age=config.image_gc_min_age,
                                      fs_stats=statvfs_stats(config.root_dir),
                                      record=lambda kind, reason, message: recorder.event(
                                          registered, kind, reason, message))
            eviction = EvictionManager(client, runtime, config, pods.store, volumes=workers.syncer.volumes,
                                       image_gc=image_gc, enqueue=queue.add, record=recorder.event)
            workers.syncer.eviction = eviction
            node.disk_pressure_check = eviction.disk_pressure
            log.info("kubelet for node %s is running (kubelet API on port %d)", config.node_name, self.port)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(workers.run())
                    group.create_task(pleg.run())
                    group.create_task(node.run())
                    group.create_task(metrics.run())
                    group.create_task(local_path.run())
                    if config.image_gc_high_threshold < 100:
                        group.create_task(image_gc.run(config.image_gc_period))
                    group.create_task(eviction.run())
                    if routes is not None:
                        group.create_task(routes.run())
            finally:
                probes.stop_all()
                recorder.stop()
                queue.shutdown()
        finally:
            factory.stop()
            if server is not None:
                await server.stop(grace=1)
            await runtime.close()
            await client.close()



class PodWorkers(Controller):
    """The kubelet's pod loop on the shared controller shape: keys of pods bound to this node.

    Keys come from the pod informer, the PLEG, probe results and back-off timers;
    every `sync_frequency` each pod is synced again even if nothing said it
    changed (level-triggered). A failing pod (no network yet, a CRI error) is
    retried from 0.5 s, doubling, so it is not hammered.
    """

    name = "pods"

    def __init__(self, client: Client, factory: InformerFactory, pods: Informer[core_pb2.Pod], *, workers: int,
                 resync_period: float) -> None:
        super().__init__(client, factory, workers=workers, resync_period=resync_period, base_delay=0.5,
                         max_delay=60.0)
        enqueue(pods, self.queue)
        self.informers.append(pods)
        self.syncer: PodSyncer | None = None  # set once the node is registered (it needs the queue first)

    async def sync(self, key: str) -> None:
        assert self.syncer is not None, "PodWorkers.run before its syncer was set"
        await self.syncer.sync(key)
