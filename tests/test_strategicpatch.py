"""Strategic merge patch does what kubectl means by the patches it sends.

The patch vectors named after a recording are kubectl 1.32's own request bodies
(docs/http-api.md says how they were recorded); the others exercise one rule of
Kubernetes' strategic merge patch each. Every result is also parsed by
proto/manifest.py, as the registry will, so a patch never yields an object the
API cannot hold.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from proto import apps_pb2, core_pb2, kinds, manifest
from proto.errors import BadRequest, Invalid
from proto.strategicpatch import UNPROCESSABLE, strategic_merge_patch


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                     "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "nginx", "image": "nginx:1.26",
                     "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443, "protocol": "TCP"}],
                     "env": [{"name": "MODE", "value": "prod"}, {"name": "LEVEL", "value": "info"}]},
                    {"name": "sidecar", "image": "busybox:1.36"},
                ]},
            },
        },
    }


def patched(original: dict[str, Any], patch: dict[str, Any], message: Any = apps_pb2.Deployment) -> dict[str, Any]:
    before = copy.deepcopy(original)
    result = strategic_merge_patch(original, patch, message)
    assert original == before, "the patch changed its input"
    kind = kinds.for_message(message())
    manifest.from_dict(result, kind)  # the registry must be able to hold the result
    return result


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return result


# ---------------------------------------------------------------- kubectl's own patches


def test_set_image_changes_only_the_named_container() -> None:
    # X_set_image_deployment_web_nginx_nginx_1.2.req.txt
    patch = {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "nginx"}],
                                            "containers": [{"image": "nginx:1.29", "name": "nginx"}]}}}}
    original = deployment()
    original["spec"]["template"]["spec"]["containers"].pop()  # kubectl recorded it on a one-container Deployment
    result = patched(original, patch)
    assert containers(result) == [{**containers(original)[0], "image": "nginx:1.29"}]


def test_set_env_merges_env_by_name_and_keeps_the_other_container() -> None:
    # X_set_env_deployment_web_A_B.req.txt, with a sidecar kubectl's order leaves where it was
    patch = {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "nginx"}],
                                            "containers": [{"env": [{"name": "A", "value": "B"}], "name": "nginx"}]}}}}
    result = patched(deployment(), patch)
    nginx, sidecar = containers(result)
    assert sidecar == {"name": "sidecar", "image": "busybox:1.36"}
    assert nginx["image"] == "nginx:1.26"
    # A new element goes before the live ones beside it, as Kubernetes orders a merged list.
    assert nginx["env"] == [{"name": "A", "value": "B"}, {"name": "MODE", "value": "prod"},
                            {"name": "LEVEL", "value": "info"}]


def test_client_side_apply_patch_with_set_element_order() -> None:
    # A_applyagain.req.txt: replicas, the last-applied annotation and the image in one patch
    last_applied = '{"apiVersion":"apps/v1","kind":"Deployment"}\n'
    patch = {"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied}},
             "spec": {"replicas": 3, "template": {"spec": {
                 "$setElementOrder/containers": [{"name": "nginx"}],
                 "containers": [{"image": "nginx:1.27", "name": "nginx"}]}}}}
    original = deployment()
    original["spec"]["template"]["spec"]["containers"].pop()
    result = patched(original, patch)
    assert result["spec"]["replicas"] == 3
    assert result["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "1",
                                                 "kubectl.kubernetes.io/last-applied-configuration": last_applied}
    assert containers(result)[0]["image"] == "nginx:1.27"
    assert containers(result)[0]["ports"] == containers(original)[0]["ports"]


def test_applysame_adds_a_port_by_container_port() -> None:
    # A_applysame.req.txt: the port the manifest gained, merged into the container's ports by containerPort
    patch = {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "nginx"}],
                                            "containers": [{"name": "nginx", "ports": [{"containerPort": 8080}]}]}}}}
    result = patched(deployment(), patch)
    assert [p["containerPort"] for p in containers(result)[0]["ports"]] == [8080, 80, 443]


def test_set_element_order_reorders_containers() -> None:
    patch = {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "nginx"}]}}}}
    result = patched(deployment(), patch)
    assert [c["name"] for c in containers(result)] == ["sidecar", "nginx"]
    assert containers(result)[1] == containers(deployment())[0]


def test_set_element_order_must_agree_with_the_patch_list() -> None:
    patch = {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "nginx"}],
                                            "containers": [{"name": "other", "image": "x"}]}}}}
    with pytest.raises(BadRequest, match="doesn't match \\$setElementOrder"):
        strategic_merge_patch(deployment(), patch, apps_pb2.Deployment)


def test_rollout_restart_and_pause_and_patch() -> None:
    # X_rollout_restart_deployment_web.req.txt, Y_rollout_pause_deployment_web_.req.txt,
    # Y_patch_deployment_web__p___spec.req.txt
    result = patched(deployment(), {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-12-06T18:39:24Z"}}}}})
    assert result["spec"]["template"]["metadata"] == {
        "labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-12-06T18:39:24Z"}}
    assert patched(result, {"spec": {"paused": True}})["spec"]["paused"] is True
    assert patched(result, {"spec": {"replicas": 5}})["spec"]["replicas"] == 5


def test_cordon_and_taint_a_node() -> None:
    node: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"},
                            "spec": {"podCIDR": "10.1.0.0/24", "taints": [{"key": "old", "effect": "NoExecute"}]}}
    # X_cordon_node1.req.txt
    cordoned = patched(node, {"spec": {"unschedulable": True}}, core_pb2.Node)
    assert cordoned["spec"] == {**node["spec"], "unschedulable": True}
    # X_taint_nodes_node1_k_v_NoSchedule.req.txt: taints have no merge key, so kubectl sends the whole list
    tainted = patched(node, {"spec": {"taints": [{"effect": "NoSchedule", "key": "k", "value": "v"}]}}, core_pb2.Node)
    assert tainted["spec"]["taints"] == [{"effect": "NoSchedule", "key": "k", "value": "v"}]


# ---------------------------------------------------------------- the rules


def test_null_deletes_and_maps_merge() -> None:
    result = patched(deployment(), {"metadata": {"labels": {"tier": "front", "app": None},
                                                 "annotations": None}})
    assert result["metadata"]["labels"] == {"tier": "front"}
    assert "annotations" not in result["metadata"]


def test_patch_delete_removes_the_element_with_that_key() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}
    assert [c["name"] for c in containers(patched(deployment(), patch))] == ["nginx"]


def test_patch_delete_needs_the_merge_key() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"image": "x", "$patch": "delete"}]}}}}
    with pytest.raises(BadRequest, match="does not contain declared merge key: name"):
        strategic_merge_patch(deployment(), patch, apps_pb2.Deployment)


def test_every_merged_element_needs_its_merge_key() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"image": "nginx:2"}]}}}}
    with pytest.raises(BadRequest, match="does not contain declared merge key: name"):
        strategic_merge_patch(deployment(), patch, apps_pb2.Deployment)


def test_patch_replace_in_a_list_replaces_the_list() -> None:
    only = {"name": "only", "image": "redis"}
    patch = {"spec": {"template": {"spec": {"containers": [only, {"$patch": "replace"}]}}}}
    assert containers(patched(deployment(), patch)) == [only]


def test_patch_replace_in_a_map_replaces_the_map() -> None:
    result = patched(deployment(), {"metadata": {"labels": {"$patch": "replace", "new": "one"}}})
    assert result["metadata"]["labels"] == {"new": "one"}


def test_patch_delete_in_a_map_deletes_it() -> None:
    result = patched(deployment(), {"spec": {"strategy": {"rollingUpdate": {"$patch": "delete"}}}})
    assert result["spec"]["strategy"] == {"type": "RollingUpdate"}


def test_unknown_patch_types_and_directives_are_refused() -> None:
    with pytest.raises(BadRequest, match="unknown patch type: remove"):
        strategic_merge_patch(deployment(), {"metadata": {"labels": {"$patch": "remove"}}}, apps_pb2.Deployment)
    with pytest.raises(BadRequest, match="unknown patch type: remove"):
        strategic_merge_patch(deployment(), {"spec": {"template": {"spec": {"containers": [
            {"name": "nginx", "$patch": "remove"}]}}}}, apps_pb2.Deployment)
    with pytest.raises(BadRequest, match="unknown patch directive '\\$replaceAll'"):
        strategic_merge_patch(deployment(), {"spec": {"$replaceAll": True}}, apps_pb2.Deployment)


def test_env_merges_by_name_and_ports_by_container_port() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{
        "name": "nginx",
        "env": [{"name": "LEVEL", "value": "debug"}],
        "ports": [{"containerPort": 443, "name": "https"}]}]}}}}
    nginx = containers(patched(deployment(), patch))[0]
    assert nginx["env"] == [{"name": "MODE", "value": "prod"}, {"name": "LEVEL", "value": "debug"}]
    assert nginx["ports"] == [{"containerPort": 80, "protocol": "TCP"},
                              {"containerPort": 443, "protocol": "TCP", "name": "https"}]


def test_lists_without_a_merge_key_are_replaced() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "args": ["-g", "daemon off;"]}]}}}}
    first = containers(patched(deployment(), patch))[0]
    again = strategic_merge_patch(
        {"spec": {"template": {"spec": {"containers": [first]}}}},
        {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "args": ["-v"]}]}}}},
        apps_pb2.Deployment)
    assert containers(again)[0]["args"] == ["-v"]


def test_retain_keys_switches_a_deployment_to_recreate() -> None:
    # What kubectl apply sends when a manifest changes strategy from RollingUpdate to Recreate.
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": None, "type": "Recreate"}}}
    assert patched(deployment(), patch)["spec"]["strategy"] == {"type": "Recreate"}


def test_retain_keys_clears_what_the_patch_does_not_name() -> None:
    result = patched(deployment(), {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}})
    assert result["spec"]["strategy"] == {"type": "Recreate"}


def test_retain_keys_must_name_what_the_patch_sets() -> None:
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "RollingUpdate",
                                   "rollingUpdate": {"maxSurge": 1}}}}
    with pytest.raises(Invalid) as caught:
        strategic_merge_patch(deployment(), patch, apps_pb2.Deployment)
    assert caught.value.message == UNPROCESSABLE
    assert caught.value.causes == [("", "patch content doesn't match retainKeys list")]
    with pytest.raises(BadRequest, match="invalid patch format of retainKeys"):
        strategic_merge_patch(deployment(), {"spec": {"strategy": {"$retainKeys": "type"}}}, apps_pb2.Deployment)


def pod(finalizers: list[str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "finalizers": finalizers},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def test_delete_from_primitive_list_removes_finalizers() -> None:
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/b"]}}
    result = patched(pod(["example.com/a", "example.com/b", "example.com/c"]), patch, core_pb2.Pod)
    assert result["metadata"]["finalizers"] == ["example.com/a", "example.com/c"]


def test_finalizers_merge_as_a_set() -> None:
    result = patched(pod(["example.com/a", "example.com/b"]), {"metadata": {"finalizers": ["example.com/b",
                                                                                           "example.com/c"]}},
                     core_pb2.Pod)
    assert result["metadata"]["finalizers"] == ["example.com/a", "example.com/b", "example.com/c"]
    ordered = patched(pod(["a.io/x", "a.io/y"]), {"metadata": {"$setElementOrder/finalizers": ["a.io/y", "a.io/x"]}},
                      core_pb2.Pod)
    assert ordered["metadata"]["finalizers"] == ["a.io/y", "a.io/x"]


def test_delete_from_primitive_list_needs_a_list_of_values() -> None:
    with pytest.raises(BadRequest, match="invalid patch format of primitive list"):
        strategic_merge_patch(pod(["a.io/x"]), {"metadata": {"$deleteFromPrimitiveList/finalizers": "a.io/x"}},
                              core_pb2.Pod)


def test_fields_the_schema_does_not_know_merge_as_maps() -> None:
    # CRDs refuse strategic merge patch before this; an unknown field inside a kind merges as JSON would.
    result = strategic_merge_patch({"spec": {"extra": {"a": 1, "list": [1, 2]}}},
                                   {"spec": {"extra": {"b": 2, "list": [3]}}}, apps_pb2.Deployment)
    assert result == {"spec": {"extra": {"a": 1, "b": 2, "list": [3]}}}


def test_new_fields_come_in_with_their_directives_resolved() -> None:
    original = deployment()
    del original["spec"]["template"]["spec"]["containers"]
    env = [{"name": "Y", "value": "1"}, {"name": "X", "value": "2"}]
    patch = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
        "containers": [{"name": "a", "image": "x", "$setElementOrder/env": [{"name": "Y"}, {"name": "X"}], "env": env},
                       {"name": "b", "image": "y"}]}}}}
    # patched() parses the result: a directive left behind would be an unknown field.
    assert containers(patched(original, patch)) == [{"name": "a", "image": "x", "env": env},
                                                    {"name": "b", "image": "y"}]


def test_a_patch_must_be_an_object() -> None:
    with pytest.raises(BadRequest, match="must be a JSON object, got a list"):
        strategic_merge_patch(deployment(), [{"op": "add"}], apps_pb2.Deployment)
