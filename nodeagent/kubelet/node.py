"""The node's presence in the cluster: registration, the heartbeat Lease, node status.

The kubelet makes its Node object (capacity from the host, addresses, nodeInfo,
labels), then keeps two signs of life the node lifecycle controller reads:
the Lease in kube-node-lease, renewed every 10 s (cheap: a small object, so
heartbeats never rewrite the whole Node), and the Node's conditions, written
when one changes and at least every minute (`node_status_report_frequency`).
Ready follows the runtime: containerd must answer and report both RuntimeReady
and NetworkReady (the latter needs the CNI conflist, see network.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from client import Client
from client.retry import update_fresh
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.diskpressure import disk_pressure, parse_eviction_hard
from nodeagent.kubelet.runtime import CRIError, Runtime
from proto import coordination_pb2, core_pb2
from proto.errors import AlreadyExists, ApiError, NotFound

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
KUBELET_VERSION = "v0.1.0-flotilla"
MAX_PODS = 110
PRESSURE_CONDITIONS = {"MemoryPressure": "KubeletHasSufficientMemory", "DiskPressure": "KubeletHasNoDiskPressure",
                       "PIDPressure": "KubeletHasSufficientPID"}


def now_timestamp() -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC))
    return ts


def host_capacity() -> dict[str, str]:
    """cpu, memory and pods as the host has them (allocatable is the same: no reservations yet)."""
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {"cpu": str(os.cpu_count() or 1), "memory": f"{pages // 1024}Ki", "pods": str(MAX_PODS)}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()


class NodeStatusManager:
    """Registers the node and keeps its Lease and status current."""

    def __init__(self, client: Client, runtime: Runtime, config: KubeletConfig, *,
                 kubelet_port: Callable[[], int], on_pod_cidr: Callable[[str], None]) -> None:
        self.client = client
        self.runtime = runtime
        self.config = config
        self.kubelet_port = kubelet_port
        self.on_pod_cidr = on_pod_cidr
        self.runtime_version = ""
        self._last_report = 0.0
        self._last_conditions: dict[str, tuple[str, str]] = {}
        self._node_uid = ""  # the registered Node's: its Lease names it as owner
        thresholds = parse_eviction_hard(config.eviction_hard)
        # The DiskPressure detail ("nodefs.available<10%", "" for none): statvfs until the kubelet hands
        # this over to its eviction manager, which adds the minimum reclaim and the transition period.
        self.disk_pressure_check: Callable[[], str] = lambda: disk_pressure(
            thresholds, nodefs=config.root_dir, imagefs=config.root_dir)

    @property
    def name(self) -> str:
        return self.config.node_name

    # ---------------------------------------------------------------- registration

    async def register(self) -> core_pb2.Node:
        """Create the Node, or take over the one a previous run of this kubelet made."""
        try:
            self.runtime_version = (await self.runtime.version()).runtime_version
        except CRIError as err:
            log.warning("containerd does not answer yet: %s", err)
        try:
            node = await self.client.get(core_pb2.Node, self.name)
        except NotFound:
            node = core_pb2.Node(api_version="v1", kind="Node")
            node.metadata.name = self.name
            self._set_labels(node)
            for taint in self.config.register_with_taints:
                key_value, _, effect = taint.partition(":")
                key, _, value = key_value.partition("=")
                node.spec.taints.add(key=key, value=value, effect=effect or "NoSchedule")
            if self.config.pod_cidr:
                node.spec.pod_cidr = self.config.pod_cidr
                node.spec.pod_cidrs.append(self.config.pod_cidr)
            try:
                node = await self.client.create(node)
                log.info("registered node %s", self.name)
            except AlreadyExists:
                node = await self.client.get(core_pb2.Node, self.name)
        else:
            if self._set_labels(node):
                node = await self.client.update(node)
        self._node_uid = node.metadata.uid
        await self.report_status(force=True)
        await self.renew_lease()  # the first heartbeat at once, not one renew interval later
        return node

    def _set_labels(self, node: core_pb2.Node) -> bool:
        # Only labels a kubelet owns: node restriction refuses a node's own node-role.kubernetes.io/* (the
        # admin labels roles; `kctl cluster up` does), as it refuses any kubernetes.io label outside that set.
        want = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": _arch(),
                **self.config.node_labels}
        changed = any(node.metadata.labels.get(k) != v for k, v in want.items())
        node.metadata.labels.update(want)
        return changed

    # ---------------------------------------------------------------- lease

    async def renew_lease(self) -> None:
        """The heartbeat: create or renew Lease kube-node-lease/<node>."""
        try:
            lease = await self.client.get(coordination_pb2.Lease, self.name, LEASE_NAMESPACE)
        except NotFound:
            lease = coordination_pb2.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
            lease.metadata.name = self.name
            lease.metadata.namespace = LEASE_NAMESPACE
            lease.spec.holder_identity = self.name
            lease.spec.lease_duration_seconds = self.config.lease_duration
            lease.spec.acquire_time.CopyFrom(now_timestamp())
            lease.spec.renew_time.CopyFrom(now_timestamp())
            self._own_lease(lease)
            try:
                await self.client.create(lease)
            except AlreadyExists:
                pass
            return
        lease.spec.holder_identity = self.name
        lease.spec.lease_duration_seconds = self.config.lease_duration
        lease.spec.renew_time.CopyFrom(now_timestamp())
        self._own_lease(lease)
        await self.client.update(lease)

    def _own_lease(self, lease: coordination_pb2.Lease) -> None:
        """The Lease belongs to the Node (as the kubelet sets it): deleting the Node lets the garbage collector
        take its heartbeat too, instead of leaving it behind in kube-node-lease."""
        uid = self._node_uid
        if uid and not any(ref.uid == uid for ref in lease.metadata.owner_references):
            del lease.metadata.owner_references[:]
            lease.metadata.owner_references.add(api_version="v1", kind="Node", name=self.name, uid=uid)

    # ---------------------------------------------------------------- status

    async def conditions(self) -> dict[str, tuple[str, str, str]]:
        """type -> (status, reason, message) as the node sees itself now."""
        ready = ("True", "KubeletReady", "kubelet is posting ready status")
        try:
            status = await self.runtime.status()
            problems = [f"{c.type}=false: {c.reason} {c.message}".strip() for c in status.conditions if not c.status]
            if problems:
                ready = ("False", "KubeletNotReady", "container runtime not ready: " + "; ".join(problems))
        except CRIError as err:
            ready = ("False", "KubeletNotReady", f"container runtime is down: {err}")
        result = {"Ready": ready}
        for kind, reason in PRESSURE_CONDITIONS.items():
            result[kind] = ("False", reason, f"kubelet has no {kind.removesuffix('Pressure').lower()} pressure")
        mem_ok = _memory_available_fraction() > 0.05
        if not mem_ok:
            result["MemoryPressure"] = ("True", "KubeletHasInsufficientMemory", "less than 5% of memory available")
        crossed = self.disk_pressure_check()
        if crossed:
            result["DiskPressure"] = ("True", "KubeletHasDiskPressure", f"kubelet has disk pressure: {crossed}")
        return result

    async def report_status(self, *, force: bool = False, stored: core_pb2.Node | None = None) -> None:
        """Write the Node's status if a condition changed, the report period passed, or forced.

        `stored` is the Node as the API has it: when its conditions differ from ours, someone
        else wrote them (the node lifecycle controller marks a node Unknown while its kubelet
        is cut off), so they are written again now, not a report period later, as
        kubelet's nodeStatusHasChanged compares with the stored node.
        """
        conditions = await self.conditions()
        summary = {k: (v[0], v[1]) for k, v in conditions.items()}
        due = time.monotonic() - self._last_report >= self.config.node_status_report_frequency
        overwritten = stored is not None and {c.type: c.status for c in stored.status.conditions} != {
            k: v[0] for k, v in conditions.items()}
        if not (force or due or overwritten or summary != self._last_conditions):
            return
        # The Node is shared (labels, taints, the node lifecycle controller's conditions): write on the fresh copy.
        await update_fresh(self.client, core_pb2.Node, self.name, "",
                           lambda node: self._fill_status(node, conditions), status=True)
        if summary != self._last_conditions:
            log.info("node %s conditions: %s", self.name, ", ".join(f"{k}={v[0]}" for k, v in summary.items()))
        self._last_conditions = summary
        self._last_report = time.monotonic()

    def _fill_status(self, node: core_pb2.Node, conditions: dict[str, tuple[str, str, str]]) -> None:
        status = node.status
        capacity = host_capacity()
        status.capacity.clear()
        status.capacity.update(capacity)
        status.allocatable.clear()
        status.allocatable.update(capacity)
        previous = {c.type: c for c in status.conditions}
        del status.conditions[:]
        stamp = now_timestamp()
        for kind, (value, reason, message) in conditions.items():
            cond = status.conditions.add(type=kind, status=value, reason=reason, message=message)
            cond.last_heartbeat_time.CopyFrom(stamp)
            old = previous.get(kind)
            if old is not None and old.status == value:
                cond.last_transition_time.CopyFrom(old.last_transition_time)
            else:
                cond.last_transition_time.CopyFrom(stamp)
        del status.addresses[:]
        status.addresses.add(type="InternalIP", address=self.config.node_ip)
        status.addresses.add(type="Hostname", address=self.name)
        status.daemon_endpoints.kubelet_endpoint.port = self.kubelet_port()
        info = status.node_info
        info.machine_id = _read("/etc/machine-id")
        info.boot_id = _read("/proc/sys/kernel/random/boot_id")
        info.kernel_version = platform.release()
        info.os_image = _os_image()
        info.container_runtime_version = f"containerd://{self.runtime_version}" if self.runtime_version else ""
        info.kubelet_version = KUBELET_VERSION
        info.kube_proxy_version = KUBELET_VERSION
        info.operating_system = "linux"
        info.architecture = _arch()

    # ---------------------------------------------------------------- loops

    async def run(self) -> None:
        """Heartbeat and status loops, until cancelled; API errors are logged and retried."""
        await asyncio.gather(self._loop(self.config.lease_renew_interval, self.renew_lease),
                             self._loop(self.config.node_status_check_interval, self._check))

    async def _check(self) -> None:
        node = await self.client.get(core_pb2.Node, self.name)
        if node.spec.pod_cidr:
            self.on_pod_cidr(node.spec.pod_cidr)
        await self.report_status(stored=node)

    @staticmethod
    async def _loop(period: float, step: Callable[[], object]) -> None:
        while True:
            try:
                await step()  # type: ignore[misc]
            except (ApiError, CRIError) as err:
                log.warning("node status: %s", err)
            await asyncio.sleep(period)


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _memory_available_fraction() -> float:
    values: dict[str, int] = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0]) if rest.split() else 0
    total = values.get("MemTotal", 0)
    return values.get("MemAvailable", total) / total if total else 1.0
