"""Issue 17: the kubelet evicts pods to keep its node's disk from filling up.

Given a node whose disk is a 256 MiB tmpfs of its own (containerd's images and
writable layers, the kubelet's logs and emptyDirs) and `--eviction-hard
nodefs.available<100Mi`:

- a pod using more than its containers' `limits.ephemeral-storage` together, or
  a container more than its own, is evicted with Kubernetes' message;
- when the test's own file leaves less than 100Mi, the node reports DiskPressure,
  and the pod using most beyond its request goes first (a critical pod using
  more is passed over, a pod within its request stays); once its space is back
  the condition clears;
- under DiskPressure a new pod is refused (Failed, reason Evicted), a critical
  one still runs and is never evicted, and new pods run again once space is freed.

Needs root (containerd, runc, a tmpfs).
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from client import Client
from nodeagent.kubelet.diskpressure import Observation, PressureTracker, Threshold, parse_eviction_hard
from nodeagent.kubelet.eviction import eviction_message, is_critical, over_limit, rank_for_disk
from nodeagent.kubelet.main import parse_args
from nodeagent.kubelet.podstorage import ContainerUsage, PodUsage, measure, pod_limit, pod_request
from nodeagent.kubelet.runtime import Runtime
from nodeagent.kubelet.volumes import Volumes
from proto import core_pb2
from proto.errors import NotFound
from proto.quantity import parse_quantity
from provision.localnode import LocalNode
from tests.kubelet_support import busybox, eventually, make_pod, node, pod_events, wait_pod

__all__ = ["node"]  # the module-scoped fixture, imported so pytest finds it here

MiB = 1024 * 1024
NODE_DISK_SIZE = 256 * MiB
KUBELET_SETTINGS = {"eviction_hard": {"nodefs.available": "100Mi"}, "eviction_pressure_transition_period": 3.0}
THRESHOLD = 100 * MiB


# ---------------------------------------------------------------- the rules, without a node


def _pod(name: str, *, request: str = "", limit: str = "", priority: int | None = None,
         priority_class: str = "") -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name = pod.metadata.uid = name
    container = pod.spec.containers.add(name="app")
    if request:
        container.resources.requests["ephemeral-storage"] = request
    if limit:
        container.resources.limits["ephemeral-storage"] = limit
    if priority is not None:
        pod.spec.priority = priority
    pod.spec.priority_class_name = priority_class
    return pod


def _used(rootfs: int, volumes: int = 0) -> PodUsage:
    return PodUsage({"app": ContainerUsage(rootfs=rootfs)}, volumes)


def test_pods_are_ranked_over_request_first_then_by_priority_then_by_use_beyond_request() -> None:
    within = _pod("within", request="64Mi")
    small, big, important = _pod("small"), _pod("big", request="1Mi"), _pod("important", priority=1000)
    usage = {"within": _used(20 * MiB), "small": _used(10 * MiB), "big": _used(40 * MiB),
             "important": _used(90 * MiB)}
    ranked = rank_for_disk([within, important, small, big], usage)
    assert [p.metadata.name for p in ranked] == ["big", "small", "important", "within"]
    # A pod with no figures at all goes first, as Kubernetes prefers evicting what it cannot measure.
    assert rank_for_disk([big, _pod("unmeasured")], usage)[0].metadata.name == "unmeasured"


def test_requests_and_limits_add_up_as_kubernetes_does() -> None:
    pod = _pod("p", limit="4Mi")
    pod.spec.containers.add(name="side").resources.limits["ephemeral-storage"] = "60Mi"
    pod.spec.init_containers.add(name="init").resources.requests["ephemeral-storage"] = "100Mi"
    assert pod_limit(pod) == 64 * MiB
    assert pod_request(pod) == 100 * MiB  # the init container runs alone and asks for more
    assert pod_request(_pod("q", limit="2Mi")) == 2 * MiB  # no request: the limit is the request
    assert pod_limit(_pod("free")) is None


def test_messages_are_kubernetes_words() -> None:
    pod = _pod("big", request="1Mi")
    message = eviction_message(pod, _used(40 * MiB), Threshold("nodefs.available", "10%"),
                               Observation(capacity=1000 * MiB, available=95 * MiB))
    assert message == ("The node was low on resource: ephemeral-storage. Threshold quantity: 100Mi, available: "
                       "95Mi. Container app was using 40Mi, request is 1Mi, has larger consumption of "
                       "ephemeral-storage. ")
    within = eviction_message(_pod("w", request="1G"), _used(MiB), Threshold("imagefs.available", "2Gi"),
                              Observation(capacity=10 * 1024 * MiB, available=MiB + 1))
    assert within == ("The node was low on resource: ephemeral-storage. Threshold quantity: 2Gi, available: "
                      "1048577. ")
    limited = _pod("l", limit="4Mi")
    limited.spec.containers.add(name="side").resources.limits["ephemeral-storage"] = "60Mi"
    assert over_limit(limited, PodUsage({"app": ContainerUsage(rootfs=5 * MiB)})) == \
        'Container app exceeded its local ephemeral storage limit "4Mi". '
    assert over_limit(limited, PodUsage({"app": ContainerUsage(rootfs=MiB)}, volumes=64 * MiB)) == \
        "Pod ephemeral local storage usage exceeds the total limit of containers 64Mi. "
    assert over_limit(limited, PodUsage({"app": ContainerUsage(rootfs=4 * MiB)})) is None


def test_pressure_lasts_until_the_minimum_reclaim_is_back_and_the_transition_period_passed() -> None:
    tracker = PressureTracker([Threshold("nodefs.available", "10%", "5%")], transition_period=30)

    def at(available_percent: int, now: float) -> list[Threshold]:
        return tracker.observe({"nodefs.available": Observation(100 * MiB, available_percent * MiB)}, now)

    assert at(12, 0) == [] and tracker.condition(0) == ""
    assert at(9, 10) and tracker.condition(10) == "nodefs.available<10%"
    assert at(14, 20)  # back over 10%, but not over 10% + 5%: still crossed
    assert at(16, 30) == []  # its minimum reclaim is back
    assert tracker.under_pressure(30) and tracker.condition(39) == "nodefs.available<10%"  # the transition period
    assert not tracker.under_pressure(50) and tracker.condition(50) == ""
    assert at(14, 60) == []  # not crossed again: the margin only holds a crossing that is going on


def test_critical_pods_are_the_system_priority_classes_and_static_pods() -> None:
    assert is_critical(_pod("a", priority_class="system-node-critical"))
    assert is_critical(_pod("b", priority_class="system-cluster-critical"))
    assert is_critical(_pod("c", priority=2_000_000_000))
    static = _pod("d")
    static.metadata.annotations["kubernetes.io/config.source"] = "file"
    assert is_critical(static)
    assert not is_critical(_pod("e", priority=1_000_000, priority_class="high"))


def test_the_eviction_flags() -> None:
    config = parse_args(["--node-name", "n", "--node-ip", "10.0.0.1", "--eviction-hard", "nodefs.available<1Gi",
                         "--eviction-minimum-reclaim", "nodefs.available=500Mi,imagefs.available=2%",
                         "--eviction-pressure-transition-period", "1m30s"])
    assert config.eviction_minimum_reclaim == {"nodefs.available": "500Mi", "imagefs.available": "2%"}
    assert config.eviction_pressure_transition_period == 90.0
    assert parse_eviction_hard(config.eviction_hard, config.eviction_minimum_reclaim) == [
        Threshold("nodefs.available", "1Gi", "500Mi")]
    for bad in (["--eviction-minimum-reclaim", "nodefs.available=lots"],
                ["--eviction-minimum-reclaim", "nodefs.available:1Gi"],
                ["--eviction-pressure-transition-period", "soon"]):
        with pytest.raises(SystemExit):
            parse_args(["--node-name", "n", "--node-ip", "10.0.0.1", *bad])
    with pytest.raises(ValueError, match=r"eviction-minimum-reclaim nodefs\.available: '-1Gi' is neither"):
        parse_eviction_hard({"nodefs.available": "1Gi"}, {"nodefs.available": "-1Gi"})


# ---------------------------------------------------------------- on a node


def writer(name: str, script: str, *, request: str = "", limit: str = "") -> core_pb2.Container:
    container = busybox(name, "sh", "-c", f"{script}; sleep 3600")
    if request:
        container.resources.requests["ephemeral-storage"] = request
    if limit:
        container.resources.limits["ephemeral-storage"] = limit
    return container


def with_scratch(pod: core_pb2.Pod) -> core_pb2.Pod:
    """An emptyDir `scratch` on the node's disk, mounted at /scratch in every container."""
    pod.spec.volumes.add(name="scratch").empty_dir.SetInParent()
    for container in pod.spec.containers:
        container.volume_mounts.add(name="scratch", mount_path="/scratch")
    return pod


