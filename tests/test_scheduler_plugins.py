"""The scheduler's decisions as pure functions: plain nodes and pods in, a node (or the reasons) out.

No apiserver here: each test builds a `Cache` from Node messages, as the
informers would, and asks one plugin or the whole framework.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import hollow
from controlplane.scheduler import config as configuration
from controlplane.scheduler.cache import Cache
from controlplane.scheduler.framework import CycleState, FitError, Framework, Handle
from controlplane.scheduler.nodeinfo import PodInfo
from controlplane.scheduler.plugins import (
    balanced_allocation,
    inter_pod_affinity,
    node_affinity,
    node_name,
    node_ports,
    node_ready,
    node_resources_fit,
    node_selector,
    node_unschedulable,
    pod_topology_spread,
    taint_toleration,
)
from controlplane.scheduler.queue import ACTIVE, BACKOFF, UNSCHEDULABLE, SchedulingQueue
from proto import core_pb2, meta_pb2

CONTROL_PLANE_TAINT = ("node-role.kubernetes.io/control-plane", "", "NoSchedule")


def cluster(*nodes: core_pb2.Node, bound: tuple[tuple[core_pb2.Pod, str], ...] = ()) -> Cache:
    cache = Cache()
    for n in nodes:
        cache.add_node(n)
    for p, where in bound:
        cache.assume(PodInfo.from_pod(p), where)
    return cache


def pod(name: str = "p", **kwargs: Any) -> core_pb2.Pod:
    return hollow.pod(name, "ns", **kwargs)


def info(p: core_pb2.Pod) -> PodInfo:
    return PodInfo.from_pod(p)


def fits(plugin: Any, cache: Cache, p: core_pb2.Pod) -> dict[str, list[str]]:
    """node name -> the plugin's reasons against it ([] when it fits)."""
    result = plugin.filter(CycleState(), info(p), cache.nodes)
    out = {}
    for row, name in enumerate(cache.nodes.names):
        code = 0 if result.unfit is None else int(result.unfit[row])
        out[name] = [r for bit, r in enumerate(result.reasons) if code >> bit & 1]
    return out


def scores(plugin: Any, cache: Cache, p: core_pb2.Pod) -> dict[str, float]:
    state, pi = CycleState(), info(p)
    feasible = np.ones(len(cache.nodes), dtype=bool)
    raw = plugin.score(state, pi, cache.nodes, feasible)
    assert raw is not None
    normalized = plugin.normalize_score(state, pi, raw, feasible)
    return dict(zip(cache.nodes.names, (float(s) for s in normalized), strict=True))


def framework(strategy: str = "LeastAllocated", **profile: Any) -> Framework:
    prof = configuration.Profile(**profile)
    prof.plugins = [p for p in prof.plugins if p != "DefaultBinder"]  # no apiserver to bind through
    prof.args.setdefault("NodeResourcesFit", {"scoringStrategy": {"type": strategy}})
    return configuration.build_framework(prof, Handle(), seed=1)


# ---------------------------------------------------------------- NodeResourcesFit


def test_resources_fit_counts_bound_and_assumed_pods_against_allocatable() -> None:
    cache = cluster(hollow.node("a", cpu="1", memory="1Gi", pods=2), hollow.node("b", cpu="4", memory="1Gi"),
                    hollow.node("c", cpu="4", memory="8Gi", pods=1),
                    bound=((pod("x", cpu="500m"), "a"), (pod("y", cpu="1"), "c")))
    plugin = node_resources_fit.NodeResourcesFit({}, Handle())
    assert fits(plugin, cache, pod(cpu="600m", memory="2Gi")) == {
        "a": ["Insufficient cpu", "Insufficient memory"], "b": ["Insufficient memory"], "c": ["Too many pods"]}
    assert fits(plugin, cache, pod(cpu="500m"))["a"] == []


def test_least_allocated_prefers_the_emptier_node_and_most_allocated_the_fuller() -> None:
    cache = cluster(hollow.node("busy", cpu="4", memory="8Gi"), hollow.node("idle", cpu="4", memory="8Gi"),
                    bound=((pod("x", cpu="2", memory="4Gi"), "busy"),))
    least = scores(node_resources_fit.NodeResourcesFit({}, Handle()), cache, pod(cpu="1", memory="1Gi"))
    most = scores(node_resources_fit.NodeResourcesFit({"scoringStrategy": {"type": "MostAllocated"}}, Handle()),
                  cache, pod(cpu="1", memory="1Gi"))
    assert least["idle"] > least["busy"]
    assert most["busy"] > most["idle"]
    assert least["idle"] == pytest.approx(100 * (0.75 + 0.875) / 2)


