"""The controllers' pure decisions, without a server: rollout arithmetic, deletion order,
taint tolerations, HPA stabilisation, expectations and duration flags."""

from __future__ import annotations

import math
import time

import pytest

from controlplane.controllers import deployment as dep
from controlplane.controllers.expectations import Expectations
from controlplane.controllers.hpa import HorizontalPodAutoscalerController
from controlplane.controllers.main import enabled, parse_duration
from controlplane.controllers.nodelifecycle import eviction_time, tolerates
from controlplane.controllers.replicaset import deletion_cost, slow_start
from proto import apps_pb2, autoscaling_pb2, core_pb2
from proto.wellknown import LABEL_POD_TEMPLATE_HASH, TAINT_NODE_UNREACHABLE


def rolling(replicas: int, surge: str, unavailable: str) -> apps_pb2.Deployment:
    d = apps_pb2.Deployment()
    d.spec.replicas = replicas
    d.spec.strategy.type = "RollingUpdate"
    d.spec.strategy.rolling_update.max_surge = surge
    d.spec.strategy.rolling_update.max_unavailable = unavailable
    return d


def rs(replicas: int) -> apps_pb2.ReplicaSet:
    r = apps_pb2.ReplicaSet()
    r.spec.replicas = replicas
    return r


def test_fenceposts_round_surge_up_and_unavailable_down() -> None:
    assert (dep.max_surge(rolling(10, "25%", "25%")), dep.max_unavailable(rolling(10, "25%", "25%"))) == (3, 2)
    assert dep.max_unavailable(rolling(10, "0", "0")) == 1  # both zero would never progress
    assert dep.max_surge(rolling(4, "1", "0")) == 1


def test_new_replicaset_grows_within_surge() -> None:
    d = rolling(10, "3", "0")
    old, new = rs(10), rs(0)
    assert dep.new_rs_replicas(d, [old, new], new) == 3
    new.spec.replicas = 3
    assert dep.new_rs_replicas(d, [old, new], new) == 3  # 13 pods: at the ceiling
    old.spec.replicas = 7
    assert dep.new_rs_replicas(d, [old, new], new) == 6


def test_template_hash_ignores_its_own_label_and_changes_with_collisions() -> None:
    t = core_pb2.PodTemplateSpec()
    t.metadata.labels["app"] = "web"
    t.spec.containers.add(name="app", image="nginx")
    labelled = core_pb2.PodTemplateSpec()
    labelled.CopyFrom(t)
    labelled.metadata.labels[LABEL_POD_TEMPLATE_HASH] = dep.compute_hash(t, 0)
    assert dep.templates_equal(t, labelled)
    assert dep.compute_hash(t, 0) == dep.compute_hash(t, 0) != dep.compute_hash(t, 1)
    assert set(dep.compute_hash(t, 0)) <= set("bcdfghjklmnpqrstvwxz2456789")


def test_template_echoed_with_empty_resources_is_the_same_template() -> None:
    # kubectl rollout undo sends the old ReplicaSet's template back with `resources: {}` on each container:
    # the Deployment must find that ReplicaSet again (same hash), not start a new one.
    t = core_pb2.PodTemplateSpec()
    t.spec.containers.add(name="app", image="nginx:1.22")
    echoed = core_pb2.PodTemplateSpec()
    echoed.CopyFrom(t)
    echoed.spec.containers[0].resources.SetInParent()
    assert dep.templates_equal(t, echoed) and dep.compute_hash(t, 0) == dep.compute_hash(echoed, 0)
    echoed.spec.containers[0].resources.limits["cpu"] = "1"
    assert not dep.templates_equal(t, echoed) and dep.compute_hash(t, 0) != dep.compute_hash(echoed, 0)


def pod(name: str, *, node: str = "", phase: str = "Running", ready: bool = True, created: int = 0) -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name = name
    p.metadata.creation_timestamp.FromSeconds(created)
    p.spec.node_name = node
    p.status.phase = phase
    p.status.conditions.add(type="Ready", status="True" if ready else "False")
    return p


def test_scale_down_deletes_unscheduled_then_not_ready_then_newest() -> None:
    pods = [pod("old", node="n"), pod("new", node="n", created=100), pod("unready", node="n", ready=False),
            pod("pending", phase="Pending", ready=False)]
    assert [p.metadata.name for p in sorted(pods, key=deletion_cost)] == ["pending", "unready", "new", "old"]


async def test_slow_start_doubles_and_stops_at_the_first_failure() -> None:
    calls: list[int] = []

    async def create() -> None:
        calls.append(1)
        if len(calls) > 4:
            raise RuntimeError("refused")

    done, error = await slow_start(100, create)
    assert done == 4 and isinstance(error, RuntimeError)  # batches of 1 and 2 succeed; of 4, one does
    assert len(calls) == 7


def test_tolerations_and_eviction_times() -> None:
    taint = core_pb2.Taint(key=TAINT_NODE_UNREACHABLE, effect="NoExecute")
    taint.time_added.FromSeconds(1000)
    bare = core_pb2.Pod()
    assert eviction_time(bare, [taint], 300, 0) == 1300
    tolerant = core_pb2.Pod()
    tolerant.spec.tolerations.add(key=TAINT_NODE_UNREACHABLE, operator="Exists", effect="NoExecute",
                                  toleration_seconds=5)
    assert eviction_time(tolerant, [taint], 300, 0) == 1005
    forever = core_pb2.Pod()
    forever.spec.tolerations.add(operator="Exists")
    assert tolerates(forever.spec.tolerations[0], taint)
    assert eviction_time(forever, [taint], 300, 0) == math.inf
    other = core_pb2.Taint(key="dedicated", value="gpu", effect="NoExecute")
    assert eviction_time(bare, [other], 300, 7) == 7  # untolerated ordinary NoExecute: at once


def test_hpa_stabilisation_keeps_the_highest_recent_recommendation() -> None:
    controller = HorizontalPodAutoscalerController.__new__(HorizontalPodAutoscalerController)
    controller.downscale_stabilization = 60.0
    controller._recommendations = {}
    hpa = autoscaling_pb2.HorizontalPodAutoscaler()
    assert controller._stabilize("k", hpa, 1, 4) == 4  # up: at once
    assert controller._stabilize("k", hpa, 4, 1) == 4  # down: not while 4 was recommended recently
    controller._recommendations["k"] = [(time.monotonic() - 120, 4)]
    assert controller._stabilize("k", hpa, 4, 1) == 1


def test_expectations_wait_for_observed_creates() -> None:
    exp = Expectations()
    exp.expect_creations("ns/rs", 2)
    assert not exp.satisfied("ns/rs")
    exp.creation_observed("ns/rs")
    exp.creation_observed("ns/rs")
    assert exp.satisfied("ns/rs")
    exp.expect_deletions("ns/rs", ["ns/a"])
    assert not exp.satisfied("ns/rs")
    exp.deletion_observed("ns/rs", "ns/a")
    assert exp.satisfied("ns/rs")


def test_flags() -> None:
    assert parse_duration("40s") == 40 and parse_duration("1m30s") == 90 and parse_duration("250ms") == 0.25
    assert parse_duration("2") == 2
    with pytest.raises(Exception, match="invalid duration"):
        parse_duration("forty")
    assert enabled("*,-podgc") == [n for n in enabled("*") if n != "podgc"]
    assert enabled("replicaset,deployment") == ["replicaset", "deployment"]
