"""apps/v1 StatefulSets, as a user sees them.

Given a controller manager, the real scheduler (in this process, seeing only this
test's nodes) and hollow kubelets for three nodes: a StatefulSet of 2 with a
volumeClaimTemplate on a local-path class creates web-0, and web-1 only once
web-0 is Ready; each pod is named for its ordinal, has its hostname and the
Service as subdomain, and mounts its own claim `www-web-<i>`, bound to a volume
on the pod's node; scaling to 1 removes web-1 and keeps its claim (Retain), and
a deleted web-0 comes back with the same claim on the same node. With Parallel
management every pod is created at once (even never Ready), and claims with
whenScaled/whenDeleted Delete go with their pods and with the set. A partition
rolling update touches only the ordinals at or above it, from the top; OnDelete
replaces only deleted pods; revisions are ControllerRevisions. Bad StatefulSets
are refused with Kubernetes' messages; kctl and real kubectl get, scale and read
rollout status over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench import hollow
from bench.hollow_kubelet import HollowCluster
from client import Client
from controlplane.scheduler import config as configuration
from controlplane.scheduler.scheduler import Scheduler
from kctl.main import cli
from proto import apps_pb2, core_pb2, manifest, storage_pb2
from proto.errors import Invalid, NotFound
from proto.wellknown import LOCAL_PATH_PROVISIONER
from provision.processes import ApiServer
from tests.controllers_support import ControllerManager, eventually, mutate
from tests.controllers_support import controller_manager_fixture as controller_manager_fixture
from tests.kubectl_support import kubectl

POOL = "statefulsets.flotilla.dev/pool"  # each test's nodes carry its namespace here
BUSYBOX = "registry.k8s.io/busybox:1.36"
NEVER_READY = "registry.k8s.io/never-ready:1"


class StatefulNodes(HollowCluster):
    """Hollow kubelets on labelled nodes that leave binding to the real scheduler (VolumeBinding included)."""

    def __init__(self, client: Client, namespace: str) -> None:
        super().__init__(client, [namespace], nodes=3, prefix=namespace)
        self.unready_images.add(NEVER_READY)

    async def start(self) -> None:
        for name in self.node_names:
            await self.client.create(hollow.node(name, cpu="64", memory="256Gi", pods=1100,
                                                 labels={POOL: self.namespaces[0]}))
        await super().start()

    async def sync(self, key: str) -> None:
        pod = self.informers[0].store.get(key)
        if pod is not None and not pod.spec.node_name:
            return  # unbound: the scheduler's to place
        await super().sync(key)


@pytest.fixture(name="nodes")
async def nodes_fixture(client: Client, namespace: str,
                        controller_manager: ControllerManager) -> AsyncIterator[StatefulNodes]:
    controller_manager.ensure_running()
    cluster = StatefulNodes(client, namespace)
    await cluster.start()
    scheduler = Scheduler(client, configuration.SchedulerConfig(profiles=[configuration.Profile()]),
                          node_selector=f"{POOL}={namespace}", seed=5)
    task = asyncio.create_task(scheduler.run())
    await asyncio.wait_for(scheduler.synced.wait(), 10)
    yield cluster
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await cluster.stop()


@pytest.fixture(name="local_class")
async def local_class_fixture(client: Client, namespace: str) -> AsyncIterator[str]:
    """A local-path class of this test's own (the controller manager's provisioner serves it)."""
    name = f"{namespace}-local"
    sc = manifest.from_dict({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
                             "provisioner": LOCAL_PATH_PROVISIONER, "volumeBindingMode": "WaitForFirstConsumer"})
    await client.create(sc)
    yield name
    with contextlib.suppress(NotFound):
        await client.delete(storage_pb2.StorageClass, name)


# ---------------------------------------------------------------- builders and looks


def stateful_set(name: str, namespace: str, *, replicas: int = 2, image: str = BUSYBOX, service: str = "web-svc",
                 storage_class: str = "", policy: str = "", strategy: str = "", partition: int | None = None,
                 retention: tuple[str, str] | None = None) -> apps_pb2.StatefulSet:
    body: dict[str, object] = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas, "serviceName": service, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": image}]}}}}
    spec: dict[str, object] = body["spec"]  # type: ignore[assignment]
    if storage_class:
        spec["volumeClaimTemplates"] = [{"metadata": {"name": "www"},
                                         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                                                  "resources": {"requests": {"storage": "1Gi"}}}}]
        spec["template"]["spec"]["containers"][0]["volumeMounts"] = [  # type: ignore[index]
            {"name": "www", "mountPath": "/data"}]
    if policy:
        spec["podManagementPolicy"] = policy
    if strategy:
        spec["updateStrategy"] = {"type": strategy}
    if partition is not None:
        spec["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}}
    if retention:
        spec["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": retention[0], "whenScaled": retention[1]}
    sts = manifest.from_dict(body)
    assert isinstance(sts, apps_pb2.StatefulSet)
    return sts


async def pods_by_name(client: Client, namespace: str, name: str) -> dict[str, core_pb2.Pod]:
    """The set's live pods (not being deleted), by name."""
    pods = (await client.list(core_pb2.Pod, namespace, label_selector=f"app={name}")).items
    return {p.metadata.name: p for p in pods if not p.metadata.HasField("deletion_timestamp")}


