"""PodDisruptionBudgets, the eviction subresource and drain, as an operator meets them.

Given a controller manager (with its disruption controller) and hollow nodes
that run pods and mark them Ready: a budget's status counts the pods it covers
(ints, percents against the owning Deployment's scale, a Job's pods failing it
safe); an eviction the budget does not allow is a 429 with Kubernetes' message
and a DisruptionBudget cause over HTTP and TooManyRequests over gRPC's Evict (a
dry run leaves pod and budget be), a pod under two budgets a 500; `kctl drain` of a node holding all 3 replicas of
a Deployment under `minAvailable: 2` evicts one pod, waits until its
replacement is Ready, and only then the next — never fewer than 2 Ready — and
real kubectl's drain over HTTP is held the same way. Bad budgets are refused
with Kubernetes' messages and nothing is stored.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from bench.hollow_kubelet import HollowCluster
from client import Client
from controlplane.apiserver.endpoints import DeleteOptions
from controlplane.apiserver.http.status import status_response
from controlplane.apiserver.server import eviction_options
from controlplane.apiserver.subresources.eviction import EVICTION
from controlplane.printers import generate_table
from kctl.commands import nodes as node_commands
from kctl.main import cli
from proto import apiserver_pb2, apps_pb2, core_pb2, kinds, manifest, meta_pb2, policy_pb2
from proto.errors import BadRequest, Invalid, NotFound, TooManyRequests
from provision.processes import ApiServer
from tests.controllers_support import controller_manager_fixture as controller_manager_fixture
from tests.controllers_support import deployment, eventually, live_pods, ready
from tests.controllers_support import hollow_fixture as hollow_fixture
from tests.kubectl_support import KUBECTL, kubectl

VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."


def budget(name: str, namespace: str, *, min_available: str = "", max_unavailable: str = "",
           app: str = "web") -> policy_pb2.PodDisruptionBudget:
    pdb = policy_pb2.PodDisruptionBudget(api_version="policy/v1", kind="PodDisruptionBudget")
    pdb.metadata.name, pdb.metadata.namespace = name, namespace
    pdb.spec.selector.match_labels["app"] = app
    pdb.spec.min_available, pdb.spec.max_unavailable = min_available, max_unavailable
    return pdb


async def settled_status(client: Client, name: str, namespace: str, *, allowed: int, timeout: float = 20.0
                         ) -> policy_pb2.PodDisruptionBudgetStatus:
    """The budget's status once the controller has counted its generation and allows `allowed`."""
    seen: list[policy_pb2.PodDisruptionBudgetStatus] = []

    async def check() -> policy_pb2.PodDisruptionBudgetStatus | None:
        pdb = await client.get(policy_pb2.PodDisruptionBudget, name, namespace)
        seen[:] = [pdb.status]
        done = pdb.status.observed_generation == pdb.metadata.generation and pdb.status.conditions
        return pdb.status if done and pdb.status.disruptions_allowed == allowed else None
    try:
        return await eventually(check, f"budget {name} allowing {allowed}", timeout)
    except AssertionError as err:
        raise AssertionError(f"{err}; its status: {manifest.to_dict(seen[-1]) if seen else None}") from None


async def all_ready(client: Client, namespace: str, count: int, app: str = "web") -> list[core_pb2.Pod]:
    async def check() -> list[core_pb2.Pod] | None:
        pods = await live_pods(client, namespace, f"app={app}")
        return pods if len(pods) == count and all(ready(p) for p in pods) else None
    return await eventually(check, f"{count} ready {app} pods")


async def deploy_on_one_node(client: Client, hollow: HollowCluster, namespace: str, replicas: int,
                             app: str = "web") -> str:
    """A Deployment whose pods all run on the first hollow node; replacements go to the others.

    The hollow binder places pods round-robin; narrowing its rotation plays the scheduler
    that would keep new pods off a cordoned node.
    """
    node, others = hollow.node_names[0], hollow.node_names[1:]
    hollow._next_node = itertools.cycle([node])
    await client.create(deployment(app, namespace, replicas=replicas))
    await all_ready(client, namespace, replicas, app)
    hollow._next_node = itertools.cycle(others)
    return node


# ---------------------------------------------------------------- the budget's status