def test_unknown_scoring_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="MostAllocated"):
        node_resources_fit.NodeResourcesFit({"scoringStrategy": {"type": "Random"}}, Handle())


def test_balanced_allocation_prefers_the_node_left_balanced() -> None:
    cache = cluster(hollow.node("cpu-heavy", cpu="4", memory="4Gi"), hollow.node("even", cpu="4", memory="4Gi"),
                    bound=((pod("x", cpu="3", memory="100Mi"), "cpu-heavy"), (pod("y", cpu="1", memory="1Gi"), "even")))
    result = scores(balanced_allocation.BalancedAllocation({}, Handle()), cache, pod(cpu="500m", memory="512Mi"))
    assert result["even"] > result["cpu-heavy"]


# ---------------------------------------------------------------- node state


def test_cordoned_nodes_take_no_pods_unless_tolerated() -> None:
    cache = cluster(hollow.node("a", unschedulable=True), hollow.node("b"))
    plugin = node_unschedulable.NodeUnschedulable({}, Handle())
    assert fits(plugin, cache, pod()) == {"a": ["node(s) were unschedulable"], "b": []}
    tolerant = pod()
    tolerant.spec.tolerations.add(key="node.kubernetes.io/unschedulable", operator="Exists", effect="NoSchedule")
    assert fits(plugin, cache, tolerant)["a"] == []


def test_not_ready_and_unknown_nodes_are_skipped() -> None:
    cache = cluster(hollow.node("down", ready="False"), hollow.node("lost", ready="Unknown"), hollow.node("up"))
    assert fits(node_ready.NodeReady({}, Handle()), cache, pod()) == {
        "down": ["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"],
        "lost": ["node(s) had untolerated taint {node.kubernetes.io/unreachable: }"], "up": []}


def test_node_name_pins_a_pod() -> None:
    cache = cluster(hollow.node("a"), hollow.node("b"))
    p = pod()
    p.spec.node_name = "b"
    assert fits(node_name.NodeName({}, Handle()), cache, p) == {
        "a": ["node(s) didn't match the requested node name"], "b": []}


def test_node_selector_needs_every_label() -> None:
    cache = cluster(hollow.node("ssd", labels={"disk": "ssd", "zone": "a"}), hollow.node("hdd", labels={"disk": "hdd"}))
    result = fits(node_selector.NodeSelector({}, Handle()), cache, pod(node_selector={"disk": "ssd", "zone": "a"}))
    assert result == {"ssd": [], "hdd": ["node(s) didn't match Pod's node affinity/selector"]}


# ---------------------------------------------------------------- NodeAffinity


def affinity_pod(*exprs: tuple[str, str, list[str]], preferred: tuple[tuple[int, str, str, list[str]], ...] = ()
                 ) -> core_pb2.Pod:
    p = pod()
    na = p.spec.affinity.node_affinity
    if exprs:
        term = na.required_during_scheduling_ignored_during_execution.node_selector_terms.add()
        for key, op, values in exprs:
            term.match_expressions.add(key=key, operator=op, values=values)
    for weight, key, op, values in preferred:
        pref = na.preferred_during_scheduling_ignored_during_execution.add(weight=weight)
        pref.preference.match_expressions.add(key=key, operator=op, values=values)
    return p


@pytest.mark.parametrize(("expr", "matching"), [
    (("zone", "In", ["a", "b"]), {"n1", "n2"}),
    (("zone", "NotIn", ["a"]), {"n2", "n3"}),
    (("gpu", "Exists", []), {"n3"}),
    (("gpu", "DoesNotExist", []), {"n1", "n2"}),
    (("cores", "Gt", ["8"]), {"n2"}),
    (("cores", "Lt", ["8"]), {"n1"}),
])
def test_required_node_affinity_operators(expr: tuple[str, str, list[str]], matching: set[str]) -> None:
    cache = cluster(hollow.node("n1", labels={"zone": "a", "cores": "4"}),
                    hollow.node("n2", labels={"zone": "b", "cores": "16"}),
                    hollow.node("n3", labels={"gpu": "t4"}))
    result = fits(node_affinity.NodeAffinity({}, Handle()), cache, affinity_pod(expr))
    assert {name for name, reasons in result.items() if not reasons} == matching


