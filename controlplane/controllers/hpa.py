"""The horizontal pod autoscaler: sizes Deployments and ReplicaSets to their CPU use.

Every `--horizontal-pod-autoscaler-sync-period` each HorizontalPodAutoscaler
(autoscaling/v2) is evaluated against the usage reports the kubelets publish
(PodMetrics, served from the apiserver's memory):

    utilisation = sum(cpu usage of the target's ready pods) / sum(their cpu requests)
    desired     = ceil(current replicas * utilisation / target utilisation)

unchanged within a 10 % tolerance, clamped to [minReplicas, maxReplicas] and
to at most max(2 * current, 4) in one step. Recommendations are kept for the
stabilisation window: scaling down uses the highest recommendation of the
window (`behavior.scaleDown.stabilizationWindowSeconds`, default
`--horizontal-pod-autoscaler-downscale-stabilization`, 5 min), so a brief dip
does not shed pods; scaling up uses the lowest of its window (default 0: at
once). A change is written to the target's `spec.replicas` with a
SuccessfulRescale event; status records what was seen.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from client import Client, InformerFactory, key_of, split_key
from client.controller import Controller, copy
from client.events import NORMAL, WARNING, EventRecorder
from controlplane.controllers import podutil
from proto import apps_pb2, autoscaling_pb2, core_pb2, metrics_pb2, selectors
from proto.errors import ApiError, NotFound
from proto.quantity import QuantityError, milli_value

log = logging.getLogger(__name__)

TOLERANCE = 0.1
HPA = autoscaling_pb2.HorizontalPodAutoscaler


class HorizontalPodAutoscalerController(Controller):
    name = "horizontalpodautoscaling"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 sync_period: float = 15.0, downscale_stabilization: float = 300.0, workers: int = 3) -> None:
        super().__init__(client, factory, workers=workers)
        self.recorder = recorder
        self.sync_period = sync_period
        self.downscale_stabilization = downscale_stabilization
        self.hpas = factory.informer(HPA)
        self.deployments = factory.informer(apps_pb2.Deployment)
        self.replicasets = factory.informer(apps_pb2.ReplicaSet)
        self.pods = factory.informer(core_pb2.Pod)
        self.informers = [self.hpas, self.deployments, self.replicasets, self.pods]
        # hpa key -> [(monotonic time, recommended replicas)] within the longest window
        self._recommendations: dict[str, list[tuple[float, int]]] = {}
        self.hpas.add_handler(on_add=self._enqueue, on_update=self._updated, on_delete=self._enqueue)

    def _enqueue(self, hpa: HPA) -> None:
        self.queue.add(key_of(hpa))

    def _updated(self, old: HPA, new: HPA) -> None:
        # Our own status writes must not turn the periodic evaluation into a busy loop.
        if old.spec != new.spec:
            self.queue.add(key_of(new))

    async def sync(self, key: str) -> None:
        namespace, _ = split_key(key)
        hpa = self.hpas.store.get(key)
        if hpa is None:
            self._recommendations.pop(key, None)
            return
        # Level-triggered on a clock: evaluate again a period from now, whatever happens.
        self.queue.add_after(key, self.sync_period)
        target = self._target(hpa)
        if target is None:
            await self._set_status(hpa, 0, 0, None, "AbleToScale", "False", "FailedGetScale",
                                   f'the target {hpa.spec.scale_target_ref.kind} "{hpa.spec.scale_target_ref.name}" '
                                   "was not found")
            return
        current = target.spec.replicas
        if current == 0:
            await self._set_status(hpa, 0, 0, None, "ScalingActive", "False", "ScalingDisabled",
                                   "scaling is disabled since the replica count of the target is zero")
            return
        utilization, target_pct, error = await self._cpu_utilization(hpa, target, namespace)
        if utilization is None:
            self.recorder.event(hpa, WARNING, "FailedGetResourceMetric", error)
            await self._set_status(hpa, current, current, None, "ScalingActive", "False",
                                   "FailedGetResourceMetric", error)
            return
        ratio = utilization / target_pct
        raw = current if abs(ratio - 1.0) <= TOLERANCE else math.ceil(ratio * current)
        desired = self._stabilize(key, hpa, current, raw)
        min_replicas = hpa.spec.min_replicas if hpa.spec.HasField("min_replicas") else 1
        desired = max(min(desired, hpa.spec.max_replicas, max(2 * current, 4)), min_replicas)
        if desired != current:
            await self._rescale(target, desired)
            above = "above" if desired > current else "below"
            self.recorder.event(hpa, NORMAL, "SuccessfulRescale",
                                f"New size: {desired}; reason: cpu resource utilization (percentage of "
                                f"request) {above} target")
        await self._set_status(hpa, current, desired, utilization, "ScalingActive", "True", "ValidMetricFound",
                               "the HPA was able to successfully calculate a replica count from cpu resource "
                               "utilization (percentage of request)", rescaled=desired != current)

    def _target(self, hpa: HPA) -> Any:
        ref = hpa.spec.scale_target_ref
        if ref.kind == "Deployment":
            return self.deployments.store.get_by_name(hpa.metadata.namespace, ref.name)
        if ref.kind == "ReplicaSet":
            return self.replicasets.store.get_by_name(hpa.metadata.namespace, ref.name)
        return None

    async def _cpu_utilization(self, hpa: HPA, target: Any, namespace: str) -> tuple[float | None, int, str]:
        """(utilisation in % of requests, target %, why not) over the target's ready pods with metrics."""
        target_pct = 80
        for metric in hpa.spec.metrics:
            if metric.type == "Resource" and metric.resource.name == "cpu" \
                    and metric.resource.target.HasField("average_utilization"):
                target_pct = metric.resource.target.average_utilization
        pods = [p for p in self.pods.store.select(selectors.from_message(target.spec.selector), namespace)
                if podutil.is_active(p) and podutil.is_ready(p)]
        if not pods:
            return None, target_pct, "no ready pods of the target"
        reports = {m.metadata.name: m for m in (await self.client.list(metrics_pb2.PodMetrics, namespace)).items}
        usage = request = 0
        try:
            for pod in pods:
                report = reports.get(pod.metadata.name)
                if report is None:
                    continue
                pod_request = sum(milli_value(c.resources.requests["cpu"]) for c in pod.spec.containers
                                  if "cpu" in c.resources.requests)
                if pod_request == 0:
                    return None, target_pct, (f"failed to get cpu utilization: missing request for cpu in "
                                              f"pod {pod.metadata.name}")
                usage += sum(milli_value(c.usage["cpu"]) for c in report.containers if "cpu" in c.usage)
                request += pod_request
        except QuantityError as err:
            return None, target_pct, f"failed to get cpu utilization: {err}"
        if request == 0:
            return None, target_pct, "failed to get cpu utilization: no metrics returned for the target's pods"
        return usage * 100.0 / request, target_pct, ""

    def _stabilize(self, key: str, hpa: HPA, current: int, recommendation: int) -> int:
        """Kubernetes' stabilizeRecommendationWithBehaviors: the most cautious value of each window."""
        behavior = hpa.spec.behavior
        down = float(behavior.scale_down.stabilization_window_seconds) \
            if behavior.scale_down.HasField("stabilization_window_seconds") else self.downscale_stabilization
        up = float(behavior.scale_up.stabilization_window_seconds) \
            if behavior.scale_up.HasField("stabilization_window_seconds") else 0.0
        now = time.monotonic()
        history = [(t, r) for t, r in self._recommendations.get(key, []) if now - t <= max(up, down)]
        history.append((now, recommendation))
        self._recommendations[key] = history
        up_floor = min(r for t, r in history if now - t <= up)
        down_ceiling = max(r for t, r in history if now - t <= down)
        if recommendation > current:
            return max(current, min(up_floor, recommendation))
        return min(current, max(down_ceiling, recommendation))

    async def _rescale(self, target: Any, replicas: int) -> None:
        for _attempt in range(5):
            new = copy(target)
            new.spec.replicas = replicas
            try:
                await self.client.update(new)
                return
            except ApiError:
                target = await self.client.get(type(target), target.metadata.name, target.metadata.namespace)
        raise ApiError(f"could not rescale {target.metadata.name}")

    async def _set_status(self, hpa: HPA, current: int, desired: int, utilization: float | None,
                          cond_type: str, cond_status: str, reason: str, message: str, *,
                          rescaled: bool = False) -> None:
        new = copy(hpa)
        status = new.status
        status.observed_generation = hpa.metadata.generation
        status.current_replicas = current
        status.desired_replicas = desired
        if rescaled:
            status.last_scale_time.GetCurrentTime()
        del status.current_metrics[:]
        if utilization is not None:
            metric = status.current_metrics.add(type="Resource")
            metric.resource.name = "cpu"
            metric.resource.current.average_utilization = round(utilization)
        cond = next((c for c in status.conditions if c.type == cond_type), None)
        if cond is None:
            cond = status.conditions.add(type=cond_type)
        if cond.status != cond_status:
            cond.last_transition_time.GetCurrentTime()
        cond.status, cond.reason, cond.message = cond_status, reason, message
        if status != hpa.status:
            try:
                await self.client.update_status(new)
            except NotFound:
                pass