def fill(mib: int, where: str = "/scratch") -> str:
    return f"dd if=/dev/zero of={where}/fill bs=1M count={mib}"


async def start(client: Client, namespace: str, *pods: core_pb2.Pod) -> list[core_pb2.Pod]:
    created = [await client.create(p, namespace=namespace) for p in pods]
    for p in pods:
        await wait_pod(client, p.metadata.name, namespace, lambda x: x.status.phase == "Running",
                       what=f"{p.metadata.name} Running")
    return created


async def usage_of(node: LocalNode, client: Client, pods: list[core_pb2.Pod]) -> dict[str, PodUsage]:
    """What the eviction manager measures for these pods now, by name."""
    runtime = Runtime(str(node.runtime.socket))
    try:
        volumes = Volumes(client, node.kubelet_config().root_dir)
        found = await measure(runtime, pods, pod_dir=volumes.pod_dir, volume_path=volumes.path)
    finally:
        await runtime.close()
    return {p.metadata.name: found[p.metadata.uid] for p in pods}


async def disk_pressure(client: Client, node: LocalNode) -> core_pb2.NodeCondition | None:
    found = await client.get(core_pb2.Node, node.name)
    return next((c for c in found.status.conditions if c.type == "DiskPressure"), None)


async def wait_disk_pressure(client: Client, node: LocalNode, status: str) -> core_pb2.NodeCondition:
    async def check() -> core_pb2.NodeCondition | None:
        condition = await disk_pressure(client, node)
        return condition if condition is not None and condition.status == status else None
    return await eventually(check, 30, what=f"DiskPressure={status}")