def test_preferred_node_affinity_scores_by_weight() -> None:
    cache = cluster(hollow.node("a", labels={"zone": "a"}), hollow.node("b", labels={"zone": "b", "ssd": "1"}),
                    hollow.node("c"))
    p = affinity_pod(preferred=((10, "zone", "In", ["a"]), (30, "ssd", "Exists", [])))
    assert scores(node_affinity.NodeAffinity({}, Handle()), cache, p) == {
        "a": pytest.approx(100 / 3), "b": 100.0, "c": 0.0}


# ---------------------------------------------------------------- TaintToleration


def test_taints_repel_unless_tolerated() -> None:
    cache = cluster(hollow.node("cp", taints=[CONTROL_PLANE_TAINT]),
                    hollow.node("gpu", taints=[("gpu", "true", "NoExecute")]), hollow.node("w"))
    plugin = taint_toleration.TaintToleration({}, Handle())
    assert fits(plugin, cache, pod()) == {
        "cp": ["node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"],
        "gpu": ["node(s) had untolerated taint {gpu: true}"], "w": []}
    p = pod()
    p.spec.tolerations.add(key="gpu", operator="Equal", value="true", effect="NoExecute")
    p.spec.tolerations.add(key="node-role.kubernetes.io/control-plane", operator="Exists")
    assert all(not reasons for reasons in fits(plugin, cache, p).values())
    wrong_value = pod()
    wrong_value.spec.tolerations.add(key="gpu", value="false")
    assert fits(plugin, cache, wrong_value)["gpu"]


def test_prefer_no_schedule_lowers_the_score() -> None:
    cache = cluster(hollow.node("soft", taints=[("spot", "", "PreferNoSchedule")]), hollow.node("plain"))
    plugin = taint_toleration.TaintToleration({}, Handle())
    assert fits(plugin, cache, pod()) == {"soft": [], "plain": []}
    assert scores(plugin, cache, pod()) == {"soft": 0.0, "plain": 100.0}
    tolerant = pod()
    tolerant.spec.tolerations.add(key="spot", operator="Exists", effect="PreferNoSchedule")
    assert scores(plugin, cache, tolerant) == {"soft": 100.0, "plain": 100.0}


# ---------------------------------------------------------------- spreading


def spread_pod(name: str, when: str = "DoNotSchedule") -> core_pb2.Pod:
    p = pod(name, labels={"app": "web"})
    c = p.spec.topology_spread_constraints.add(max_skew=1, topology_key="kubernetes.io/hostname",
                                               when_unsatisfiable=when)
    c.label_selector.match_labels["app"] = "web"
    return p


def test_topology_spread_keeps_skew_within_max_skew() -> None:
    web = [(spread_pod(f"w{i}"), n) for i, n in enumerate(["a", "a", "b"])]
    cache = cluster(hollow.node("a"), hollow.node("b"), hollow.node("c"), bound=tuple(web))
    plugin = pod_topology_spread.PodTopologySpread({}, Handle())
    result = fits(plugin, cache, spread_pod("new"))
    assert result == {"a": ["node(s) didn't match pod topology spread constraints"],
                      "b": ["node(s) didn't match pod topology spread constraints"], "c": []}
    soft = scores(plugin, cache, spread_pod("new", "ScheduleAnyway"))
    assert soft["c"] == 100.0 and soft["a"] == 0.0 and 0 < soft["b"] < 100


def anti_pod(name: str, app: str = "db") -> core_pb2.Pod:
    p = pod(name, labels={"app": app})
    term = p.spec.affinity.pod_anti_affinity.required_during_scheduling_ignored_during_execution.add(
        topology_key="kubernetes.io/hostname")
    term.label_selector.CopyFrom(meta_pb2.LabelSelector(match_labels={"app": "db"}))
    return p


