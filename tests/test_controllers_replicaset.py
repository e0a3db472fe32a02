"""The ReplicaSet and Deployment controllers, as a user sees them.

Given a controller manager, hollow nodes (kubelets that mark pods Running and
Ready) and a trivial binder: when I scale, pods follow exactly; when a pod
dies, another takes its place; a rollout never drops below the pods it
promised; a rollback brings the old template back.
"""

from __future__ import annotations

import asyncio

from bench.hollow_kubelet import HollowCluster
from client import Client
from proto import apps_pb2, core_pb2
from tests.controllers_support import (  # noqa: F401 - fixtures
    controller_manager_fixture,
    deployment,
    eventually,
    hollow_fixture,
    live_pods,
    mutate,
    ready,
    set_image,
)


async def scale(client: Client, name: str, namespace: str, replicas: int) -> None:
    def change(d: apps_pb2.Deployment) -> None:
        d.spec.replicas = replicas

    await mutate(client, apps_pb2.Deployment, name, namespace, change)


async def wait_ready_count(client: Client, namespace: str, app: str, count: int, timeout: float = 20.0) -> None:
    async def check() -> bool:
        pods = await live_pods(client, namespace, f"app={app}")
        all_pods = (await client.list(core_pb2.Pod, namespace, label_selector=f"app={app}")).items
        return len(pods) == count and len(all_pods) == count and all(ready(p) for p in pods)

    await eventually(check, f"exactly {count} ready pods of {app}", timeout)


async def test_scale_1_to_10_to_3_gives_exact_counts(client: Client, namespace: str, hollow: HollowCluster) -> None:
    await client.create(deployment("web", namespace, replicas=1))
    await wait_ready_count(client, namespace, "web", 1)
    await scale(client, "web", namespace, 10)
    await wait_ready_count(client, namespace, "web", 10)
    await scale(client, "web", namespace, 3)
    await wait_ready_count(client, namespace, "web", 3)

    async def status_settled() -> bool:
        d = await client.get(apps_pb2.Deployment, "web", namespace)
        return d.status.ready_replicas == 3 and d.status.available_replicas == 3 and d.status.replicas == 3

    await eventually(status_settled, "deployment status 3/3")
    rss = (await client.list(apps_pb2.ReplicaSet, namespace)).items
    assert len(rss) == 1
    assert rss[0].metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    reasons = {e.reason for e in (await client.list(core_pb2.Event, namespace)).items}
    assert {"ScalingReplicaSet", "SuccessfulCreate", "SuccessfulDelete"} <= reasons


async def test_a_deleted_pod_is_replaced(client: Client, namespace: str, hollow: HollowCluster) -> None:
    await client.create(deployment("web", namespace, replicas=3))
    await wait_ready_count(client, namespace, "web", 3)
    victim = (await live_pods(client, namespace))[0]
    await client.delete(core_pb2.Pod, victim.metadata.name, namespace)
    await wait_ready_count(client, namespace, "web", 3)
    names = {p.metadata.name for p in await live_pods(client, namespace)}
    assert victim.metadata.name not in names


async def test_replicaset_adopts_orphans_and_releases_strays(client: Client, namespace: str,
                                                            hollow: HollowCluster) -> None:
    orphan = core_pb2.Pod(api_version="v1", kind="Pod")
    orphan.metadata.name, orphan.metadata.namespace = "orphan", namespace
    orphan.metadata.labels["app"] = "cache"
    orphan.spec.containers.add(name="app", image="redis")
    await client.create(orphan)
    rs = apps_pb2.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    rs.metadata.name, rs.metadata.namespace = "cache", namespace
    rs.spec.replicas = 2
    rs.spec.selector.match_labels["app"] = "cache"
    rs.spec.template.metadata.labels["app"] = "cache"
    rs.spec.template.spec.containers.add(name="app", image="redis")
    await client.create(rs)
    await wait_ready_count(client, namespace, "cache", 2)
    adopted = await client.get(core_pb2.Pod, "orphan", namespace)
    assert adopted.metadata.owner_references[0].name == "cache"
    # Relabelled, it is released and replaced.
    def relabel(pod: core_pb2.Pod) -> None:
        pod.metadata.labels["app"] = "other"

    await mutate(client, core_pb2.Pod, "orphan", namespace, relabel)
    await wait_ready_count(client, namespace, "cache", 2)

    async def released() -> bool:
        return not (await client.get(core_pb2.Pod, "orphan", namespace)).metadata.owner_references

    await eventually(released, "the relabelled pod released")


