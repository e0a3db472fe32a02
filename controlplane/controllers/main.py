"""`flotilla-controller-manager`: runs every controller, while it holds the leader Lease.

    flotilla-controller-manager --server 127.0.0.1:6443 [--node-monitor-grace-period 40s] \
        [--cluster-signing-cert-file ca.crt --cluster-signing-key-file ca.key]

One process, one apiserver connection, one `InformerFactory` shared by all
controllers (so pods are listed and watched once, not once per controller),
and one event recorder. Nothing starts until this copy is the leader
(`leaderelection.py`); a copy that loses the Lease exits, so a supervisor
restarts it as a standby, as kube-controller-manager does.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from client import Client, InformerFactory, certificates
from client import config as clientconfig
from client.component import Command, LeaderElection, parse_duration
from client.controller import Controller
from client.dynamic import DynamicClient
from client.events import EventRecorder
from controlplane.apiserver.validation.discovery import MAX_ENDPOINTS as MAX_SLICE_ENDPOINTS
from controlplane.controllers.cronjob import CronJobController
from controlplane.controllers.csrapproving import CSRApprovingController
from controlplane.controllers.csrsigning import CSRSigningController
from controlplane.controllers.daemonset import DaemonSetController
from controlplane.controllers.deployment import DeploymentController
from controlplane.controllers.disruption import DisruptionController
from controlplane.controllers.endpoints import EndpointsController
from controlplane.controllers.endpointslice import MAX_ENDPOINTS_PER_SLICE, EndpointSliceController
from controlplane.controllers.endpointslicemirroring import EndpointSliceMirroringController
from controlplane.controllers.garbagecollector import GarbageCollector
from controlplane.controllers.hpa import HorizontalPodAutoscalerController
from controlplane.controllers.job import JobController
from controlplane.controllers.localpath import LocalPathProvisioner
from controlplane.controllers.namespace import NamespaceController
from controlplane.controllers.nfs import NfsProvisioner
from controlplane.controllers.nodeipam import NodeIpamController
from controlplane.controllers.nodelifecycle import NodeLifecycleController
from controlplane.controllers.persistentvolume import PersistentVolumeController
from controlplane.controllers.podgc import PodGarbageCollector
from controlplane.controllers.pvprotection import PVCProtectionController, PVProtectionController
from controlplane.controllers.replicaset import ReplicaSetController
from controlplane.controllers.resourcequota import ResourceQuotaController
from controlplane.controllers.rootcacert import RootCACertPublisher
from controlplane.controllers.serviceaccounts import ServiceAccountsController
from controlplane.controllers.statefulset import StatefulSetController
from controlplane.controllers.tokencleaner import TokenCleaner
from controlplane.loadbalancer.controller import LoadBalancerController
from controlplane.loadbalancer.pool import PoolError, parse_pool
from proto.wellknown import LOCAL_PATH_PROVISIONER

log = logging.getLogger("flotilla.controller-manager")

LEASE_NAME = "flotilla-controller-manager"


def lb_pool(text: str) -> list[str]:
    try:
        return parse_pool(text)
    except PoolError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def slice_size(text: str) -> int:
    """--max-endpoints-per-slice: 1 to 1000, the most a valid EndpointSlice holds (as kube-controller-manager)."""
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 1 <= size <= MAX_SLICE_ENDPOINTS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_SLICE_ENDPOINTS}, but got {size}")
    return size


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--controllers", default="*",
                   help="comma-separated controllers to run ('*' for all; '-name' to leave one out)")
    p.add_argument("--node-monitor-period", type=parse_duration, metavar="DURATION", default=5.0,
                   help="how often node health is checked")
    p.add_argument("--node-monitor-grace-period", type=parse_duration, metavar="DURATION", default=40.0,
                   help="how long a node may go without renewing its Lease before it is Unknown")
    p.add_argument("--pod-eviction-timeout", type=parse_duration, metavar="DURATION", default=300.0,
                   help="tolerationSeconds for pods that do not tolerate not-ready/unreachable taints")
    p.add_argument("--lb-pool", type=lb_pool, default=[], metavar="FIRST-LAST|CIDR",
                   help="addresses the service-lb controller gives LoadBalancer Services (none: it does not run)")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16", help="pod network; each node gets a slice")
    p.add_argument("--node-cidr-mask-size", type=int, default=24, help="prefix length of each node's podCIDR")
    p.add_argument("--horizontal-pod-autoscaler-sync-period", type=parse_duration, metavar="DURATION",
                   default=15.0, help="how often each HPA is evaluated")
    p.add_argument("--horizontal-pod-autoscaler-downscale-stabilization", type=parse_duration,
                   metavar="DURATION", default=300.0, help="default scale-down stabilisation window")
    p.add_argument("--job-pod-failure-backoff", type=parse_duration, metavar="DURATION", default=10.0,
                   help="how long a Job waits after a pod failure before the next pod (doubling per failure)")
    p.add_argument("--job-pod-failure-backoff-max", type=parse_duration, metavar="DURATION", default=360.0,
                   help="the longest a Job waits between pod failures and the next pod")
    p.add_argument("--max-endpoints-per-slice", type=slice_size, default=MAX_ENDPOINTS_PER_SLICE, metavar="N",
                   help="the most endpoints the endpointslice controller puts in one EndpointSlice")
    p.add_argument("--cluster-signing-cert-file", default="",
                   help="CA certificate (PEM) that csrsigning issues kubernetes.io certificates with")
    p.add_argument("--cluster-signing-key-file", default="", help="its private key (PEM)")
    p.add_argument("--root-ca-file", default="",
                   help="CA bundle (PEM) published as the kube-root-ca.crt ConfigMap in every namespace")
    p.add_argument("--cluster-signing-duration", type=parse_duration, metavar="DURATION", default=365 * 86400.0,
                   help="the longest validity csrsigning gives a certificate")


# A copy that loses the Lease exits (LeaderElectionLost), so its supervisor restarts it as a standby.
# OSError: the cluster signing files cannot be read.
COMMAND = Command("flotilla-controller-manager", __doc__, flags=add_flags, errors=(OSError,),
                  leader_election=LeaderElection(LEASE_NAME))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return COMMAND.parse_args(argv)


@dataclass
class Context:
    """What a controller is built from."""

    client: Client
    factory: InformerFactory
    opts: argparse.Namespace
    recorders: list[EventRecorder] = field(default_factory=list)

    def recorder(self, component: str) -> EventRecorder:
        """An event recorder signing as `component` (`kctl describe` shows it under From)."""
        # No host: controllers act for the cluster, not a machine (kubectl shows "deployment-controller").
        recorder = EventRecorder(self.client, component)
        self.recorders.append(recorder)
        return recorder


def dynamic_client(opts: argparse.Namespace) -> DynamicClient | None:
    """The HTTP API, for owners of custom kinds (the garbage collector): only with a kubeconfig naming its URL."""
    config = clientconfig.for_component(server=opts.server, kubeconfig=opts.kubeconfig)
    return DynamicClient(config) if "://" in config.url else None


def csr_signer(c: Context) -> Controller | None:
    """csrsigning needs the cluster CA; without `--cluster-signing-*-file` it does not run."""
    if not (c.opts.cluster_signing_cert_file and c.opts.cluster_signing_key_file):
        return None
    ca = certificates.KeyPair(Path(c.opts.cluster_signing_cert_file).read_bytes(),
                     Path(c.opts.cluster_signing_key_file).read_bytes())
    return CSRSigningController(c.client, c.factory, ca, duration=dt.timedelta(
        seconds=c.opts.cluster_signing_duration))


def root_ca_publisher(c: Context) -> Controller | None:
    """kube-root-ca.crt in every namespace: `--root-ca-file`, else the CA the controller manager itself trusts
    (its kubeconfig's, as Kubernetes falls back to), else — a plaintext test cluster — an empty bundle: the
    pods' kube-api-access volumes wait for the ConfigMap, so it must exist whatever it holds."""
    if c.opts.root_ca_file:
        return RootCACertPublisher(c.client, c.factory, Path(c.opts.root_ca_file).read_text())
    config = clientconfig.for_component(server=c.opts.server, kubeconfig=c.opts.kubeconfig)
    if not config.certificate_authority_data:
        log.warning("root-ca-cert-publisher: no --root-ca-file and a plaintext apiserver: kube-root-ca.crt "
                    "is published empty")
    return RootCACertPublisher(c.client, c.factory, (config.certificate_authority_data or b"").decode())


# A factory returns None when the controller is not configured (it is then skipped, with a log line).
CONTROLLERS: dict[str, Callable[[Context], Controller | None]] = {
    "replicaset": lambda c: ReplicaSetController(c.client, c.factory, c.recorder("replicaset-controller")),
    "deployment": lambda c: DeploymentController(c.client, c.factory, c.recorder("deployment-controller")),
    "daemonset": lambda c: DaemonSetController(c.client, c.factory, c.recorder("daemonset-controller")),
    "statefulset": lambda c: StatefulSetController(c.client, c.factory, c.recorder("statefulset-controller")),
    "job": lambda c: JobController(c.client, c.factory, c.recorder("job-controller"),
                                   backoff=c.opts.job_pod_failure_backoff,
                                   max_backoff=c.opts.job_pod_failure_backoff_max),
    "cronjob": lambda c: CronJobController(c.client, c.factory, c.recorder("cronjob-controller")),
    "disruption": lambda c: DisruptionController(c.client, c.factory, c.recorder("controllermanager")),
    "endpoints": lambda c: EndpointsController(c.client, c.factory),
    "endpointslice": lambda c: EndpointSliceController(c.client, c.factory,
                                                       max_endpoints_per_slice=c.opts.max_endpoints_per_slice),
    "endpointslicemirroring": lambda c: EndpointSliceMirroringController(c.client, c.factory),
    "garbagecollector": lambda c: GarbageCollector(c.client, c.factory, dynamic=dynamic_client(c.opts)),
    "namespace": lambda c: NamespaceController(c.client, c.factory),
    "nodelifecycle": lambda c: NodeLifecycleController(
        c.client, c.factory, c.recorder("node-controller"), monitor_period=c.opts.node_monitor_period,
        grace_period=c.opts.node_monitor_grace_period, eviction_timeout=c.opts.pod_eviction_timeout),
    "nodeipam": lambda c: NodeIpamController(c.client, c.factory, c.recorder("node-ipam-controller"),
                                             cluster_cidr=c.opts.cluster_cidr, node_mask=c.opts.node_cidr_mask_size),
    "podgc": lambda c: PodGarbageCollector(c.client, c.factory),
    "resourcequota": lambda c: ResourceQuotaController(c.client, c.factory),
    "persistentvolume-binder": lambda c: PersistentVolumeController(c.client, c.factory,
                                                                    c.recorder("persistentvolume-controller")),
    "pvc-protection": lambda c: PVCProtectionController(c.client, c.factory),
    "pv-protection": lambda c: PVProtectionController(c.client, c.factory),
    "nfs-provisioner": lambda c: NfsProvisioner(c.client, c.factory, c.recorder("flotilla.dev/nfs")),
    "local-path-provisioner": lambda c: LocalPathProvisioner(c.client, c.factory,
                                                             c.recorder(LOCAL_PATH_PROVISIONER)),
    "horizontalpodautoscaling": lambda c: HorizontalPodAutoscalerController(
        c.client, c.factory, c.recorder("horizontal-pod-autoscaler"),
        sync_period=c.opts.horizontal_pod_autoscaler_sync_period,
        downscale_stabilization=c.opts.horizontal_pod_autoscaler_downscale_stabilization),
    "csrapproving": lambda c: CSRApprovingController(c.client, c.factory),
    "csrsigning": csr_signer,
    "tokencleaner": lambda c: TokenCleaner(c.client, c.factory),
    "serviceaccount": lambda c: ServiceAccountsController(c.client, c.factory),
    "root-ca-cert-publisher": root_ca_publisher,
    # LoadBalancer addresses from a pool (also `flotilla-lb-controller` on its own); only with --lb-pool.
    "service-lb": lambda c: LoadBalancerController(c.client, c.opts.lb_pool, factory=c.factory) if c.opts.lb_pool
    else None,
}


def enabled(spec: str) -> list[str]:
    """Which controllers `--controllers` asks for ("*", "a,b", "*,-b")."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n.lstrip("-") not in CONTROLLERS and n != "*"]
    if unknown:
        raise SystemExit(f"flotilla-controller-manager: unknown controllers: {', '.join(unknown)} "
                         f"(known: {', '.join(CONTROLLERS)})")
    chosen = list(CONTROLLERS) if "*" in names else [n for n in names if not n.startswith("-")]
    return [n for n in chosen if f"-{n}" not in names]


async def run(opts: argparse.Namespace, client: Client) -> None:
    """Build the enabled controllers on one informer factory and run them until cancelled."""
    factory = InformerFactory(client)
    ctx = Context(client, factory, opts)
    controllers = []
    for name in enabled(opts.controllers):
        controller = CONTROLLERS[name](ctx)
        if controller is None:
            log.info("%s: not configured, not started", name)
        else:
            controllers.append(controller)
    for recorder in ctx.recorders:
        recorder.start()
    factory.start()
    try:
        async with asyncio.TaskGroup() as group:
            for controller in controllers:
                group.create_task(controller.run(), name=controller.name)
    finally:
        factory.stop()
        for recorder in ctx.recorders:
            recorder.stop()


def main(argv: list[str] | None = None) -> None:
    COMMAND.main(run, argv)


if __name__ == "__main__":
    main()