def test_pod_anti_affinity_over_hostname_is_symmetric() -> None:
    cache = cluster(hollow.node("a"), hollow.node("b"), bound=((anti_pod("db-0"), "a"),))
    plugin = inter_pod_affinity.InterPodAffinity({}, Handle())
    assert fits(plugin, cache, anti_pod("db-1")) == {
        "a": ["node(s) didn't match pod anti-affinity rules",
              "node(s) didn't satisfy existing pods anti-affinity rules"], "b": []}
    # A plain pod labelled app=db has no rule of its own, but db-0's rule keeps it off node a.
    assert fits(plugin, cache, pod("plain", labels={"app": "db"}))["a"] == [
        "node(s) didn't satisfy existing pods anti-affinity rules"]
    assert fits(plugin, cache, pod("other", labels={"app": "web"})) == {"a": [], "b": []}


def pod_affinity_pod(name: str, app: str, wants: str, *, zone: bool = False) -> core_pb2.Pod:
    p = pod(name, labels={"app": app})
    term = p.spec.affinity.pod_affinity.required_during_scheduling_ignored_during_execution.add(
        topology_key="zone" if zone else "kubernetes.io/hostname")
    term.label_selector.match_labels["app"] = wants
    return p


def test_pod_affinity_follows_the_group_and_lets_its_first_member_start() -> None:
    cache = cluster(hollow.node("a", labels={"zone": "east"}), hollow.node("b", labels={"zone": "east"}),
                    hollow.node("c", labels={"zone": "west"}), bound=((pod("cache-0", labels={"app": "cache"}), "b"),))
    plugin = inter_pod_affinity.InterPodAffinity({}, Handle())
    near_host = fits(plugin, cache, pod_affinity_pod("web", "web", "cache"))
    assert near_host == {"a": ["node(s) didn't match pod affinity rules"], "b": [],
                         "c": ["node(s) didn't match pod affinity rules"]}
    near_zone = fits(plugin, cache, pod_affinity_pod("web", "web", "cache", zone=True))
    assert {n for n, reasons in near_zone.items() if not reasons} == {"a", "b"}
    # Nobody matches "db" yet, but the pod is one: the first of its group goes anywhere.
    assert all(not r for r in fits(plugin, cache, pod_affinity_pod("db-0", "db", "db")).values())
    assert all(r for r in fits(plugin, cache, pod_affinity_pod("web", "web", "db")).values())


def test_node_ports_keep_host_ports_unique_per_node() -> None:
    def with_port(name: str, port: int, host_ip: str = "") -> core_pb2.Pod:
        p = pod(name)
        p.spec.containers[0].ports.add(container_port=80, host_port=port, host_ip=host_ip)
        return p

    cache = cluster(hollow.node("a"), hollow.node("b"), bound=((with_port("x", 8080), "a"),))
    plugin = node_ports.NodePorts({}, Handle())
    assert fits(plugin, cache, with_port("y", 8080)) == {
        "a": ["node(s) didn't have free ports for the requested pod ports"], "b": []}
    assert fits(plugin, cache, with_port("z", 9090)) == {"a": [], "b": []}
    assert fits(plugin, cache, pod("plain")) == {"a": [], "b": []}


# ---------------------------------------------------------------- the framework


def test_fit_error_has_kube_schedulers_message() -> None:
    cache = cluster(hollow.node("cp", cpu="8", taints=[CONTROL_PLANE_TAINT]),
                    hollow.node("w1", cpu="1"), hollow.node("w2", cpu="1"))
    with pytest.raises(FitError) as err:
        framework().schedule(CycleState(), info(pod(cpu="2")), cache.nodes)
    assert str(err.value) == ("0/3 nodes are available: 1 node(s) had untolerated taint "
                              "{node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu.")


def test_no_nodes_at_all() -> None:
    with pytest.raises(FitError, match=r"^no nodes available to schedule pods$"):
        framework().schedule(CycleState(), info(pod()), Cache().nodes)


def fill(strategy: str, pods: int) -> dict[str, int]:
    cache = cluster(*(hollow.node(f"n{i}", cpu="4", memory="8Gi") for i in range(4)))
    fw = framework(strategy)
    for i in range(pods):
        pi = info(pod(f"p{i}", cpu="1", memory="1Gi"))
        cache.assume(pi, fw.schedule(CycleState(), pi, cache.nodes))
    return {name: int(cache.nodes.requested[row][2]) for name, row in cache.nodes.index.items()}


