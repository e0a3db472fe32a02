"""A PATCH body is read as its Content-Type says, and a bad one is refused with Kubernetes' code.

Bodies named after a recording are what kubectl 1.32 sent (docs/http-api.md):
`kubectl patch --type json|merge`, `rollout undo` (JSON patch), `label` and
`annotate` (merge patch), `patch` and `edit` (strategic merge patch).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import orjson
import pytest

from controlplane.apiserver.patch import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    apply_patch,
)
from proto import kinds, manifest
from proto.errors import BadRequest, Invalid, TooLarge, UnsupportedMediaType

DEPLOYMENTS = kinds.resolve("deployments")
PODS = kinds.resolve("pods")


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "annotations": {"deployment.kubernetes.io/revision": "3"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"},
                                                      {"name": "log", "image": "busybox"}]}}},
    }


def patch(current: dict[str, Any], body: bytes | str, content_type: str, kind: kinds.Kind = DEPLOYMENTS
          ) -> dict[str, Any]:
    before = copy.deepcopy(current)
    result = apply_patch(kind, current, body.encode() if isinstance(body, str) else body, content_type)
    assert current == before, "apply_patch changed the stored object"
    manifest.from_dict(result, kind)
    return result


# ---------------------------------------------------------------- JSON patch (RFC 6902)


def test_kubectl_patch_type_json_replaces_replicas() -> None:
    # Y_patch_deployment_web___type_js.req.txt
    result = patch(deployment(), '[{"op":"replace","path":"/spec/replicas","value":7}]', JSON_PATCH)
    assert result["spec"]["replicas"] == 7


def test_rollout_undo_replaces_the_template_and_annotations() -> None:
    # L_15_rolloutundo.req.txt
    body = ('[{"op":"replace","path":"/spec/template","value":{"metadata":{"creationTimestamp":null,'
            '"labels":{"app":"web"}},"spec":{"containers":[{"name":"nginx","image":"nginx:1.26","resources":{}}]}}},'
            '{"op":"replace","path":"/metadata/annotations","value":{"deployment.kubernetes.io/revision":"2"}}]')
    result = patch(deployment(), body, JSON_PATCH)
    assert result["spec"]["template"]["spec"]["containers"] == [{"name": "nginx", "image": "nginx:1.26",
                                                                 "resources": {}}]
    assert result["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "2"}


def test_json_patch_test_and_add_and_remove() -> None:
    body = [{"op": "test", "path": "/spec/replicas", "value": 2},
            {"op": "add", "path": "/metadata/labels", "value": {"tier": "web"}},
            {"op": "remove", "path": "/spec/template/spec/containers/1"}]
    result = patch(deployment(), orjson.dumps(body), JSON_PATCH)
    assert result["metadata"]["labels"] == {"tier": "web"}
    assert [c["name"] for c in result["spec"]["template"]["spec"]["containers"]] == ["nginx"]


def test_a_failed_test_operation_is_422_and_changes_nothing() -> None:
    body = '[{"op":"replace","path":"/spec/replicas","value":9},{"op":"test","path":"/spec/replicas","value":5}]'
    with pytest.raises(Invalid) as caught:
        apply_patch(DEPLOYMENTS, deployment(), body.encode(), JSON_PATCH)
    assert caught.value.reason == "Invalid"
    assert caught.value.message == "the server rejected our request due to an error in our request"
    assert caught.value.causes == [("", "testing value /spec/replicas failed")]


def test_an_operation_on_a_missing_path_is_422_without_the_object_in_it() -> None:
    with pytest.raises(Invalid) as caught:
        apply_patch(DEPLOYMENTS, deployment(), b'[{"op":"replace","path":"/spec/paused/x","value":1}]', JSON_PATCH)
    assert caught.value.causes == [("", "jsonpatch replace operation does not apply: doc is missing path: "
                                        "/spec/paused/x")]
    assert "nginx" not in str(caught.value.causes)


@pytest.mark.parametrize(("body", "message"), [
    (b'{"op":"add"}', "a JSON patch must be a list of operations, got an object"),
    (b'[{"op":"add","path":"/a"', "the JSON patch is not valid JSON"),
    (b'["add"]', "operation 0 is a string, not an object"),
    (b'[{"op":"frobnicate","path":"/a"}]', "operation 0 has op 'frobnicate'"),
    (b'[{"op":"replace","value":1}]', 'operation 0 (replace) needs a "path" string'),
    (b'[{"op":"add","path":"/a"}]', 'operation 0 (add) needs a "value"'),
    (b'[{"op":"move","path":"/a"}]', 'operation 0 (move) needs a "from" string'),
])
def test_malformed_json_patches_are_400(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)) as caught:
        apply_patch(DEPLOYMENTS, deployment(), body, JSON_PATCH)
    assert type(caught.value) is BadRequest


def test_a_json_patch_must_leave_an_object() -> None:
    with pytest.raises(Invalid) as caught:
        apply_patch(DEPLOYMENTS, deployment(), b'[{"op":"replace","path":"","value":[1]}]', JSON_PATCH)
    assert caught.value.causes == [("", "the patched document is a list, not an object")]


def test_too_many_json_patch_operations_are_413() -> None:
    body = orjson.dumps([{"op": "test", "path": "/kind", "value": "Deployment"}] * 10001)
    with pytest.raises(TooLarge, match="The allowed maximum operations in a JSON patch is 10000, got 10001"):
        apply_patch(DEPLOYMENTS, deployment(), body, JSON_PATCH)


# ---------------------------------------------------------------- merge patch (RFC 7386)


def test_kubectl_label_and_annotate_merge_into_metadata() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nginx", "labels": {"run": "nginx"}},
           "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}
    # L_16_label.req.txt, then X_annotate_pod_nginx_a_b.req.txt
    labelled = patch(pod, '{"metadata":{"labels":{"foo":"bar"}}}', MERGE_PATCH, PODS)
    annotated = patch(labelled, '{"metadata":{"annotations":{"a":"b"}}}', MERGE_PATCH, PODS)
    assert annotated["metadata"] == {"name": "nginx", "labels": {"run": "nginx", "foo": "bar"},
                                     "annotations": {"a": "b"}}
    # `kubectl label pod nginx foo-` sends a null
    unlabelled = patch(annotated, '{"metadata":{"labels":{"foo":null}}}', MERGE_PATCH, PODS)
    assert unlabelled["metadata"]["labels"] == {"run": "nginx"}


def test_merge_patch_replaces_lists_whole() -> None:
    # Y_patch_deployment_web___type_me.req.txt, and a list (unlike strategic merge patch)
    body = '{"spec":{"replicas":6,"template":{"spec":{"containers":[{"name":"x","image":"y"}]}}}}'
    result = patch(deployment(), body, MERGE_PATCH + "; charset=utf-8")
    assert result["spec"]["replicas"] == 6
    assert result["spec"]["template"]["spec"]["containers"] == [{"name": "x", "image": "y"}]


@pytest.mark.parametrize(("body", "message"), [
    (b"{nope", "the merge patch is not valid JSON"),
    (b"[1, 2]", "a merge patch must be a JSON object, got a list"),
    (b"null", "a merge patch must be a JSON object, got null"),
])
def test_malformed_merge_patches_are_400(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        apply_patch(DEPLOYMENTS, deployment(), body, MERGE_PATCH)


# ---------------------------------------------------------------- strategic merge patch


def test_kubectl_patch_and_edit_are_strategic() -> None:
    # Y_patch_deployment_web__p___spec.req.txt, then Y_edit_deployment_web_.req.txt
    scaled = patch(deployment(), '{"spec":{"replicas":5}}', STRATEGIC_MERGE_PATCH)
    edited = patch(scaled, '{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"nginx"},'
                           '{"name":"log"}],"containers":[{"image":"nginx:1.30","name":"nginx"}]}}}}',
                   STRATEGIC_MERGE_PATCH)
    assert edited["spec"]["replicas"] == 5
    assert edited["spec"]["template"]["spec"]["containers"] == [{"name": "nginx", "image": "nginx:1.30"},
                                                                {"name": "log", "image": "busybox"}]


@pytest.mark.parametrize(("body", "message"), [
    (b"", "the strategic merge patch is not valid JSON"),
    (b'[{"op":"add"}]', "must be a JSON object, got a list"),
    (b'{"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}', "does not contain declared merge key: name"),
    (b"[" * 5000, "not valid JSON"),
])
def test_malformed_strategic_merge_patches_are_400(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        apply_patch(DEPLOYMENTS, deployment(), body, STRATEGIC_MERGE_PATCH)


@pytest.mark.parametrize("content_type", [MERGE_PATCH, STRATEGIC_MERGE_PATCH])
def test_a_deeply_nested_patch_is_refused_not_a_crash(content_type: str) -> None:
    # JSON nesting the decoder still takes, deeper than Python recurses.
    body = b'{"metadata":{"labels":' + b'{"a":' * 1015 + b"1" + b"}" * 1015 + b"}}"
    with pytest.raises(BadRequest, match="nested too deeply"):
        apply_patch(DEPLOYMENTS, deployment(), body, content_type)


# ---------------------------------------------------------------- other types


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "", "application/apply-patch+yaml"])
def test_other_content_types_are_415(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        apply_patch(DEPLOYMENTS, deployment(), b'{"spec":{"replicas":1}}', content_type)
    assert caught.value.reason == "UnsupportedMediaType"
    assert str(caught.value) == (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, "
        "application/apply-patch+yaml")