async def test_rolling_update_with_max_unavailable_0_keeps_10_ready(client: Client, namespace: str,
                                                                    hollow: HollowCluster) -> None:
    await client.create(deployment("web", namespace, replicas=10, max_unavailable="0", max_surge="3"))
    await wait_ready_count(client, namespace, "web", 10)
    lowest = 10
    done = asyncio.Event()

    async def watch_ready() -> None:
        nonlocal lowest
        while not done.is_set():
            pods = await live_pods(client, namespace, "app=web")
            lowest = min(lowest, sum(ready(p) for p in pods))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch_ready())
    await mutate(client, apps_pb2.Deployment, "web", namespace, set_image("nginx:1.26"))

    async def rolled_out() -> bool:
        pods = await live_pods(client, namespace, "app=web")
        d = await client.get(apps_pb2.Deployment, "web", namespace)
        return (len(pods) == 10 and all(p.spec.containers[0].image == "nginx:1.26" and ready(p) for p in pods)
                and d.status.updated_replicas == 10 and d.status.available_replicas == 10)

    await eventually(rolled_out, "rollout to nginx:1.26", timeout=30)
    done.set()
    await watcher
    assert lowest >= 10, f"ready pods dropped to {lowest}"
    rss = {rs.metadata.annotations["deployment.kubernetes.io/revision"]: rs.spec.replicas
           for rs in (await client.list(apps_pb2.ReplicaSet, namespace)).items}
    assert rss == {"1": 0, "2": 10}


async def test_rollout_undo_restores_the_previous_template(client: Client, namespace: str,
                                                           hollow: HollowCluster) -> None:
    from kctl.commands.workloads import rollout_undo

    await client.create(deployment("web", namespace, replicas=2, image="nginx:1.25"))
    await wait_ready_count(client, namespace, "web", 2)
    await mutate(client, apps_pb2.Deployment, "web", namespace, set_image("nginx:1.26"))

    async def image_is(image: str) -> bool:
        pods = await live_pods(client, namespace, "app=web")
        dep = await client.get(apps_pb2.Deployment, "web", namespace)
        return (len(pods) == 2 and all(p.spec.containers[0].image == image and ready(p) for p in pods)
                and dep.status.updated_replicas == 2)

    await eventually(lambda: image_is("nginx:1.26"), "rollout to 1.26")
    message = await rollout_undo(client, "web", namespace, to_revision=0)
    assert message == "deployment.apps/web rolled back"
    await eventually(lambda: image_is("nginx:1.25"), "rollback to 1.25")
    rss = (await client.list(apps_pb2.ReplicaSet, namespace)).items
    assert len(rss) == 2  # the old ReplicaSet came back; no third one
    revisions = {rs.spec.template.spec.containers[0].image: rs.metadata.annotations[
        "deployment.kubernetes.io/revision"] for rs in rss}
    assert revisions == {"nginx:1.25": "3", "nginx:1.26": "2"}


async def test_recreate_replaces_all_pods(client: Client, namespace: str, hollow: HollowCluster) -> None:
    await client.create(deployment("web", namespace, replicas=3, strategy="Recreate"))
    await wait_ready_count(client, namespace, "web", 3)
    await mutate(client, apps_pb2.Deployment, "web", namespace, set_image("nginx:1.26"))

    async def done() -> bool:
        pods = await live_pods(client, namespace, "app=web")
        return len(pods) == 3 and all(p.spec.containers[0].image == "nginx:1.26" and ready(p) for p in pods)

    await eventually(done, "recreate to 1.26")


async def test_progress_deadline_sets_progressing_false(client: Client, namespace: str,
                                                        hollow: HollowCluster) -> None:
    for node in hollow.node_names:
        hollow.kill(node)  # nothing will ever become ready
    d = deployment("stuck", namespace, replicas=1)
    d.spec.progress_deadline_seconds = 1
    await client.create(d)

    async def timed_out() -> bool:
        dep = await client.get(apps_pb2.Deployment, "stuck", namespace)
        return any(c.type == "Progressing" and c.status == "False" and c.reason == "ProgressDeadlineExceeded"
                   for c in dep.status.conditions)

    await eventually(timed_out, "Progressing=False", timeout=10)