async def settled(node: LocalNode, pods: list[core_pb2.Pod]) -> None:
    """Until the node holds the directories of these pods only: earlier tests' pods have given their space
    back, so what the test's own file leaves available stays so."""
    root = Path(node.kubelet_config().root_dir) / "pods"
    wanted = {p.metadata.uid for p in pods}

    async def check() -> bool:
        return {d.name for d in await asyncio.to_thread(lambda: list(root.iterdir()))} <= wanted
    await eventually(check, 30, what="the node's disk settled")


def leave_available(node: LocalNode, available: int) -> Path:
    """The test's own file on the node's disk, sized so that `available` bytes are left."""
    st = os.statvfs(node.base)
    filler = node.base / "filler"
    size = (filler.stat().st_size if filler.exists() else 0) + st.f_bavail * st.f_frsize - available
    with open(filler, "ab") as f:
        f.truncate(0)
        os.posix_fallocate(f.fileno(), 0, size)
    return filler


async def delete_pods(client: Client, namespace: str, *names: str) -> None:
    for name in names:
        try:
            await client.delete(core_pb2.Pod, name, namespace, grace_period_seconds=0)
        except NotFound:
            pass


async def evicted_event(client: Client, name: str, namespace: str) -> str:
    async def check() -> str | None:
        return next((m for t, r, m in await pod_events(client, name, namespace) if (t, r) == ("Warning", "Evicted")),
                    None)
    return await eventually(check, 10, what=f"an Evicted event for {name}")


def failed(pod: core_pb2.Pod) -> bool:
    return pod.status.phase == "Failed"


async def test_a_pod_over_its_ephemeral_storage_limits_is_evicted(
        client: Client, namespace: str, node: LocalNode) -> None:
    # The pod's own limit is its containers' together: 4Mi, and it writes 8 MiB into an emptyDir.
    whole = with_scratch(make_pod("whole", node, writer("app", fill(8), limit="4Mi"), grace=0))
    # One container writes 8 MiB into its own writable layer, over its 4Mi; the pod's 68Mi is not reached.
    one = make_pod("one", node, writer("app", fill(8, "/tmp"), limit="4Mi"), writer("side", "true", limit="64Mi"),
                   grace=0)
    await client.create(whole, namespace=namespace)
    await client.create(one, namespace=namespace)
    try:
        pod = await wait_pod(client, "whole", namespace, failed, what="whole evicted")
        message = "Pod ephemeral local storage usage exceeds the total limit of containers 4Mi. "
        assert (pod.status.reason, pod.status.message) == ("Evicted", message)
        assert await evicted_event(client, "whole", namespace) == message
        # containerd measures writable layers every 10 s: this one shows a little later.
        pod = await wait_pod(client, "one", namespace, failed, timeout=40, what="one evicted")
        message = 'Container app exceeded its local ephemeral storage limit "4Mi". '
        assert (pod.status.reason, pod.status.message) == ("Evicted", message)
        assert all(s.state.HasField("terminated") for s in pod.status.container_statuses)
        assert await evicted_event(client, "one", namespace) == message
    finally:
        await delete_pods(client, namespace, "whole", "one")


