"""Resource usage reports: PodMetrics and NodeMetrics for `kctl top` and the HPA.

Every `metrics_period` the kubelet asks containerd for every container's CPU and
memory (CRI ListContainerStats) and reads the node's own from /proc, then
publishes them through the apiserver (which keeps them in memory, as
metrics-server does). CPU arrives as a cumulative counter, so usage in cores is
the difference between two samples over the time between them; memory is the
working set, the figure the kubelet and the OOM killer care about.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from client import Client
from nodeagent.kubelet.node import now_timestamp
from nodeagent.kubelet.runtime import LABEL_MANAGED, LABEL_POD_NAME, LABEL_POD_NAMESPACE, CRIError, Runtime
from proto import metrics_pb2
from proto.errors import AlreadyExists, ApiError, NotFound
from proto.quantity import format_bytes, format_milli

log = logging.getLogger(__name__)


def _node_cpu_seconds() -> float:
    """Busy CPU seconds of the whole node since boot (/proc/stat, minus idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)
    return busy / 100.0  # USER_HZ is 100 on Linux


def _node_memory_bytes() -> int:
    values: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    return values["MemTotal"] - values.get("MemAvailable", values.get("MemFree", 0))


class MetricsPublisher:
    def __init__(self, client: Client, runtime: Runtime, node_name: str, period: float) -> None:
        self.client = client
        self.runtime = runtime
        self.node_name = node_name
        self.period = period
        self._cpu: dict[str, tuple[int, int]] = {}  # container id -> (timestamp ns, cpu ns)
        self._node_cpu: tuple[float, float] | None = None
        self._published: set[tuple[str, str]] = set()

    async def collect(self) -> tuple[dict[tuple[str, str], list[metrics_pb2.ContainerMetrics]], dict[str, str]]:
        pods: dict[tuple[str, str], list[metrics_pb2.ContainerMetrics]] = defaultdict(list)
        seen: dict[str, tuple[int, int]] = {}
        for stats in await self.runtime.list_container_stats():
            labels = stats.attributes.labels
            if labels.get(LABEL_MANAGED) != "true":
                continue
            cid = stats.attributes.id
            now_ns, cpu_ns = stats.cpu.timestamp, stats.cpu.usage_core_nano_seconds.value
            seen[cid] = (now_ns, cpu_ns)
            before = self._cpu.get(cid)
            cores_milli = 0
            if before is not None and now_ns > before[0]:
                cores_milli = int((cpu_ns - before[1]) * 1000 / (now_ns - before[0]))
            usage = {"cpu": format_milli(max(0, cores_milli)),
                     "memory": format_bytes(stats.memory.working_set_bytes.value)}
            pods[(labels[LABEL_POD_NAMESPACE], labels[LABEL_POD_NAME])].append(
                metrics_pb2.ContainerMetrics(name=stats.attributes.metadata.name, usage=usage))
        self._cpu = seen
        now, busy = time.monotonic(), _node_cpu_seconds()
        node_milli = 0
        if self._node_cpu is not None and now > self._node_cpu[0]:
            node_milli = int((busy - self._node_cpu[1]) * 1000 / (now - self._node_cpu[0]))
        self._node_cpu = (now, busy)
        return pods, {"cpu": format_milli(max(0, node_milli)), "memory": format_bytes(_node_memory_bytes())}

    async def publish(self) -> None:
        pods, node_usage = await self.collect()
        window = f"{self.period:g}s"
        # The node's own report first: a failure over one pod's report must not leave the node without one.
        node = metrics_pb2.NodeMetrics(window=window, usage=node_usage)
        node.metadata.name = self.node_name
        node.timestamp.CopyFrom(now_timestamp())
        await self._upsert(node)
        for (namespace, name), containers in pods.items():
            report = metrics_pb2.PodMetrics(window=window, containers=containers)
            report.metadata.name, report.metadata.namespace = name, namespace
            report.timestamp.CopyFrom(now_timestamp())
            try:
                await self._upsert(report)
            except ApiError as err:  # e.g. Forbidden: the pod was just deleted (node restriction); the rest go on
                log.info("publishing the metrics of pod %s/%s: %s", namespace, name, err)
        # Pods whose containers are gone: their last report would otherwise linger in `top pods`.
        for namespace, name in self._published - set(pods):
            try:
                await self.client.delete(metrics_pb2.PodMetrics, name, namespace)
            except NotFound:
                pass
            except ApiError as err:  # forgotten all the same: retrying every period would only repeat it
                log.warning("withdrawing the metrics of pod %s/%s: %s", namespace, name, err)
        self._published = set(pods)

    async def _upsert(self, report: metrics_pb2.PodMetrics | metrics_pb2.NodeMetrics) -> None:
        try:
            await self.client.create(report)
        except AlreadyExists:
            await self.client.update(report)

    async def run(self) -> None:
        while True:
            try:
                await self.publish()
            except (ApiError, CRIError) as err:
                log.warning("publishing metrics: %s", err)
            await asyncio.sleep(self.period)