async def test_scaling_mid_rollout_shares_the_change_out(client: Client, namespace: str,
                                                         hollow: HollowCluster) -> None:
    hollow.unready_images.add("nginx:broken")
    await client.create(deployment("web", namespace, replicas=10, max_surge="3", max_unavailable="0"))
    await wait_ready_count(client, namespace, "web", 10)
    await mutate(client, apps_pb2.Deployment, "web", namespace, set_image("nginx:broken"))

    async def sizes() -> dict[str, int] | None:
        rss = (await client.list(apps_pb2.ReplicaSet, namespace)).items
        by_image = {rs.spec.template.spec.containers[0].image: rs.spec.replicas for rs in rss}
        return by_image if len(by_image) == 2 else None

    async def stuck() -> bool:
        return await sizes() == {"nginx:1.25": 10, "nginx:broken": 3}

    await eventually(stuck, "the rollout stuck at 10 old + 3 new (new pods never ready)")
    await scale(client, "web", namespace, 20)

    async def settled() -> dict[str, int] | None:
        got = await sizes()
        return got if got is not None and sum(got.values()) == 23 else None

    # 20 replicas + 3 surge: the 10 extra pods go to both ReplicaSets in proportion to their size.
    assert await eventually(settled, "scaling to 20 + 3") == {"nginx:1.25": 18, "nginx:broken": 5}
    # The floor holds: old pods are not scaled down while the new ones are not available.
    await asyncio.sleep(0.5)
    assert len([p for p in await live_pods(client, namespace, "app=web") if ready(p)]) == 18


async def test_a_scale_that_leaves_the_total_unchanged_does_not_stall_the_rollout(
        client: Client, namespace: str, hollow: HollowCluster) -> None:
    # Mid-rollout at 2 old + 1 new pods for replicas=3 (surge 1), `replicas` drops to 2: the
    # 3 pods are exactly what 2 + surge 1 allows, so nothing is resized, yet both ReplicaSets
    # must learn the new desired count, or every sync after is a "scaling event" again and
    # the rollout stops at "1 out of 2 new replicas have been updated" (kubectl's words).
    d = deployment("web", namespace, replicas=2, max_surge="25%", max_unavailable="25%")
    d.spec.paused = True
    d = await client.create(d)
    for name, image, replicas, revision in (("web-old", "nginx:1.24", 2, "1"), ("web-new", "nginx:1.25", 1, "2")):
        rs = apps_pb2.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
        rs.metadata.name, rs.metadata.namespace = name, namespace
        rs.spec.template.CopyFrom(d.spec.template)
        rs.spec.template.spec.containers[0].image = image
        rs.spec.template.metadata.labels["pod-template-hash"] = name
        rs.metadata.labels.update(rs.spec.template.metadata.labels)
        rs.spec.selector.match_labels.update(rs.spec.template.metadata.labels)
        rs.spec.replicas = replicas
        rs.metadata.annotations.update({"deployment.kubernetes.io/revision": revision,
                                        "deployment.kubernetes.io/desired-replicas": "3",
                                        "deployment.kubernetes.io/max-replicas": "4"})
        rs.metadata.owner_references.add(api_version="apps/v1", kind="Deployment", name="web",
                                         uid=d.metadata.uid, controller=True, block_owner_deletion=True)
        await client.create(rs)
    await wait_ready_count(client, namespace, "web", 3)

    def resume(dep: apps_pb2.Deployment) -> None:
        dep.spec.paused = False

    await mutate(client, apps_pb2.Deployment, "web", namespace, resume)

    async def rolled_out() -> bool:
        got = await client.get(apps_pb2.Deployment, "web", namespace)
        sizes = {rs.metadata.name: rs.spec.replicas for rs in (await client.list(apps_pb2.ReplicaSet, namespace)).items}
        return got.status.updated_replicas == 2 and got.status.available_replicas == 2 and sizes == {
            "web-old": 0, "web-new": 2}

    await eventually(rolled_out, "the rollout to finish at 2 new, 0 old")


async def test_min_ready_seconds_delays_availability(client: Client, namespace: str,
                                                     hollow: HollowCluster) -> None:
    d = deployment("web", namespace, replicas=2)
    d.spec.min_ready_seconds = 1
    await client.create(d)
    await wait_ready_count(client, namespace, "web", 2)
    rs = (await client.list(apps_pb2.ReplicaSet, namespace)).items[0]
    assert rs.spec.min_ready_seconds == 1

    async def available() -> bool:
        got = await client.get(apps_pb2.Deployment, "web", namespace)
        return got.status.available_replicas == 2

    await eventually(available, "2 available after minReadySeconds", timeout=10)