async def test_status_counts_ints_and_percents_against_the_deployments_scale(
        client: Client, namespace: str, hollow: HollowCluster) -> None:
    await client.create(deployment("web", namespace, replicas=3))
    await all_ready(client, namespace, 3)
    for name, lower, upper in (("min-two", "2", ""), ("min-half", "50%", ""), ("max-third", "", "34%")):
        await client.create(budget(name, namespace, min_available=lower, max_unavailable=upper))
    two = await settled_status(client, "min-two", namespace, allowed=1)
    assert (two.expected_pods, two.desired_healthy, two.current_healthy) == (3, 2, 3)
    [cond] = two.conditions
    assert (cond.type, cond.status, cond.reason) == ("DisruptionAllowed", "True", "SufficientPods")
    half = await settled_status(client, "min-half", namespace, allowed=1)  # 50% of 3, rounded up
    assert (half.expected_pods, half.desired_healthy) == (3, 2)
    third = await settled_status(client, "max-third", namespace, allowed=2)  # 3 - ceil(1.02)
    assert (third.expected_pods, third.desired_healthy) == (3, 1)

    # A budget with no pods allows nothing; one default-less budget gets minAvailable 1.
    await client.create(budget("nobody", namespace, app="absent"))
    stored = await client.get(policy_pb2.PodDisruptionBudget, "nobody", namespace)
    assert stored.spec.min_available == "1"
    nobody = await settled_status(client, "nobody", namespace, allowed=0)
    assert nobody.expected_pods == 0 and nobody.conditions[0].reason == "InsufficientPods"

    # Scaling the Deployment moves the percent's base with it. (Pod events resync only the first
    # budget covering a pod, as in Kubernetes: overlapping budgets are a misconfiguration.)
    for name in ("min-two", "max-third"):
        await client.delete(policy_pb2.PodDisruptionBudget, name, namespace)
    d = await client.get(apps_pb2.Deployment, "web", namespace)
    d.spec.replicas = 4
    await client.update(d)
    await all_ready(client, namespace, 4)
    half = await settled_status(client, "min-half", namespace, allowed=2)
    assert (half.expected_pods, half.desired_healthy, half.current_healthy) == (4, 2, 4)

    await client.create(budget("max-third", namespace, max_unavailable="34%"))
    await settled_status(client, "max-third", namespace, allowed=2)  # 4 - ceil(1.36) = 2 desired
    table = generate_table(kinds.resolve("pdb"), [await client.get(policy_pb2.PodDisruptionBudget, n, namespace)
                                                  for n in ("min-half", "max-third")]).to_dict()
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "Min Available", "Max Unavailable", "Allowed Disruptions", "Age"]
    assert [r["cells"][:4] for r in table["rows"]] == [["min-half", "50%", "N/A", 2], ["max-third", "N/A", "34%", 2]]


async def test_a_percent_over_a_jobs_pods_fails_safe(client: Client, namespace: str, hollow: HollowCluster) -> None:
    # Jobs have no scale subresource, so a percent of (or a bound on) their pods cannot be computed.
    await client.create(manifest.from_dict({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "task", "namespace": namespace},
        "spec": {"template": {"metadata": {"labels": {"app": "batch"}}, "spec": {
            "restartPolicy": "Never", "containers": [{"name": "app", "image": "busybox:1.36"}]}}}}))
    await eventually(lambda: live_pods(client, namespace, "app=batch"), "the Job's pod")
    await client.create(budget("batch", namespace, max_unavailable="1", app="batch"))

    # Until the controller sees the Job's pod it counts none (InsufficientPods); then it must give up.
    seen: list[policy_pb2.PodDisruptionBudgetStatus] = []

    async def failed() -> policy_pb2.PodDisruptionBudgetStatus | None:
        pdb = await client.get(policy_pb2.PodDisruptionBudget, "batch", namespace)
        seen[:] = [pdb.status]
        return pdb.status if [c.reason for c in pdb.status.conditions] == ["SyncFailed"] else None
    try:
        status = await eventually(failed, "the budget to fail safe")
    except AssertionError as err:
        raise AssertionError(f"{err}; its status: {manifest.to_dict(seen[-1]) if seen else None}") from None
    [cond] = status.conditions
    assert cond.status == "False"
    assert cond.message == "jobs.batch does not implement the scale subresource"
    assert status.disruptions_allowed == 0