def ready(pod: core_pb2.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


async def claims(client: Client, namespace: str) -> dict[str, core_pb2.PersistentVolumeClaim]:
    return {c.metadata.name: c for c in (await client.list(core_pb2.PersistentVolumeClaim, namespace)).items}


async def all_ready(client: Client, namespace: str, name: str, count: int) -> dict[str, core_pb2.Pod] | None:
    pods = await pods_by_name(client, namespace, name)
    return pods if len(pods) == count and all(map(ready, pods.values())) else None


async def images(client: Client, namespace: str, name: str) -> dict[str, str]:
    return {n: p.spec.containers[0].image for n, p in (await pods_by_name(client, namespace, name)).items()}


async def status_of(client: Client, namespace: str, name: str) -> apps_pb2.StatefulSetStatus:
    return (await client.get(apps_pb2.StatefulSet, name, namespace)).status


def set_image(image: str, partition: int | None = None) -> Callable[[apps_pb2.StatefulSet], None]:
    def change(sts: apps_pb2.StatefulSet) -> None:
        sts.spec.template.spec.containers[0].image = image
        if partition is not None:
            sts.spec.update_strategy.rolling_update.partition = partition
    return change


def scale(replicas: int) -> Callable[[apps_pb2.StatefulSet], None]:
    def change(sts: apps_pb2.StatefulSet) -> None:
        sts.spec.replicas = replicas
    return change


# ---------------------------------------------------------------- ordered pods, identities and claims


async def test_ordered_ready_pods_with_their_own_claims_kept_when_scaling_down(
        client: Client, namespace: str, nodes: StatefulNodes, local_class: str) -> None:
    await client.create(stateful_set("web", namespace, storage_class=local_class))
    early: list[str] = []

    async def both_ready() -> dict[str, core_pb2.Pod] | None:
        pods = await pods_by_name(client, namespace, "web")
        if "web-1" in pods and not ("web-0" in pods and ready(pods["web-0"])):
            early.append(str(sorted(pods)))
        return pods if len(pods) == 2 and all(map(ready, pods.values())) else None

    pods = await eventually(both_ready, "web-0 and web-1 Ready", 40, interval=0.05)
    assert not early, f"web-1 existed before web-0 was Ready: {early}"
    for ordinal in (0, 1):
        pod = pods[f"web-{ordinal}"]
        assert (pod.spec.hostname, pod.spec.subdomain) == (f"web-{ordinal}", "web-svc")
        assert pod.metadata.labels["statefulset.kubernetes.io/pod-name"] == f"web-{ordinal}"
        assert pod.metadata.labels["apps.kubernetes.io/pod-index"] == str(ordinal)
        volume = next(v for v in pod.spec.volumes if v.name == "www")
        assert volume.persistent_volume_claim.claim_name == f"www-web-{ordinal}"
    found = await claims(client, namespace)
    assert sorted(found) == ["www-web-0", "www-web-1"]
    assert found["www-web-0"].metadata.labels["app"] == "web", "claims carry the set's matchLabels"
    assert not found["www-web-0"].metadata.owner_references, "Retain: nobody owns the claim"

    async def bound_on_node(claim: str, pod: core_pb2.Pod) -> bool:
        c = await client.get(core_pb2.PersistentVolumeClaim, claim, namespace)
        if c.status.phase != "Bound":
            return False
        pv = await client.get(core_pb2.PersistentVolume, c.spec.volume_name)
        term = pv.spec.node_affinity.required.node_selector_terms[0]
        return list(term.match_fields[0].values) == [pod.spec.node_name]

    for ordinal in (0, 1):
        await eventually(lambda o=ordinal: bound_on_node(f"www-web-{o}", pods[f"web-{o}"]),  # type: ignore[misc]
                         f"www-web-{ordinal} bound to a volume on its pod's node")
    status = await status_of(client, namespace, "web")
    assert (status.replicas, status.ready_replicas, status.available_replicas) == (2, 2, 2)
    assert status.current_revision == status.update_revision != ""
    assert pods["web-0"].metadata.labels["controller-revision-hash"] == status.update_revision

    # Scaled to 1: web-1 goes, its claim stays for a later scale-up.
    await mutate(client, apps_pb2.StatefulSet, "web", namespace, scale(1))
    await eventually(lambda: all_ready(client, namespace, "web", 1), "web-1 removed")
    assert sorted(await pods_by_name(client, namespace, "web")) == ["web-0"]
    assert sorted(await claims(client, namespace)) == ["www-web-0", "www-web-1"]

    # A deleted web-0 comes back with the same claim, on the node its volume is pinned to.
    node, uid = pods["web-0"].spec.node_name, pods["web-0"].metadata.uid

    async def recreated() -> core_pb2.Pod | None:
        pod = (await pods_by_name(client, namespace, "web")).get("web-0")
        return pod if pod is not None and pod.metadata.uid != uid and ready(pod) else None

    await client.delete(core_pb2.Pod, "web-0", namespace)
    again = await eventually(recreated, "web-0 recreated", 30)
    assert again.spec.node_name == node
    assert next(v for v in again.spec.volumes if v.name == "www").persistent_volume_claim.claim_name == "www-web-0"

    # Back to 2: web-1 gets its old claim again.
    await mutate(client, apps_pb2.StatefulSet, "web", namespace, scale(2))
    back = await eventually(lambda: all_ready(client, namespace, "web", 2), "web-1 back", 30)
    assert back["web-1"].spec.node_name == pods["web-1"].spec.node_name, "its volume pins it to the same node"


async def test_parallel_creates_every_pod_at_once_and_delete_retention_removes_claims(
        client: Client, namespace: str, nodes: StatefulNodes, local_class: str) -> None:
    # Pods that never become Ready: OrderedReady would stop at web-0, Parallel does not wait.
    await client.create(stateful_set("db", namespace, replicas=3, image=NEVER_READY, storage_class=local_class,
                                     policy="Parallel", retention=("Delete", "Delete")))

    async def three() -> dict[str, core_pb2.Pod] | None:
        pods = await pods_by_name(client, namespace, "db")
        return pods if len(pods) == 3 else None

    pods = await eventually(three, "three pods at once")
    assert not any(map(ready, pods.values()))
    found = await eventually(lambda: _claims_when(client, namespace, 3), "three claims")
    sts = await client.get(apps_pb2.StatefulSet, "db", namespace)
    assert isinstance(found, dict)
    for claim in found.values():
        assert [r.uid for r in claim.metadata.owner_references] == [sts.metadata.uid], "whenDeleted: the set owns it"

    # whenScaled Delete: the claims of the pods scaled away go with them.
    await mutate(client, apps_pb2.StatefulSet, "db", namespace, scale(1))
    # Pod deleted → the garbage collector deletes its claims → pvc-protection lets them go: three hops,
    # each a watch away, which a loaded 2-core box can stretch well past the usual 20 s.
    await eventually(lambda: _claims_when(client, namespace, 1, live_only=False), "the scaled-away claims deleted",
                     60)
    assert sorted(await claims(client, namespace)) == ["www-db-0"]
    assert sorted(await pods_by_name(client, namespace, "db")) == ["db-0"]

    # whenDeleted Delete: the last claim goes with the set.
    await client.delete(apps_pb2.StatefulSet, "db", namespace)
    await eventually(lambda: _claims_when(client, namespace, 0, live_only=False), "the set's claims deleted", 30)


async def _claims_when(client: Client, namespace: str, count: int, *, live_only: bool = True
                       ) -> dict[str, core_pb2.PersistentVolumeClaim] | bool | None:
    found = {n: c for n, c in (await claims(client, namespace)).items()
             if not (live_only and c.metadata.HasField("deletion_timestamp"))}
    if len(found) != count:
        return None
    return found or True


# ---------------------------------------------------------------- updates and history


async def test_rolling_update_with_partition_then_all_and_revision_history(
        client: Client, namespace: str, nodes: StatefulNodes) -> None:
    await client.create(stateful_set("web", namespace, replicas=3))
    await eventually(lambda: all_ready(client, namespace, "web", 3), "three Ready pods", 40)
    first = (await status_of(client, namespace, "web")).update_revision

    # Partition 2: only web-2 is replaced.
    await mutate(client, apps_pb2.StatefulSet, "web", namespace, set_image("registry.k8s.io/busybox:1.37", 2))

    async def canary() -> apps_pb2.StatefulSetStatus | None:
        status = await status_of(client, namespace, "web")
        return status if status.updated_replicas == 1 and status.ready_replicas == 3 else None

    status = await eventually(canary, "web-2 updated", 30)
    assert status.current_revision == first != status.update_revision
    await asyncio.sleep(1)  # nothing more happens below the partition
    assert await images(client, namespace, "web") == {"web-0": BUSYBOX, "web-1": BUSYBOX,
                                                      "web-2": "registry.k8s.io/busybox:1.37"}

    # Partition 0: the rest, from the top; the update revision becomes current.
    await mutate(client, apps_pb2.StatefulSet, "web", namespace,
                 lambda s: setattr(s.spec.update_strategy.rolling_update, "partition", 0))

    async def rolled() -> apps_pb2.StatefulSetStatus | None:
        s = await status_of(client, namespace, "web")
        return s if s.current_revision == s.update_revision and s.updated_replicas == s.ready_replicas == 3 else None

    status = await eventually(rolled, "the rollout to finish", 40)
    assert set((await images(client, namespace, "web")).values()) == {"registry.k8s.io/busybox:1.37"}
    revisions = (await client.list(apps_pb2.ControllerRevision, namespace)).items
    assert sorted((r.revision, r.metadata.name == status.update_revision) for r in revisions) == [
        (1, False), (2, True)]
    assert all(r.metadata.owner_references[0].kind == "StatefulSet" for r in revisions)


async def test_on_delete_replaces_only_deleted_pods(client: Client, namespace: str, nodes: StatefulNodes) -> None:
    await client.create(stateful_set("web", namespace, replicas=2, strategy="OnDelete"))
    await eventually(lambda: all_ready(client, namespace, "web", 2), "two Ready pods", 40)
    await mutate(client, apps_pb2.StatefulSet, "web", namespace, set_image("registry.k8s.io/busybox:1.37"))
    await asyncio.sleep(1.5)
    assert await images(client, namespace, "web") == {"web-0": BUSYBOX, "web-1": BUSYBOX}
    await client.delete(core_pb2.Pod, "web-1", namespace)

    async def replaced() -> dict[str, str] | None:
        found = await images(client, namespace, "web")
        pods = await all_ready(client, namespace, "web", 2)
        return found if pods and found.get("web-1") == "registry.k8s.io/busybox:1.37" else None

    assert await eventually(replaced, "web-1 back with the new image", 30) == {
        "web-0": BUSYBOX, "web-1": "registry.k8s.io/busybox:1.37"}


# ---------------------------------------------------------------- validation


async def test_bad_stateful_sets_are_refused_with_kubernetes_messages(client: Client, namespace: str) -> None:
    async def refused(sts: apps_pb2.StatefulSet) -> str:
        with pytest.raises(Invalid) as err:
            await client.create(sts)
        return str(err.value)

    bad = stateful_set("bad", namespace)
    bad.spec.template.metadata.labels["app"] = "other"
    message = await refused(bad)
    assert "spec.template.metadata.labels: Invalid value: " in message, message
    assert "`selector` does not match template `labels`" in message, message
    bad = stateful_set("bad", namespace)
    bad.spec.pod_management_policy = "Sometimes"
    assert "spec.podManagementPolicy: Invalid value: \"Sometimes\": must be 'OrderedReady' or 'Parallel'" \
        in await refused(bad)
    bad = stateful_set("bad", namespace, strategy="Sometimes")
    assert "spec.updateStrategy: Invalid value: \"Sometimes\": must be 'RollingUpdate' or 'OnDelete'" \
        in await refused(bad)
    bad = stateful_set("bad", namespace, partition=-1)
    assert "spec.updateStrategy.rollingUpdate.partition: Invalid value: -1: must be greater than or equal to 0" \
        in await refused(bad)
    bad = stateful_set("bad", namespace, retention=("Keep", "Retain"))
    assert 'spec.persistentVolumeClaimRetentionPolicy.whenDeleted: Unsupported value: "Keep": supported values: ' \
           '"Retain", "Delete"' in await refused(bad)
    bad = stateful_set("bad", namespace)
    bad.spec.template.spec.containers[0].volume_mounts.add(name="www", mount_path="/data")
    assert 'spec.template.spec.containers[0].volumeMounts[0].name: Not found: "www"' in await refused(bad)
    bad = stateful_set("bad", namespace, storage_class="x")
    bad.spec.volume_claim_templates[0].spec.resources.ClearField("requests")
    assert "spec.volumeClaimTemplates[0].spec.resources[storage]: Required value" in await refused(bad)
    bad = stateful_set("bad", namespace)
    bad.spec.template.spec.restart_policy = "Never"
    assert 'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"' \
        in await refused(bad)
    assert not (await client.list(apps_pb2.StatefulSet, namespace)).items, "nothing bad was stored"

    # Only replicas, ordinals, template, updateStrategy, revisionHistoryLimit, retention and minReadySeconds change.
    await client.create(stateful_set("good", namespace, storage_class="x"))

    def resize(sts: apps_pb2.StatefulSet) -> None:
        sts.spec.volume_claim_templates[0].spec.resources.requests["storage"] = "2Gi"

    with pytest.raises(Invalid, match="spec: Forbidden: updates to statefulset spec for fields other than "
                                      "'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', "
                                      "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"):
        await mutate(client, apps_pb2.StatefulSet, "good", namespace, resize)
    stored = await client.get(apps_pb2.StatefulSet, "good", namespace)
    assert (stored.spec.pod_management_policy, stored.spec.update_strategy.type,
            stored.spec.update_strategy.rolling_update.partition, stored.spec.revision_history_limit,
            stored.spec.persistent_volume_claim_retention_policy.when_deleted,
            stored.spec.persistent_volume_claim_retention_policy.when_scaled) == (
        "OrderedReady", "RollingUpdate", 0, 10, "Retain", "Retain")


# ---------------------------------------------------------------- kctl and real kubectl




async def test_kctl_and_kubectl_get_scale_and_rollout(client: Client, namespace: str, nodes: StatefulNodes,
                                                      apiserver: ApiServer, http_url: str, tmp_path: Path) -> None:
    runner = CliRunner()

    async def kctl(*args: str) -> str:
        result = await asyncio.to_thread(runner.invoke, cli, ["-s", apiserver.address, "-n", namespace, *args],
                                         env={"KCTL_CONFIG": "/nonexistent"})
        assert result.exit_code == 0, f"kctl {' '.join(args)}: {result.output}"
        return result.output

    def run(*args: str) -> Awaitable[subprocess.CompletedProcess[str]]:
        return asyncio.to_thread(kubectl, http_url, tmp_path, "-n", namespace, *args)

    await client.create(stateful_set("web", namespace, replicas=1))
    await eventually(lambda: all_ready(client, namespace, "web", 1), "web-0 Ready", 30)

    scaled = await run("scale", "statefulset/web", "--replicas=2")
    assert scaled.returncode == 0, scaled.stderr
    assert scaled.stdout == "statefulset.apps/web scaled\n"
    status = await run("rollout", "status", "sts/web", "--timeout=40s")
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[-1].startswith("partitioned roll out complete: 2 new pods have been updated")
    table = await run("get", "sts", "-o", "wide")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "AGE", "CONTAINERS", "IMAGES"]
    assert lines[1].split()[:2] == ["web", "2/2"] and lines[1].split()[-2:] == ["app", BUSYBOX]

    assert await kctl("scale", "statefulset", "web", "--replicas=3") == "statefulset.apps/web scaled\n"
    await eventually(lambda: all_ready(client, namespace, "web", 3), "three Ready pods", 40)
    assert (await kctl("get", "sts")).split()[:5] == ["NAME", "READY", "AGE", "web", "3/3"]
    described = await kctl("describe", "sts", "web")
    for line in (r"^Replicas: +3 desired \| 3 total$", r"^Update Strategy: +RollingUpdate$", r"^  Partition: +0$",
                 r"^Pods Status: +3 Running / 0 Waiting / 0 Succeeded / 0 Failed$", r"^Volume Claims: +<none>$"):
        assert re.search(line, described, re.M), (line, described)
    await mutate(client, apps_pb2.StatefulSet, "web", namespace, set_image("registry.k8s.io/busybox:1.37"))
    out = await kctl("rollout", "status", "statefulset/web", "--timeout=60")
    assert out.splitlines()[-1].startswith("partitioned roll out complete: 3 new pods have been updated"), out
    listed = await kctl("rollout", "history", "statefulset/web")
    assert listed.split() == ["statefulset.apps/web", "REVISION", "CHANGE-CAUSE", "1", "<none>", "2", "<none>"]
    assert await kctl("rollout", "undo", "statefulset/web") == "statefulset.apps/web rolled back\n"

    async def undone() -> bool:
        found = await images(client, namespace, "web")
        return len(found) == 3 and set(found.values()) == {BUSYBOX} \
            and bool(await all_ready(client, namespace, "web", 3))

    await eventually(undone, "the old image back on every pod", 60)
    real = await run("rollout", "history", "sts/web")
    assert real.returncode == 0, real.stderr
    assert real.stdout.split() == ["statefulset.apps/web", "REVISION", "CHANGE-CAUSE", "2", "<none>", "3", "<none>"]