def test_most_allocated_fills_one_node_before_the_next() -> None:
    assert sorted(fill("MostAllocated", 6).values()) == [0, 0, 2, 4]


def test_least_allocated_spreads() -> None:
    assert sorted(fill("LeastAllocated", 8).values()) == [2, 2, 2, 2]


def test_config_file_sets_strategy_weights_and_plugins() -> None:
    cfg = configuration.parse({
        "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
        "profiles": [{"schedulerName": "packer",
                      "plugins": {"multiPoint": {"disabled": [{"name": "NodeResourcesBalancedAllocation"}]},
                                  "score": {"enabled": [{"name": "NodeResourcesFit", "weight": 5}]}},
                      "pluginConfig": [{"name": "NodeResourcesFit",
                                        "args": {"scoringStrategy": {"type": "MostAllocated"}}}]}]})
    prof = cfg.profiles[0]
    assert prof.scheduler_name == "packer" and "NodeResourcesBalancedAllocation" not in prof.plugins
    assert prof.weights["NodeResourcesFit"] == 5
    assert prof.args["NodeResourcesFit"]["scoringStrategy"]["type"] == "MostAllocated"
    with pytest.raises(configuration.ConfigError, match="unknown plugin 'Nope'"):
        configuration.parse({"profiles": [{"plugins": {"multiPoint": {"enabled": [{"name": "Nope"}]}}}]})
    with pytest.raises(configuration.ConfigError, match="unknown field"):
        configuration.parse({"percentageOfNodesToScoreTypo": 5})


def test_the_binpacking_example_config_packs() -> None:
    cfg = configuration.load(Path(__file__).parent.parent / "docs/examples/scheduler-binpacking.yaml")
    [profile] = cfg.profiles
    assert profile.weights["NodeResourcesFit"] == 5
    fw = configuration.build_framework(
        configuration.Profile(plugins=[p for p in profile.plugins if p != "DefaultBinder"],
                              weights=profile.weights, args=profile.args), Handle(), seed=3)
    cache = cluster(hollow.node("a"), hollow.node("b"))
    placed = []
    for i in range(3):
        pi = info(pod(f"p{i}", cpu="1"))
        placed.append(fw.schedule(CycleState(), pi, cache.nodes))
        cache.assume(pi, placed[-1])
    assert len(set(placed)) == 1


# ---------------------------------------------------------------- cache and queue


def test_cache_assume_forget_and_confirm() -> None:
    cache = cluster(hollow.node("a", cpu="2"))
    p = pod("x", cpu="1")
    p.metadata.uid = "u1"
    cache.assume(info(p), "a")
    assert cache.nodes.requested[0][0] == 1000 and cache.is_assumed("ns/x")
    cache.forget("ns/x")
    assert cache.nodes.requested[0][0] == 0
    cache.assume(info(p), "a")
    p.spec.node_name = "a"
    cache.add_pod(p)  # the informer shows it bound: confirmed, counted once
    assert not cache.is_assumed("ns/x") and cache.nodes.requested[0][0] == 1000
    cache.forget("ns/x")  # a confirmed pod is not forgotten
    assert cache.nodes.requested[0][0] == 1000
    cache.remove_pod(p)
    assert cache.nodes.requested[0][0] == 0


async def test_queue_orders_by_priority_then_arrival_and_parks_unschedulable() -> None:
    queue = SchedulingQueue(initial_backoff=0.01, max_backoff=0.05)
    queue.add("ns/low", 0)
    queue.add("ns/high", 100)
    queue.add("ns/low2", 0)
    assert [await queue.pop() for _ in range(3)] == ["ns/high", "ns/low", "ns/low2"]
    queue.add_unschedulable("ns/high")
    assert queue.where("ns/high") == UNSCHEDULABLE
    queue.move_all()  # a node appeared
    assert queue.where("ns/high") in (ACTIVE, BACKOFF)
    assert await queue.pop() == "ns/high"
    # A pod that failed while the cluster changed under it is not parked.
    queue.add("ns/racer", 0)
    assert await queue.pop() == "ns/racer"
    queue.move_all()
    queue.add_unschedulable("ns/racer")
    assert queue.where("ns/racer") == BACKOFF