# ---------------------------------------------------------------- the eviction subresource


async def evict_over_http(http_url: str, namespace: str, pod: str) -> tuple[int, dict[str, Any]]:
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": namespace}}
    async with aiohttp.ClientSession() as session, session.post(
            f"{http_url}/api/v1/namespaces/{namespace}/pods/{pod}/eviction", json=body) as response:
        return response.status, await response.json()


async def test_a_budget_allowing_nothing_refuses_the_eviction_with_429(
        client: Client, namespace: str, hollow: HollowCluster, http_url: str) -> None:
    await client.create(deployment("web", namespace, replicas=2))
    [first, second] = await all_ready(client, namespace, 2)
    await client.create(budget("frozen", namespace, max_unavailable="0"))
    frozen = await settled_status(client, "frozen", namespace, allowed=0)
    assert (frozen.desired_healthy, frozen.current_healthy) == (2, 2)

    code, status = await evict_over_http(http_url, namespace, first.metadata.name)
    assert code == 429
    assert (status["reason"], status["message"]) == ("TooManyRequests", VIOLATION)
    # What the budget lacks, as Kubernetes says it: a DisruptionBudget cause (kubectl prints only the message).
    assert status["details"] == {"causes": [{"reason": "DisruptionBudget", "message": (
        "The disruption budget frozen needs 2 healthy pods and has 2 currently")}]}
    # Over gRPC (kctl drain's call) the same refusal arrives as TooManyRequests with the same message.
    with pytest.raises(TooManyRequests) as refused:
        await client.evict(namespace, first.metadata.name)
    assert str(refused.value) == VIOLATION
    assert (await client.get(core_pb2.Pod, first.metadata.name, namespace)).metadata.uid == first.metadata.uid

    # Loosened, the budget lets one pod go: it is written into disruptedPods and deleted.
    frozen_pdb = await client.get(policy_pb2.PodDisruptionBudget, "frozen", namespace)
    frozen_pdb.spec.max_unavailable = "1"
    await client.update(frozen_pdb)
    await settled_status(client, "frozen", namespace, allowed=1)
    # A dry run is answered as the eviction would be, and changes neither the pod nor the budget.
    answered = await client.evict(namespace, first.metadata.name, dry_run=True)
    assert answered.metadata.uid == first.metadata.uid
    assert not (await client.get(core_pb2.Pod, first.metadata.name, namespace)).metadata.HasField(
        "deletion_timestamp")
    assert (await client.get(policy_pb2.PodDisruptionBudget, "frozen", namespace)).status.disruptions_allowed == 1
    code, status = await evict_over_http(http_url, namespace, first.metadata.name)
    assert (code, status["status"]) == (201, "Success"), status
    try:
        gone: core_pb2.Pod | None = await client.get(core_pb2.Pod, first.metadata.name, namespace)
    except NotFound:
        gone = None
    assert gone is None or gone.metadata.HasField("deletion_timestamp")
    # Until the replacement is Ready the budget is spent: the next eviction is refused.
    code, status = await evict_over_http(http_url, namespace, second.metadata.name)
    assert code in (429, 201)  # 201 only if the replacement was already Ready and counted
    if code == 429:
        assert status["message"] == VIOLATION

    # A pod under two budgets: Kubernetes' 500.
    await all_ready(client, namespace, 2)
    await client.create(budget("again", namespace, min_available="0"))
    pod = (await all_ready(client, namespace, 2))[0]
    code, status = await evict_over_http(http_url, namespace, pod.metadata.name)
    assert code == 500
    assert status["message"] == ("This pod has more than one PodDisruptionBudget, which the eviction subresource "
                                 "does not support.")


def test_a_429_that_knows_when_says_so_in_its_status_and_header() -> None:
    response = status_response(TooManyRequests("slow down", retry_after_seconds=3))
    assert (response.status, response.headers["Retry-After"]) == (429, "3")
    assert isinstance(response.body, bytes) and b'"details":{"retryAfterSeconds":3}' in response.body
    assert "Retry-After" not in status_response(TooManyRequests(VIOLATION)).headers


