"""Self-healing and clean-up, as a user sees them.

Given a controller manager with short timings and hollow nodes: a node that
stops renewing its lease is marked Unknown and tainted, and its pods come
back on the other nodes; deleting an owner takes its dependents with it
(background, foreground) or leaves them (orphan); deleting a namespace empties
it and then removes it; Services get the ready pods' addresses; the HPA
scales 1 -> 4 under load and back after its window; a controller manager
killed mid-rollout and restarted finishes the rollout with nothing duplicated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bench.hollow_kubelet import HollowCluster
from client import Client
from client.retry import update_fresh
from proto import apps_pb2, autoscaling_pb2, coordination_pb2, core_pb2, metrics_pb2
from proto.errors import NotFound
from tests.controllers_support import (  # noqa: F401 - fixtures
    ControllerManager,
    controller_manager_fixture,
    deployment,
    eventually,
    hollow_fixture,
    live_pods,
    mutate,
    ready,
    set_image,
)


async def ready_pods(client: Client, namespace: str, app: str, count: int) -> list[core_pb2.Pod]:
    async def check() -> list[core_pb2.Pod] | None:
        pods = await live_pods(client, namespace, f"app={app}")
        return pods if len(pods) == count and all(ready(p) for p in pods) else None

    return await eventually(check, f"{count} ready pods of {app}")


async def test_a_dead_nodes_pods_come_back_elsewhere(client: Client, namespace: str, hollow: HollowCluster) -> None:
    await client.create(deployment("web", namespace, replicas=6))
    pods = await ready_pods(client, namespace, "web", 6)
    dead = hollow.node_names[0]
    assert any(p.spec.node_name == dead for p in pods)
    hollow.kill(dead)

    async def moved() -> bool:
        pods = await live_pods(client, namespace, "app=web")
        return len(pods) == 6 and all(ready(p) and p.spec.node_name != dead for p in pods)

    await eventually(moved, "pods recreated on live nodes", timeout=20)
    node = await client.get(core_pb2.Node, dead)
    assert [(t.key, t.effect) for t in node.spec.taints] == [("node.kubernetes.io/unreachable", "NoExecute")]
    assert next(c for c in node.status.conditions if c.type == "Ready").status == "Unknown"
    events = (await client.list(core_pb2.Event, "default")).items
    assert any(e.reason == "NodeNotReady" and e.involved_object.name == dead for e in events)
    assert any(e.reason == "TaintManagerEviction" for e in (await client.list(core_pb2.Event, namespace)).items)

    hollow.revive(dead)

    async def recovered() -> bool:
        node = await client.get(core_pb2.Node, dead)
        return not node.spec.taints

    await eventually(recovered, "the unreachable taint removed")
    assert node.spec.pod_cidr.startswith("10.244.")  # node IPAM gave it its slice


async def test_background_foreground_and_orphan_deletion(client: Client, namespace: str,
                                                         hollow: HollowCluster) -> None:
    for name in ("bg", "fg", "orphan"):
        await client.create(deployment(name, namespace, replicas=2))
    for name in ("bg", "fg", "orphan"):
        await ready_pods(client, namespace, name, 2)

    await client.delete(apps_pb2.Deployment, "bg", namespace)
    fg = await client.delete(apps_pb2.Deployment, "fg", namespace, propagation_policy="Foreground")
    assert "foregroundDeletion" in fg.metadata.finalizers
    await client.delete(apps_pb2.Deployment, "orphan", namespace, propagation_policy="Orphan")

    async def collected(app: str) -> bool:
        rss = (await client.list(apps_pb2.ReplicaSet, namespace, label_selector=f"app={app}")).items
        pods = (await client.list(core_pb2.Pod, namespace, label_selector=f"app={app}")).items
        try:
            await client.get(apps_pb2.Deployment, app, namespace)
            return False
        except NotFound:
            return not rss and not pods

    await eventually(lambda: collected("bg"), "background deletion to leave nothing")
    await eventually(lambda: collected("fg"), "foreground deletion to leave nothing")

    async def orphaned() -> bool:
        rss = (await client.list(apps_pb2.ReplicaSet, namespace, label_selector="app=orphan")).items
        try:
            await client.get(apps_pb2.Deployment, "orphan", namespace)
            return False
        except NotFound:
            return len(rss) == 1 and not rss[0].metadata.owner_references

    await eventually(orphaned, "the orphaned ReplicaSet to stay, unowned")
    await asyncio.sleep(0.5)
    assert len(await live_pods(client, namespace, "app=orphan")) == 2


async def test_deleting_a_namespace_empties_and_removes_it(client: Client, namespace: str,
                                                          hollow: HollowCluster) -> None:
    await client.create(deployment("web", namespace, replicas=3))
    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    cm.metadata.name, cm.metadata.namespace = "settings", namespace
    await client.create(cm)
    await ready_pods(client, namespace, "web", 3)
    await client.delete(core_pb2.Namespace, namespace)

    async def gone() -> bool:
        try:
            await client.get(core_pb2.Namespace, namespace)
            return False
        except NotFound:
            return True

    await eventually(gone, "the namespace removed")
    for cls in (core_pb2.Pod, apps_pb2.ReplicaSet, apps_pb2.Deployment, core_pb2.ConfigMap):
        assert not (await client.list(cls, namespace)).items


async def test_endpoints_follow_ready_pods(client: Client, namespace: str, hollow: HollowCluster) -> None:
    d = deployment("web", namespace, replicas=3)
    d.spec.template.spec.containers[0].ports.add(name="http", container_port=8080)
    await client.create(d)
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = "web", namespace
    svc.spec.selector["app"] = "web"
    svc.spec.ports.add(name="http", port=80, target_port="http")
    await client.create(svc)
    pods = await ready_pods(client, namespace, "web", 3)

    async def endpoints() -> bool:
        try:
            ep = await client.get(core_pb2.Endpoints, "web", namespace)
        except NotFound:
            return False
        ips = sorted(a.ip for s in ep.subsets for a in s.addresses)
        ports = [(p.name, p.port) for s in ep.subsets for p in s.ports]
        pods = await live_pods(client, namespace, "app=web")
        return ips == sorted(p.status.pod_ip for p in pods) and set(ports) == {("http", 8080)}

    await eventually(endpoints, "Endpoints with the three pods' IPs on port 8080")
    await client.delete(core_pb2.Pod, pods[0].metadata.name, namespace)
    await eventually(endpoints, "Endpoints after a pod was replaced")


async def report_usage(client: Client, namespace: str, cpu: str) -> None:
    for pod in await live_pods(client, namespace, "app=web"):
        m = metrics_pb2.PodMetrics(api_version="metrics.k8s.io/v1beta1", kind="PodMetrics")
        m.metadata.name, m.metadata.namespace = pod.metadata.name, namespace
        m.timestamp.GetCurrentTime()
        m.window = "10s"
        m.containers.add(name="app", usage={"cpu": cpu, "memory": "10Mi"})
        await client.create(m)


async def test_hpa_scales_up_under_load_and_back_after_the_window(client: Client, namespace: str,
                                                                  hollow: HollowCluster) -> None:
    await client.create(deployment("web", namespace, replicas=1))
    await ready_pods(client, namespace, "web", 1)
    hpa = autoscaling_pb2.HorizontalPodAutoscaler(api_version="autoscaling/v2", kind="HorizontalPodAutoscaler")
    hpa.metadata.name, hpa.metadata.namespace = "web", namespace
    hpa.spec.scale_target_ref.api_version, hpa.spec.scale_target_ref.kind = "apps/v1", "Deployment"
    hpa.spec.scale_target_ref.name = "web"
    hpa.spec.min_replicas, hpa.spec.max_replicas = 1, 4
    metric = hpa.spec.metrics.add(type="Resource")
    metric.resource.name, metric.resource.target.type = "cpu", "Utilization"
    metric.resource.target.average_utilization = 50
    await client.create(hpa)

    async def replicas_under(cpu: str, want: int) -> bool:
        await report_usage(client, namespace, cpu)
        return (await client.get(apps_pb2.Deployment, "web", namespace)).spec.replicas == want

    await eventually(lambda: replicas_under("200m", 4), "HPA scale-up to 4", interval=0.3)
    await ready_pods(client, namespace, "web", 4)
    started = time.monotonic()
    await eventually(lambda: replicas_under("5m", 1), "HPA scale-down to 1", timeout=20, interval=0.3)
    assert time.monotonic() - started >= 2.0, "scaled down inside the stabilisation window"
    await ready_pods(client, namespace, "web", 1)
    reasons = [e.reason for e in (await client.list(core_pb2.Event, namespace)).items
               if e.involved_object.kind == "HorizontalPodAutoscaler"]
    assert reasons.count("SuccessfulRescale") >= 2
    status = (await client.get(autoscaling_pb2.HorizontalPodAutoscaler, "web", namespace)).status
    assert status.desired_replicas == 1


async def lease_holder(client: Client) -> str:
    lease = await client.get(coordination_pb2.Lease, "flotilla-controller-manager", "kube-system")
    return lease.spec.holder_identity


async def test_sigkill_mid_rollout_then_restart_converges(client: Client, namespace: str, hollow: HollowCluster,
                                                          controller_manager: ControllerManager) -> None:
    await client.create(deployment("web", namespace, replicas=10, max_surge="3", max_unavailable="0"))
    await ready_pods(client, namespace, "web", 10)
    first = controller_manager.process
    assert first is not None
    await eventually(lambda: _holder_pid_is(client, first.pid), f"the first controller manager ({first.pid}) to lead")
    # A second copy stands by while the first leads.
    standby = controller_manager.start()
    await asyncio.sleep(1.0)
    assert f"_{first.pid}_" in await lease_holder(client)
    await mutate(client, apps_pb2.Deployment, "web", namespace, set_image("nginx:1.26"))

    async def mid_rollout() -> bool:
        d = await client.get(apps_pb2.Deployment, "web", namespace)
        return 0 < d.status.updated_replicas < 10

    await eventually(mid_rollout, "the rollout under way", interval=0.02)
    first.kill()  # SIGKILL
    await eventually(lambda: _holder_pid_is(client, standby.pid), "the standby to take over", timeout=15)
    standby.kill()  # and once more, then a fresh start
    controller_manager.start()

    async def finished() -> bool:
        pods = (await client.list(core_pb2.Pod, namespace, label_selector="app=web")).items
        d = await client.get(apps_pb2.Deployment, "web", namespace)
        return (len(pods) == 10 and all(p.spec.containers[0].image == "nginx:1.26" and ready(p) for p in pods)
                and d.status.updated_replicas == 10 and d.status.replicas == 10)

    await eventually(finished, "the rollout to finish after the restarts", timeout=30)
    rss = (await client.list(apps_pb2.ReplicaSet, namespace)).items
    assert sorted(rs.spec.replicas for rs in rss) == [0, 10], "duplicate ReplicaSets"
    await asyncio.sleep(1.0)
    assert len((await client.list(core_pb2.Pod, namespace)).items) == 10, "surplus pods"


async def _holder_pid_is(client: Client, pid: int) -> str | None:
    try:
        holder = await lease_holder(client)
    except NotFound:
        return None
    return holder if f"_{pid}_" in holder else None


async def test_pods_of_a_vanished_node_are_collected(client: Client, namespace: str,
                                                     controller_manager: ControllerManager) -> None:
    controller_manager.ensure_running()
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name, pod.metadata.namespace = "stray", namespace
    pod.spec.node_name = f"{namespace}-ghost"  # no such node, so no kubelet will ever finish it
    pod.spec.containers.add(name="app", image="nginx")
    await client.create(pod)

    async def collected() -> bool:
        try:
            await client.get(core_pb2.Pod, "stray", namespace)
            return False
        except NotFound:
            return True

    await eventually(collected, "the pod on a missing node force-deleted")


async def test_a_node_under_disk_pressure_is_tainted_noschedule_while_it_lasts(
        client: Client, namespace: str, hollow: HollowCluster) -> None:
    name = hollow.node_names[1]

    def pressure(status: str) -> Callable[[core_pb2.Node], None]:
        def change(node: core_pb2.Node) -> None:
            cond = next((c for c in node.status.conditions if c.type == "DiskPressure"), None)
            if cond is None:
                cond = node.status.conditions.add(type="DiskPressure")
            cond.status = status
            cond.reason = "KubeletHasDiskPressure" if status == "True" else "KubeletHasNoDiskPressure"
        return change

    async def taints() -> list[tuple[str, str]]:
        return [(t.key, t.effect) for t in (await client.get(core_pb2.Node, name)).spec.taints]

    await update_fresh(client, core_pb2.Node, name, "", pressure("True"), status=True)

    async def tainted() -> bool:
        return await taints() == [("node.kubernetes.io/disk-pressure", "NoSchedule")]

    await eventually(tainted, "the disk-pressure NoSchedule taint")
    await update_fresh(client, core_pb2.Node, name, "", pressure("False"), status=True)

    async def untainted() -> bool:
        return await taints() == []

    await eventually(untainted, "the taint gone with the pressure")
