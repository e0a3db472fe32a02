"""apps/v1 DaemonSets and their ControllerRevisions, as a user sees them.

Given a controller manager, the real scheduler (in this process, seeing only
this test's nodes) and hollow kubelets for three workers and a master tainted
`node-role.kubernetes.io/control-plane:NoSchedule`: a DaemonSet runs one pod on
each worker, and on the master only when it tolerates that taint; its pods are
placed by the scheduler through a `metadata.name` node affinity; a node added
later gets its pod and a node losing the selected label loses it; an image
change rolls node by node, never more than maxUnavailable nodes without an
available pod, and `rollout undo` brings the old image back as the newest
revision; with OnDelete only deleted pods come back updated. Bad DaemonSets are
refused with Kubernetes' messages, a ControllerRevision's data never changes,
and real kubectl reads rollout status and history over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench import hollow
from bench.hollow_kubelet import HollowCluster
from client import Client
from controlplane.controllers import daemonutil, history
from controlplane.scheduler import config as configuration
from controlplane.scheduler.nodeinfo import PodInfo
from controlplane.scheduler.scheduler import Scheduler
from kctl.commands.rollout import rollout_status_line, rollout_undo
from kctl.main import cli
from proto import apps_pb2, core_pb2
from proto.errors import Invalid, NotFound
from proto.wellknown import TAINT_CONTROL_PLANE
from provision.processes import ApiServer
from tests.controllers_support import ControllerManager, eventually, mutate
from tests.controllers_support import controller_manager_fixture as controller_manager_fixture
from tests.kubectl_support import kubectl

POOL = "daemonsets.flotilla.dev/pool"  # each test's nodes carry its namespace here
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


class DaemonNodes(HollowCluster):
    """Hollow kubelets that leave binding to the real scheduler, with a master and nodes added on demand."""

    def __init__(self, client: Client, namespace: str) -> None:
        super().__init__(client, [namespace], nodes=3, prefix=namespace)
        self.pool = namespace
        self.master = f"{namespace}-master"
        self.node_names.append(self.master)

    async def start(self) -> None:
        for name in self.node_names:
            await self._register(name, master=name == self.master)
        await super().start()  # AlreadyExists is fine there: it posts the kubelet's Ready status

    async def _register(self, name: str, *, master: bool = False) -> None:
        labels = {POOL: self.pool, **({CONTROL_PLANE_LABEL: ""} if master else {})}
        taints = [(TAINT_CONTROL_PLANE, "", "NoSchedule")] if master else []
        await self.client.create(hollow.node(name, cpu="64", memory="256Gi", pods=1100, labels=labels,
                                             taints=taints))

    async def add_node(self, name: str) -> str:
        full = f"{self.pool}-{name}"
        await self._register(full)
        self.node_names.append(full)
        await self._post_ready(full)
        return full

    @property
    def worker_nodes(self) -> list[str]:
        return [n for n in self.node_names if n != self.master]

    async def sync(self, key: str) -> None:
        pod = self.informers[0].store.get(key)
        if pod is not None and not pod.spec.node_name:
            return  # unbound: the scheduler's to place
        await super().sync(key)


@pytest.fixture(name="nodes")
async def nodes_fixture(client: Client, namespace: str,
                        controller_manager: ControllerManager) -> AsyncIterator[DaemonNodes]:
    controller_manager.ensure_running()
    cluster = DaemonNodes(client, namespace)
    await cluster.start()
    profile = configuration.Profile()  # default-scheduler, as daemon pods name it
    scheduler = Scheduler(client, configuration.SchedulerConfig(profiles=[profile]),
                          node_selector=f"{POOL}={namespace}", seed=3)
    task = asyncio.create_task(scheduler.run())
    await asyncio.wait_for(scheduler.synced.wait(), 10)
    yield cluster
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await cluster.stop()


# ---------------------------------------------------------------- builders and looks


def daemon_set(name: str, namespace: str, *, image: str = "registry.k8s.io/pause:3.9", tolerate_master: bool = False,
               strategy: str = "", max_unavailable: str = "", max_surge: str = "",
               node_selector: dict[str, str] | None = None) -> apps_pb2.DaemonSet:
    ds = apps_pb2.DaemonSet(api_version="apps/v1", kind="DaemonSet")
    ds.metadata.name, ds.metadata.namespace = name, namespace
    ds.spec.selector.match_labels["app"] = name
    template = ds.spec.template
    template.metadata.labels["app"] = name
    template.spec.containers.add(name="agent", image=image)
    # Only this test's nodes: the cluster is shared with other tests' nodes.
    template.spec.node_selector.update(node_selector or {POOL: namespace})
    if tolerate_master:
        template.spec.tolerations.add(key=TAINT_CONTROL_PLANE, operator="Exists", effect="NoSchedule")
    if strategy:
        ds.spec.update_strategy.type = strategy
    if max_unavailable:
        ds.spec.update_strategy.rolling_update.max_unavailable = max_unavailable
    if max_surge:
        ds.spec.update_strategy.rolling_update.max_surge = max_surge
    return ds


async def pods_of(client: Client, namespace: str, name: str) -> list[core_pb2.Pod]:
    """The DaemonSet's live pods (not being deleted)."""
    pods = (await client.list(core_pb2.Pod, namespace, label_selector=f"app={name}")).items
    return [p for p in pods if not p.metadata.HasField("deletion_timestamp")]