def evict_request(name: str, eviction: dict[str, Any] | None = None) -> apiserver_pb2.EvictRequest:
    raw = manifest.from_dict(eviction, EVICTION).SerializeToString() if eviction else b""
    return apiserver_pb2.EvictRequest(namespace="default", name=name, eviction=raw)


def test_grpc_evictions_options_are_checked_as_over_http() -> None:
    # No Eviction at all is the request's pod with the default options.
    assert eviction_options(evict_request("web")) == DeleteOptions()
    options = meta_pb2.DeleteOptions(grace_period_seconds=0, orphan_dependents=True, dry_run=["All"])
    options.preconditions.uid = "u-1"
    evicting = policy_pb2.Eviction(delete_options=options)
    evicting.metadata.name = "web"
    assert eviction_options(apiserver_pb2.EvictRequest(namespace="default", name="web",
                                                        eviction=evicting.SerializeToString())) == DeleteOptions(
        0, "Orphan", "u-1", "", True)
    with pytest.raises(BadRequest, match="name in URL does not match name in Eviction object"):
        eviction_options(evict_request("web", {"apiVersion": "policy/v1", "kind": "Eviction",
                                                "metadata": {"name": "db"}}))
    with pytest.raises(BadRequest, match="namespace of the provided object does not match"):
        eviction_options(evict_request("web", {"apiVersion": "policy/v1", "kind": "Eviction",
                                                "metadata": {"name": "web", "namespace": "other"}}))
    with pytest.raises(Invalid, match="gracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0"):
        eviction_options(evict_request("web", {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {
            "name": "web"}, "deleteOptions": {"gracePeriodSeconds": -1}}))
    with pytest.raises(BadRequest, match="not a Eviction"):
        eviction_options(apiserver_pb2.EvictRequest(namespace="default", name="web", eviction=b"\xff\xff"))


async def test_a_bad_grpc_eviction_is_refused_and_deletes_nothing(client: Client, namespace: str) -> None:
    pod = await client.create(core_pb2.Pod(api_version="v1", kind="Pod", metadata=meta_pb2.ObjectMeta(
        name="web", namespace=namespace), spec=core_pb2.PodSpec(containers=[core_pb2.Container(
            name="app", image="busybox:1.36")])))
    with pytest.raises(Invalid, match="propagationPolicy: Unsupported value"):
        await client.evict(namespace, "web", delete_options=meta_pb2.DeleteOptions(propagation_policy="Never"))
    with pytest.raises(NotFound):
        await client.evict(namespace, "absent")
    kept = await client.get(core_pb2.Pod, "web", namespace)
    assert kept.metadata.uid == pod.metadata.uid and not kept.metadata.HasField("deletion_timestamp")


# ---------------------------------------------------------------- drain


async def watch_drain(client: Client, namespace: str, node: str, done: asyncio.Event) -> dict[str, Any]:
    """Sample the pods until `done`: the fewest Ready at once, when each of the node's pods went (terminating
    or gone), and when each replacement elsewhere was first Ready."""
    fewest_ready = 99
    on_node: set[str] = set()
    evicted: dict[str, float] = {}
    replaced: dict[str, float] = {}
    while True:
        finished = done.is_set()  # one more sample after the drain returned: its last eviction is seen too
        pods = (await client.list(core_pb2.Pod, namespace, label_selector="app=web")).items
        now = time.monotonic()
        alive = [p for p in pods if not p.metadata.HasField("deletion_timestamp")]
        fewest_ready = min(fewest_ready, sum(ready(p) for p in alive))
        alive_on_node = {p.metadata.name for p in alive if p.spec.node_name == node}
        on_node |= alive_on_node
        for name in on_node - alive_on_node:
            evicted.setdefault(name, now)
        for p in alive:
            if p.spec.node_name != node and ready(p):
                replaced.setdefault(p.metadata.name, now)
        if finished:
            break
        await asyncio.sleep(0.05)
    return {"fewest_ready": fewest_ready, "evicted": sorted(evicted.values()), "replaced": sorted(replaced.values())}


@pytest.fixture
def quick_retries() -> Iterator[None]:
    saved = node_commands.EVICTION_RETRY_INTERVAL
    node_commands.EVICTION_RETRY_INTERVAL = 0.5
    yield
    node_commands.EVICTION_RETRY_INTERVAL = saved