async def test_under_disk_pressure_the_pod_most_over_its_request_goes_first(
        client: Client, namespace: str, node: LocalNode) -> None:
    critical = with_scratch(make_pod("critical", node, writer("app", fill(50)), grace=0))
    critical.spec.priority_class_name = "system-node-critical"  # uses the most of all, but is never evicted
    # The hog writes into its own writable layer: evicted, its container goes and gives the space back.
    hog = make_pod("hog", node, writer("app", fill(40, "/tmp"), request="1Mi"), grace=0)
    small = with_scratch(make_pod("small", node, writer("app", fill(10)), grace=0))
    within = with_scratch(make_pod("within", node, writer("app", fill(20), request="64Mi"), grace=0))
    pods = await start(client, namespace, critical, hog, small, within)
    filler: Path | None = None
    try:
        # Every write done and measured (containerd's writable layer figure included) before the disk fills.
        async def written() -> dict[str, PodUsage] | None:
            used = await usage_of(node, client, pods)
            done = (used["critical"].volumes >= 50 * MiB and used["hog"].containers["app"].rootfs >= 40 * MiB
                    and used["small"].volumes >= 10 * MiB and used["within"].volumes >= 20 * MiB)
            return used if done else None
        await eventually(written, 40, interval=0.5, what="the pods' writes measured")
        assert (await disk_pressure(client, node)).status == "False"  # type: ignore[union-attr]

        await settled(node, pods)
        filler = await asyncio.to_thread(leave_available, node, THRESHOLD - 5 * MiB)
        condition = await wait_disk_pressure(client, node, "True")
        assert (condition.reason, condition.message) == ("KubeletHasDiskPressure",
                                                         "kubelet has disk pressure: nodefs.available<100Mi")
        evicted = await wait_pod(client, "hog", namespace, failed, what="hog evicted")
        assert evicted.status.reason == "Evicted"
        match = re.fullmatch(r"The node was low on resource: ephemeral-storage\. Threshold quantity: 100Mi, "
                             r"available: (\S+)\. Container app was using (\S+), request is 1Mi, has larger "
                             r"consumption of ephemeral-storage\. ", evicted.status.message)
        assert match, evicted.status.message
        assert parse_quantity(match.group(1)) < THRESHOLD and parse_quantity(match.group(2)) >= 40 * MiB
        assert await evicted_event(client, "hog", namespace) == evicted.status.message
        assert any(c.type == "DisruptionTarget" and c.reason == "TerminationByKubelet"
                   for c in evicted.status.conditions)

        # Its 40 MiB were the shortfall: once its exited container is removed (the node-level reclaim of
        # the next round) the pressure ends, and after the transition period so does the condition, with
        # no other pod evicted.
        await wait_disk_pressure(client, node, "False")
        for name in ("critical", "small", "within"):
            assert (await client.get(core_pb2.Pod, name, namespace)).status.phase == "Running", name
    finally:
        if filler is not None:
            filler.unlink()
        await delete_pods(client, namespace, "critical", "hog", "small", "within")


async def test_under_disk_pressure_new_pods_are_refused_but_critical_ones(
        client: Client, namespace: str, node: LocalNode) -> None:
    await wait_disk_pressure(client, node, "False")
    await settled(node, [])
    # Nothing here can be evicted to relieve this: the pressure lasts until the test frees the space.
    filler = await asyncio.to_thread(leave_available, node, THRESHOLD - 5 * MiB)
    try:
        await wait_disk_pressure(client, node, "True")
        await client.create(make_pod("late", node, busybox("app", "sleep", "3600"), grace=0), namespace=namespace)
        refused = await wait_pod(client, "late", namespace, failed, what="late refused")
        message = "The node had condition: [DiskPressure]. "
        assert (refused.status.reason, refused.status.message) == ("Evicted", "Pod was rejected: " + message)
        assert not refused.status.container_statuses  # nothing of it ever ran
        assert await evicted_event(client, "late", namespace) == message

        keeper = make_pod("keeper", node, writer("app", fill(1, "/tmp")), grace=0)
        keeper.spec.priority_class_name = "system-node-critical"
        await start(client, namespace, keeper)
        await asyncio.sleep(3)  # several monitoring periods under pressure, and the critical pod stays
        assert (await client.get(core_pb2.Pod, "keeper", namespace)).status.phase == "Running"

        # A kubelet starting on a full disk refuses a new pod from its first sync on (before its eviction
        # manager's first round), and adopts the critical pod it finds running.
        await asyncio.to_thread(node.stop_kubelet)
        await client.create(make_pod("meanwhile", node, busybox("app", "sleep", "3600"), grace=0),
                            namespace=namespace)
        await asyncio.to_thread(node.start_kubelet)
        refused = await wait_pod(client, "meanwhile", namespace, failed, what="meanwhile refused")
        assert refused.status.message == "Pod was rejected: " + message
        assert (await client.get(core_pb2.Pod, "keeper", namespace)).status.phase == "Running"
    finally:
        filler.unlink()
    await wait_disk_pressure(client, node, "False")
    await start(client, namespace, make_pod("after", node, busybox("app", "sleep", "3600"), grace=0))
    await delete_pods(client, namespace, "late", "keeper", "meanwhile", "after")