def ready(pod: core_pb2.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


async def placement(client: Client, namespace: str, name: str) -> dict[str, str]:
    """node -> image of the ready daemon pod running there."""
    return {p.spec.node_name: p.spec.containers[0].image for p in await pods_of(client, namespace, name)
            if p.spec.node_name and ready(p)}


async def wait_placement(client: Client, namespace: str, name: str, expected: dict[str, str],
                         timeout: float = 30.0) -> dict[str, str]:
    async def check() -> dict[str, str] | None:
        found = await placement(client, namespace, name)
        everything = {p.spec.node_name for p in await pods_of(client, namespace, name)}
        return found if found == expected and everything == set(expected) else None

    return await eventually(check, f"daemon pods {expected}", timeout)


async def wait_status(client: Client, namespace: str, name: str,
                      done: Callable[[apps_pb2.DaemonSetStatus], bool], what: str) -> apps_pb2.DaemonSet:
    async def check() -> apps_pb2.DaemonSet | None:
        ds = await client.get(apps_pb2.DaemonSet, name, namespace)
        return ds if ds.status.observed_generation >= ds.metadata.generation and done(ds.status) else None

    return await eventually(check, what, 30)


async def revisions_of(client: Client, namespace: str, name: str) -> dict[int, str]:
    """revision number -> the image its template runs."""
    found = {}
    for cr in (await client.list(apps_pb2.ControllerRevision, namespace)).items:
        template = history.template_of(cr)
        if template is not None and cr.metadata.name.startswith(f"{name}-"):
            found[int(cr.revision)] = template.spec.containers[0].image
    return found


def set_image(image: str) -> Callable[[apps_pb2.DaemonSet], None]:
    def change(ds: apps_pb2.DaemonSet) -> None:
        ds.spec.template.spec.containers[0].image = image
    return change


# ---------------------------------------------------------------- placement


async def test_a_pod_on_every_worker_and_on_the_master_only_when_it_tolerates_the_taint(
        client: Client, namespace: str, nodes: DaemonNodes) -> None:
    created = await client.create(daemon_set("agent", namespace))
    # The server's defaults: RollingUpdate one node at a time, ten revisions.
    strategy = created.spec.update_strategy
    assert (strategy.type, strategy.rolling_update.max_unavailable, strategy.rolling_update.max_surge,
            created.spec.revision_history_limit) == ("RollingUpdate", "1", "0", 10)
    image = "registry.k8s.io/pause:3.9"
    await wait_placement(client, namespace, "agent", dict.fromkeys(nodes.worker_nodes, image))
    await client.create(daemon_set("everywhere", namespace, tolerate_master=True))
    await wait_placement(client, namespace, "everywhere", dict.fromkeys(nodes.node_names, image))
    status = (await wait_status(client, namespace, "agent", lambda s: s.number_available == 3,
                                "agent's status")).status
    assert (status.desired_number_scheduled, status.current_number_scheduled, status.number_ready,
            status.updated_number_scheduled, status.number_available, status.number_misscheduled,
            status.number_unavailable) == (3, 3, 3, 3, 3, 0, 0)

    # Placed through the scheduler, as Kubernetes does: pinned by node affinity, bound by a Binding.
    pod = (await pods_of(client, namespace, "agent"))[0]
    term = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms
    assert [(r.key, r.operator, list(r.values)) for r in term[0].match_fields] == [
        ("metadata.name", "In", [pod.spec.node_name])]

    async def scheduled_event() -> bool:
        # The scheduler's event recorder writes after the binding: the event may trail the pod's status.
        events = (await client.list(core_pb2.Event, namespace,
                                    field_selector=f"involvedObject.name={pod.metadata.name}")).items
        return any(e.reason == "Scheduled" and e.source.component == "default-scheduler" for e in events)

    assert await eventually(scheduled_event, "the scheduler's Scheduled event", 10)
    tolerations = {(t.key, t.effect) for t in pod.spec.tolerations}
    assert {("node.kubernetes.io/not-ready", "NoExecute"), ("node.kubernetes.io/unreachable", "NoExecute"),
            ("node.kubernetes.io/disk-pressure", "NoSchedule"), ("node.kubernetes.io/memory-pressure", "NoSchedule"),
            ("node.kubernetes.io/pid-pressure", "NoSchedule"),
            ("node.kubernetes.io/unschedulable", "NoSchedule")} <= tolerations
    revision = (await client.list(apps_pb2.ControllerRevision, namespace)).items
    agent_revision = next(cr for cr in revision if cr.metadata.name.startswith("agent-"))
    assert agent_revision.revision == 1
    assert pod.metadata.labels["controller-revision-hash"] == agent_revision.metadata.labels[
        "controller-revision-hash"]
    assert agent_revision.metadata.owner_references[0].kind == "DaemonSet"


async def test_a_node_added_later_gets_its_pod_and_one_losing_the_label_loses_it(
        client: Client, namespace: str, nodes: DaemonNodes) -> None:
    image = "registry.k8s.io/pause:3.9"
    await client.create(daemon_set("agent", namespace, node_selector={POOL: namespace, "disk": "ssd"}))
    for node in nodes.worker_nodes[:2]:
        await mutate(client, core_pb2.Node, node, "", lambda n: n.metadata.labels.update({"disk": "ssd"}))
    await wait_placement(client, namespace, "agent", dict.fromkeys(nodes.worker_nodes[:2], image))

    late = await nodes.add_node("late")
    await mutate(client, core_pb2.Node, late, "", lambda n: n.metadata.labels.update({"disk": "ssd"}))
    await wait_placement(client, namespace, "agent", dict.fromkeys([*nodes.worker_nodes[:2], late], image))

    def unlabel(n: core_pb2.Node) -> None:
        del n.metadata.labels["disk"]

    await mutate(client, core_pb2.Node, nodes.worker_nodes[0], "", unlabel)
    await wait_placement(client, namespace, "agent", dict.fromkeys([nodes.worker_nodes[1], late], image))
    await wait_status(client, namespace, "agent", lambda s: (s.desired_number_scheduled, s.number_available) == (
        2, 2), "two desired, two available")


# ---------------------------------------------------------------- updates


async def test_an_image_change_rolls_node_by_node_and_undo_restores_it(
        client: Client, namespace: str, nodes: DaemonNodes) -> None:
    old, broken = "registry.k8s.io/pause:3.9", "registry.k8s.io/pause:broken"
    nodes.unready_images.add(broken)
    await client.create(daemon_set("agent", namespace, tolerate_master=True))
    everywhere = nodes.node_names
    await wait_placement(client, namespace, "agent", dict.fromkeys(everywhere, old))

    # A release whose pods never become ready: one node tries it, the other three keep serving.
    most_unavailable = 0

    async def observe(stop: asyncio.Event) -> None:
        nonlocal most_unavailable
        while not stop.is_set():
            serving = await placement(client, namespace, "agent")
            most_unavailable = max(most_unavailable, len(everywhere) - len(serving))
            await asyncio.sleep(0.02)

    stop = asyncio.Event()
    watcher = asyncio.create_task(observe(stop))
    try:
        await mutate(client, apps_pb2.DaemonSet, "agent", namespace, set_image(broken))

        async def stalled() -> bool:
            pods = await pods_of(client, namespace, "agent")
            return sum(p.spec.containers[0].image == broken for p in pods) == 1 and len(
                await placement(client, namespace, "agent")) == 3

        await eventually(stalled, "one node trying the broken image, three still serving")
        await asyncio.sleep(1.5)  # time enough for a second node to be taken, were the limit not kept
        assert await stalled()
        line, done = await rollout_status_line(client, "agent", namespace, kind="DaemonSet")
        assert not done and line.startswith('Waiting for daemon set "agent" rollout to finish: 1 out of 4 new pods')

        # Undo: the old template comes back, as the newest revision.
        assert await rollout_undo(client, "agent", namespace, kind="DaemonSet") == "daemonset.apps/agent rolled back"
        await wait_placement(client, namespace, "agent", dict.fromkeys(everywhere, old))
        await wait_status(client, namespace, "agent", lambda s: s.updated_number_scheduled == s.number_available == 4,
                          "rolled back everywhere")
        assert await revisions_of(client, namespace, "agent") == {2: broken, 3: old}
        assert (await rollout_status_line(client, "agent", namespace, kind="DaemonSet")) == (
            'daemon set "agent" successfully rolled out', True)

        # A good release then rolls through every node, one at a time.
        new = "registry.k8s.io/pause:3.10"
        await mutate(client, apps_pb2.DaemonSet, "agent", namespace, set_image(new))
        await wait_placement(client, namespace, "agent", dict.fromkeys(everywhere, new))
    finally:
        stop.set()
        await watcher
    assert most_unavailable <= 1, f"{most_unavailable} nodes were without a serving pod at once"
    assert most_unavailable == 1, "no node was ever replaced: the observer saw nothing"
    assert await revisions_of(client, namespace, "agent") == {2: broken, 3: old, 4: new}


async def test_max_surge_starts_the_new_pod_beside_the_old(client: Client, namespace: str,
                                                           nodes: DaemonNodes) -> None:
    old, new = "registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.10"
    await client.create(daemon_set("agent", namespace, max_unavailable="0", max_surge="1"))
    await wait_placement(client, namespace, "agent", dict.fromkeys(nodes.worker_nodes, old))
    fewest_serving = len(nodes.worker_nodes)

    async def observe(stop: asyncio.Event) -> None:
        nonlocal fewest_serving
        while not stop.is_set():
            fewest_serving = min(fewest_serving, len(await placement(client, namespace, "agent")))
            await asyncio.sleep(0.02)

    stop = asyncio.Event()
    watcher = asyncio.create_task(observe(stop))
    try:
        await mutate(client, apps_pb2.DaemonSet, "agent", namespace, set_image(new))
        await wait_placement(client, namespace, "agent", dict.fromkeys(nodes.worker_nodes, new))
    finally:
        stop.set()
        await watcher
    assert fewest_serving == len(nodes.worker_nodes), "a node was left without a serving pod"


async def test_on_delete_replaces_only_the_pods_someone_deletes(client: Client, namespace: str,
                                                               nodes: DaemonNodes) -> None:
    old, new = "registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.10"
    created = await client.create(daemon_set("agent", namespace, strategy="OnDelete"))
    assert not created.spec.update_strategy.HasField("rolling_update")
    await wait_placement(client, namespace, "agent", dict.fromkeys(nodes.worker_nodes, old))
    await mutate(client, apps_pb2.DaemonSet, "agent", namespace, set_image(new))
    await wait_status(client, namespace, "agent", lambda s: s.updated_number_scheduled == 0 and s.number_ready == 3,
                      "the new template observed, nothing replaced")
    await asyncio.sleep(1.0)
    assert await placement(client, namespace, "agent") == dict.fromkeys(nodes.worker_nodes, old)

    victim = next(p for p in await pods_of(client, namespace, "agent") if p.spec.node_name == nodes.worker_nodes[1])
    await client.delete(core_pb2.Pod, victim.metadata.name, namespace)
    expected = dict.fromkeys(nodes.worker_nodes, old) | {nodes.worker_nodes[1]: new}
    await wait_placement(client, namespace, "agent", expected)
    with pytest.raises(Exception, match="only available for RollingUpdate"):
        await rollout_status_line(client, "agent", namespace, kind="DaemonSet")


# ---------------------------------------------------------------- the API's rules


async def causes_of(client: Client, obj: apps_pb2.DaemonSet | apps_pb2.ControllerRevision) -> list[tuple[str, str]]:
    """The (field, message) pairs of the Invalid answer (over gRPC they travel in its message)."""
    with pytest.raises(Invalid) as caught:
        await client.create(obj)
    detail = str(caught.value).partition(" is invalid: ")[2]
    return [(path, message) for path, _, message in (c.partition(": ") for c in detail.split("; "))]


async def test_bad_daemon_sets_are_refused_with_kubernetes_messages_and_not_stored(client: Client,
                                                                                   namespace: str) -> None:
    ds = daemon_set("bad", namespace)
    ds.spec.template.metadata.labels["app"] = "other"
    assert await causes_of(client, ds) == [
        ("spec.template.metadata.labels", 'Invalid value: {"app":"other"}: `selector` does not match template '
                                          "`labels`")]
    ds = daemon_set("bad", namespace, max_unavailable="1", max_surge="1")
    assert await causes_of(client, ds) == [
        ("spec.updateStrategy.rollingUpdate.maxSurge", "Invalid value: 1: may not be set when maxUnavailable is "
                                                       "non-zero")]
    ds = daemon_set("bad", namespace, max_unavailable="0", max_surge="0")
    assert await causes_of(client, ds) == [
        ("spec.updateStrategy.rollingUpdate.maxUnavailable", "Required value: cannot be 0 when maxSurge is 0")]
    ds = daemon_set("bad", namespace, max_unavailable="150%")
    assert ("spec.updateStrategy.rollingUpdate.maxUnavailable",
            'Invalid value: "150%": must not be greater than 100%') in await causes_of(client, ds)
    ds = daemon_set("bad", namespace, strategy="Sometimes")
    assert await causes_of(client, ds) == [
        ("spec.updateStrategy", 'Unsupported value: "Sometimes": supported values: "OnDelete", "RollingUpdate"')]
    ds = daemon_set("bad", namespace)
    ds.spec.template.spec.restart_policy = "Never"
    ds.spec.template.spec.active_deadline_seconds = 5
    assert await causes_of(client, ds) == [
        ("spec.template.spec.restartPolicy", 'Unsupported value: "Never": supported values: "Always"'),
        ("spec.template.spec.activeDeadlineSeconds", "Forbidden: activeDeadlineSeconds in DaemonSet is not Supported")]
    ds = daemon_set("bad", namespace)
    ds.spec.ClearField("selector")
    assert await causes_of(client, ds) == [
        ("spec.template.metadata.labels", 'Invalid value: {"app":"bad"}: `selector` does not match template '
                                          "`labels`")]
    with pytest.raises(NotFound):
        await client.get(apps_pb2.DaemonSet, "bad", namespace)

    # The selector of a stored DaemonSet never changes (it would orphan the pods).
    await client.create(daemon_set("good", namespace))

    def reselect(d: apps_pb2.DaemonSet) -> None:
        d.spec.selector.match_labels["tier"] = "x"
        d.spec.template.metadata.labels["tier"] = "x"

    with pytest.raises(Invalid, match="field is immutable"):
        await mutate(client, apps_pb2.DaemonSet, "good", namespace, reselect)


async def test_a_controller_revisions_data_never_changes(client: Client, namespace: str) -> None:
    cr = apps_pb2.ControllerRevision(api_version="apps/v1", kind="ControllerRevision", revision=1)
    cr.metadata.name, cr.metadata.namespace = "snap", namespace
    assert await causes_of(client, cr) == [("data", "Required value: data is mandatory")]
    cr.data.raw = json.dumps({"spec": {"template": {"metadata": {"labels": {"a": "b"}}}}}).encode()
    cr.revision = -1
    assert await causes_of(client, cr) == [("revision", "Invalid value: -1: must be greater than or equal to 0")]
    cr.revision = 1
    stored = await client.create(cr)
    stored.revision = 5  # renumbering is how a rollback makes an old revision the newest
    stored = await client.update(stored)
    assert stored.revision == 5
    stored.data.raw = json.dumps({"spec": {}}).encode()
    with pytest.raises(Invalid, match=r"data: Invalid value.*field is immutable"):
        await client.update(stored)


def test_daemon_pods_go_where_selector_affinity_and_taints_allow() -> None:
    ds = daemon_set("agent", "default", node_selector={"pool": "a"})
    pod = PodInfo.from_pod(daemonutil.daemon_pod_spec(ds))

    def node(name: str, labels: dict[str, str], taints: tuple[tuple[str, str, str], ...] = ()) -> core_pb2.Node:
        return hollow.node(name, labels=labels, taints=taints)

    def decide(n: core_pb2.Node) -> tuple[bool, bool]:
        p = daemonutil.should_run(pod, n)
        return p.should_run, p.should_continue_running

    assert decide(node("a", {"pool": "a"})) == (True, True)
    assert decide(node("b", {"pool": "b"})) == (False, False)
    # The automatic tolerations: a not-ready or cordoned node keeps its daemons.
    assert decide(node("nr", {"pool": "a"}, (("node.kubernetes.io/not-ready", "", "NoExecute"),))) == (True, True)
    assert decide(node("cp", {"pool": "a"}, ((TAINT_CONTROL_PLANE, "", "NoSchedule"),))) == (False, True)
    assert decide(node("gpu", {"pool": "a"}, (("gpu", "yes", "NoExecute"),))) == (False, False)
    # A required node affinity term is honoured too, matchFields on the node's name included.
    term = ds.spec.template.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution \
        .node_selector_terms.add()
    term.match_fields.add(key="metadata.name", operator="NotIn", values=["a2"])
    pod = PodInfo.from_pod(daemonutil.daemon_pod_spec(ds))
    assert decide(node("a1", {"pool": "a"})) == (True, True)
    assert decide(node("a2", {"pool": "a"})) == (False, False)


# ---------------------------------------------------------------- kctl and real kubectl




async def until_rolled_out(client: Client, namespace: str, name: str) -> None:
    async def check() -> bool:
        return (await rollout_status_line(client, name, namespace, kind="DaemonSet"))[1]

    await eventually(check, f"daemon set {name} rolled out", 30)


async def test_kctl_and_kubectl_rollout_status_history_and_undo(
        client: Client, namespace: str, nodes: DaemonNodes, apiserver: ApiServer, http_url: str,
        tmp_path: Path) -> None:
    runner = CliRunner()

    async def kctl(*args: str) -> str:
        result = await asyncio.to_thread(runner.invoke, cli, ["-s", apiserver.address, "-n", namespace, *args],
                                         env={"KCTL_CONFIG": "/nonexistent"})
        assert result.exit_code == 0, f"kctl {' '.join(args)}: {result.output}"
        return result.output

    def run(*args: str) -> Awaitable[subprocess.CompletedProcess[str]]:
        return asyncio.to_thread(kubectl, http_url, tmp_path, "-n", namespace, *args)

    await client.create(daemon_set("agent", namespace))
    await until_rolled_out(client, namespace, "agent")
    assert await kctl("set", "image", "ds/agent", "agent=registry.k8s.io/pause:3.10") == \
        "daemonset.apps/agent image updated\n"
    assert (await kctl("rollout", "status", "ds/agent", "--timeout=30")).splitlines()[-1] == \
        'daemon set "agent" successfully rolled out'
    assert (await kctl("rollout", "history", "daemonset/agent")).split() == [
        "daemonset.apps/agent", "REVISION", "CHANGE-CAUSE", "1", "<none>", "2", "<none>"]
    assert "pause:3.9" in await kctl("rollout", "history", "ds/agent", "--revision=1")
    wide = (await kctl("get", "ds", "-o", "wide")).splitlines()
    assert wide[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE", "SELECTOR",
                               "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1].split()[:7] == ["agent", "3", "3", "3", "3", "3", f"{POOL}={namespace}"]
    revisions = (await kctl("get", "controllerrevisions")).splitlines()
    assert revisions[0].split() == ["NAME", "CONTROLLER", "REVISION", "AGE"]
    assert sorted(line.split()[1:3] for line in revisions[1:]) == [["daemonset.apps/agent", "1"],
                                                                   ["daemonset.apps/agent", "2"]]
    described = await kctl("describe", "ds", "agent")
    assert re.search(r"^Desired Number of Nodes Scheduled: +3$", described, re.M), described
    assert re.search(r"^Pods Status: +3 Running / 0 Waiting / 0 Succeeded / 0 Failed$", described, re.M), described

    # Real kubectl, over HTTP: it reads the ControllerRevisions itself.
    status = await run("rollout", "status", "ds/agent", "--timeout=30s")
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[-1] == 'daemon set "agent" successfully rolled out'
    listed = await run("rollout", "history", "ds/agent")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["daemonset.apps/agent", "REVISION", "CHANGE-CAUSE", "1", "<none>", "2",
                                     "<none>"]
    one = await run("rollout", "history", "ds/agent", "--revision=1")
    assert one.returncode == 0 and "registry.k8s.io/pause:3.9" in one.stdout, one.stderr
    undone = await run("rollout", "undo", "ds/agent")
    assert undone.returncode == 0, undone.stderr
    assert undone.stdout == "daemonset.apps/agent rolled back\n"
    await wait_placement(client, namespace, "agent", dict.fromkeys(nodes.worker_nodes, "registry.k8s.io/pause:3.9"))
    assert await revisions_of(client, namespace, "agent") == {2: "registry.k8s.io/pause:3.10",
                                                             3: "registry.k8s.io/pause:3.9"}
    again = await run("rollout", "undo", "ds/agent", "--to-revision=3")
    assert again.returncode == 0 and "skipped rollback" in again.stdout, again.stderr
    table = await run("get", "ds")
    assert table.returncode == 0 and table.stdout.split()[:9] == [
        "NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE", "SELECTOR", "AGE"], table.stderr