async def test_drain_evicts_one_pod_at_a_time_under_min_available_2(
        client: Client, namespace: str, hollow: HollowCluster, apiserver: ApiServer, tmp_path: Path,
        quick_retries: None) -> None:
    node = await deploy_on_one_node(client, hollow, namespace, 3)
    await client.create(budget("web", namespace, min_available="2"))
    await settled_status(client, "web", namespace, allowed=1)

    done = asyncio.Event()
    watcher = asyncio.create_task(watch_drain(client, namespace, node, done))
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, cli, ["-s", apiserver.address, "drain", node, "--timeout", "60"],
                                     env={"KCTL_CONFIG": str(tmp_path / "none")})
    done.set()
    seen = await watcher
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"node/{node} cordoned"
    assert result.stdout.splitlines()[-1] == f"node/{node} drained"
    assert f"(will retry after 0.5s): {VIOLATION}" in result.stderr
    assert result.stdout.count(" evicted\n") == 3

    # Never below the budget, and each eviction after the previous pod's replacement was Ready.
    assert seen["fewest_ready"] >= 2
    evicted, replaced = seen["evicted"], seen["replaced"]
    assert len(evicted) == 3 and len(replaced) >= 2, seen
    # (Equal times: one sample saw both — a poll answered slowly on a loaded box; the floor above still held.)
    assert evicted[1] >= replaced[0] and evicted[2] >= replaced[1], seen
    pods = await all_ready(client, namespace, 3)
    assert all(p.spec.node_name != node for p in pods)




async def test_kubectl_drain_over_http_honours_the_budget(client: Client, namespace: str, hollow: HollowCluster,
                                                          http_url: str, tmp_path: Path) -> None:
    if not shutil.which(KUBECTL):
        pytest.skip(f"{KUBECTL} is not installed on this machine")
    node = await deploy_on_one_node(client, hollow, namespace, 2)
    await client.create(budget("web", namespace, min_available="1"))
    await settled_status(client, "web", namespace, allowed=1)
    drained = await asyncio.to_thread(kubectl, http_url, tmp_path, "drain", node, "--timeout=90s", timeout=120)
    assert drained.returncode == 0, drained.stderr
    assert f"node/{node} cordoned" in drained.stdout and f"node/{node} drained" in drained.stdout
    # kubectl's own retry line around the apiserver's 429.
    assert f'-n "{namespace}" (will retry after 5s): {VIOLATION}' in drained.stderr
    pods = await all_ready(client, namespace, 2)
    assert all(p.spec.node_name != node for p in pods)


# ---------------------------------------------------------------- validation


async def test_bad_budgets_are_refused_with_kubernetes_messages(client: Client, namespace: str) -> None:
    cases = [
        ({"minAvailable": 2, "maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}},
         [("spec", 'Invalid value: {"maxUnavailable":1,"minAvailable":2,"selector":{"matchLabels":{"app":"web"}}}: '
                   "minAvailable and maxUnavailable cannot be both set")]),
        ({"minAvailable": "150%"}, [("spec.minAvailable", 'Invalid value: "150%": must not be greater than 100%')]),
        ({"maxUnavailable": -1}, [("spec.maxUnavailable", "Invalid value: -1: must be greater than or equal to 0")]),
        ({"maxUnavailable": "half"},
         [("spec.maxUnavailable", "Invalid value: \"half\": a valid percent string must be a numeric string followed "
                                  "by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")]),
        ({"unhealthyPodEvictionPolicy": "Never"},
         [("spec.unhealthyPodEvictionPolicy",
           'Unsupported value: "Never": supported values: "AlwaysAllow", "IfHealthyBudget"')]),
    ]
    for i, (spec, causes) in enumerate(cases):
        pdb = manifest.from_dict({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                  "metadata": {"name": f"bad-{i}", "namespace": namespace}, "spec": spec})
        with pytest.raises(Invalid) as refused:
            await client.create(pdb)
        assert str(refused.value) == f'PodDisruptionBudget "bad-{i}" is invalid: ' + "; ".join(
            f"{path}: {msg}" for path, msg in causes)
        with pytest.raises(NotFound):
            await client.get(policy_pb2.PodDisruptionBudget, f"bad-{i}", namespace)
