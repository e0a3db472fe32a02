"""The apiserver's OpenAPI documents, as kubectl reads them.

Given the kinds table and the .proto files, when a client fetches /openapi/v3, then
every group-version is listed with a hash, each document describes every served
path with the GVK and parameters kubectl looks for (fieldValidation on PATCH, or it
validates client-side), and its schemas carry Kubernetes' names, types, patch keys
and the .proto comments `kubectl explain` prints.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from controlplane.apiserver import openapi
from controlplane.apiserver.openapi import comments, paths, schemas
from controlplane.apiserver.openapi.required import REQUIRED
from proto import kinds
from provision.processes import Etcd, free_port, start_apiserver

APPS = "apis/apps/v1"
SCHEMAS = "#/components/schemas/"
DEPLOYMENT = "io.k8s.api.apps.v1.Deployment"
META = "io.k8s.apimachinery.pkg.apis.meta.v1"


def doc(path: str) -> dict[str, Any]:
    found = openapi.v3_document(path)
    assert found is not None, path
    return found


def schema(path: str, name: str) -> dict[str, Any]:
    return doc(path)["components"]["schemas"][name]


def target(prop: dict[str, Any]) -> str:
    """The schema a property refers to, bare or described (allOf of one)."""
    ref = prop.get("$ref") or prop["allOf"][0]["$ref"]
    return str(ref).removeprefix(SCHEMAS)


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [*([node["$ref"]] if isinstance(node.get("$ref"), str) else []),
                *(r for v in node.values() for r in refs(v))]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def group_version_path(api_version: str) -> str:
    return f"apis/{api_version}" if "/" in api_version else f"api/{api_version}"


def test_the_index_lists_every_served_group_version_with_its_document_hash() -> None:
    index = openapi.v3_index()["paths"]
    assert set(index) == {group_version_path(k.api_version) for k in kinds.SERVED}
    for path, entry in index.items():
        url = entry["serverRelativeURL"]
        assert url.startswith(f"/openapi/v3/{path}?hash=")
        body = openapi.v3_document_bytes(path)
        assert body is not None and orjson.loads(body) == doc(path)
        assert url.endswith("hash=" + hashlib.sha512(body).hexdigest().upper())


def test_a_group_version_not_served_has_no_document() -> None:
    assert openapi.v3_document("apis/example.com/v1") is None
    assert openapi.v3_document_bytes("apis/apps/v9") is None


def test_documents_are_built_once_and_are_the_same_on_every_build() -> None:
    assert openapi.v3_document(APPS) is openapi.v3_document(APPS)
    assert openapi.v3_index() is openapi.v3_index()
    rebuilt = openapi._Documents()  # a second, independent build from the same tables
    assert rebuilt.v3_bytes == openapi._documents().v3_bytes
    assert rebuilt.v2_bytes == openapi.v2_document_bytes()


def test_deployment_schema_has_its_gvk_patch_keys_types_and_descriptions() -> None:
    deployment = schema(APPS, DEPLOYMENT)
    assert deployment["x-kubernetes-group-version-kind"] == [{"group": "apps", "kind": "Deployment",
                                                              "version": "v1"}]
    assert target(deployment["properties"]["metadata"]) == f"{META}.ObjectMeta"
    assert deployment["properties"]["apiVersion"]["type"] == "string"
    assert deployment["properties"]["spec"]["description"]

    spec = schema(APPS, "io.k8s.api.apps.v1.DeploymentSpec")
    assert spec["required"] == ["selector", "template"]
    assert spec["properties"]["replicas"] == {"format": "int32", "type": "integer"}
    assert spec["properties"]["strategy"]["x-kubernetes-patch-strategy"] == "retainKeys"

    pod_spec = schema(APPS, "io.k8s.api.core.v1.PodSpec")["properties"]
    containers = pod_spec["containers"]
    assert containers["type"] == "array"
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["x-kubernetes-list-type"] == "map"
    assert containers["x-kubernetes-list-map-keys"] == ["name"]
    assert target(containers["items"]) == "io.k8s.api.core.v1.Container"
    assert pod_spec["volumes"]["x-kubernetes-patch-strategy"] == "merge,retainKeys"
    assert pod_spec["terminationGracePeriodSeconds"]["format"] == "int64"

    limits = schema(APPS, "io.k8s.api.core.v1.ResourceRequirements")["properties"]["limits"]
    assert limits["type"] == "object"
    assert target(limits["additionalProperties"]) == "io.k8s.apimachinery.pkg.api.resource.Quantity"
    assert schema(APPS, "io.k8s.apimachinery.pkg.api.resource.Quantity")["type"] == "string"

    surge = schema(APPS, "io.k8s.api.apps.v1.RollingUpdateDeployment")["properties"]["maxSurge"]
    int_or_string = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
    assert target(surge) == int_or_string
    assert schema(APPS, int_or_string) | {"description": ""} == {
        "description": "", "format": "int-or-string", "type": "string"}

    created = schema(APPS, f"{META}.ObjectMeta")["properties"]["creationTimestamp"]
    assert schema(APPS, target(created))["format"] == "date-time"


def test_descriptions_are_the_proto_comments() -> None:
    # meta.proto: "The etcd mod revision of the stored object; set by the apiserver on every read."
    said = comments.field("flotilla.api.ObjectMeta", "resource_version")
    assert said.startswith("The etcd mod revision")
    assert schema(APPS, f"{META}.ObjectMeta")["properties"]["resourceVersion"]["description"] == said
    pull = schema(APPS, "io.k8s.api.core.v1.Container")["properties"]["imagePullPolicy"]
    assert pull["description"] == "Always, IfNotPresent, Never"


def test_the_descriptor_set_describes_every_file_the_documents_are_built_from() -> None:
    roots = [k.message.DESCRIPTOR for k in kinds.SERVED]
    built_from = {m.file.name for m in schemas.api_messages(roots)}
    assert built_from <= set(comments.api_files()), "proto/api_descriptors.binpb is stale: run proto.build"
    assert not {"proto/cri.proto", "proto/kubelet.proto", "proto/apiserver.proto"} & set(comments.api_files())


def test_core_types_map_bytes_and_string_maps() -> None:
    secret = schema("api/v1", "io.k8s.api.core.v1.Secret")
    assert secret["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Secret", "version": "v1"}]
    assert secret["properties"]["data"] == {"additionalProperties": {"format": "byte", "type": "string"},
                                            "type": "object"}
    assert secret["properties"]["stringData"]["additionalProperties"] == {"type": "string"}


def test_every_ref_resolves_within_its_own_document() -> None:
    for path in openapi.v3_index()["paths"]:
        document = doc(path)
        names = document["components"]["schemas"]
        missing = {r for r in refs(document) if r.removeprefix(SCHEMAS) not in names}
        assert not missing, (path, missing)
        assert all(r.startswith(SCHEMAS) for r in refs(document))
    v2 = openapi.v2_document()
    assert v2["swagger"] == "2.0"
    missing = {r for r in refs(v2) if r.removeprefix("#/definitions/") not in v2["definitions"]}
    assert not missing
    assert v2["definitions"][DEPLOYMENT]["x-kubernetes-group-version-kind"][0]["kind"] == "Deployment"


def operations(path: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [(url, method, op) for url, item in doc(path)["paths"].items()
            for method, op in item.items() if method != "parameters"]


def parameter_names(op: dict[str, Any]) -> set[str]:
    return {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}


@pytest.mark.parametrize("kind", [k for k in kinds.SERVED if "patch" in k.verbs], ids=lambda k: k.kind)
def test_kubectl_sees_that_every_patch_of_a_kind_takes_field_validation(kind: kinds.Kind) -> None:
    # kubectl checks the first PATCH operation it finds for the object's GVK, so all must say it.
    gvk = {"group": kind.group, "kind": kind.kind, "version": kind.version}
    patches = [op for _, method, op in operations(group_version_path(kind.api_version))
               if method == "patch" and op["x-kubernetes-group-version-kind"] == gvk]
    assert patches
    for op in patches:
        assert {"fieldValidation", "dryRun", "fieldManager", "force"} <= parameter_names(op)
        assert op["x-kubernetes-action"] == "patch"
        assert set(op["requestBody"]["content"]) == set(paths.PATCH_CONTENT_TYPES)


def test_every_served_verb_and_subresource_has_its_operation() -> None:
    actions = {"get": {"get"}, "list": {"list"}, "watch": {"watch", "watchlist"}, "create": {"post"},
               "update": {"put"}, "patch": {"patch"}, "delete": {"delete"}, "deletecollection": {"deletecollection"}}
    for kind in kinds.SERVED:
        ops = operations(group_version_path(kind.api_version))
        mine = {op["x-kubernetes-action"] for url, _, op in ops
                if f"/{kind.http_resource}" in url and op["x-kubernetes-group-version-kind"]["kind"] == kind.kind}
        for verb in kind.verbs:
            assert actions[verb] & mine, (kind.kind, verb)
        for sub in kind.subresources:
            assert any(url.endswith(f"/{kind.http_resource}/{{name}}/{sub.name}") for url, _, _ in ops), sub.name
    for _, method, op in operations("api/v1") + operations(APPS):
        if method in ("post", "put") and op["x-kubernetes-action"] in ("post", "put"):
            assert {"fieldValidation", "dryRun", "fieldManager"} <= parameter_names(op)


def test_subresources_carry_their_own_kinds() -> None:
    scale = doc(APPS)["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert scale["patch"]["x-kubernetes-group-version-kind"] == {"group": "autoscaling", "kind": "Scale",
                                                                 "version": "v1"}
    assert "io.k8s.api.autoscaling.v1.Scale" in doc(APPS)["components"]["schemas"]
    pod = "/api/v1/namespaces/{namespace}/pods/{name}"
    log = doc("api/v1")["paths"][f"{pod}/log"]["get"]
    assert "text/plain" in log["responses"]["200"]["content"]
    assert {"container", "follow", "tailLines"} <= parameter_names(log)
    exec_ = doc("api/v1")["paths"][f"{pod}/exec"]
    assert exec_["get"]["x-kubernetes-action"] == exec_["post"]["x-kubernetes-action"] == "connect"
    assert {"command", "container", "stdin", "tty"} <= parameter_names(exec_["post"])


def test_list_schemas_hold_their_items() -> None:
    listed = schema(APPS, f"{DEPLOYMENT}List")
    assert target(listed["properties"]["items"]["items"]) == DEPLOYMENT
    assert target(listed["properties"]["metadata"]) == f"{META}.ListMeta"
    assert listed["x-kubernetes-group-version-kind"] == [{"group": "apps", "kind": "DeploymentList",
                                                          "version": "v1"}]


def test_required_fields_name_real_messages_and_fields() -> None:
    roots = [k.message.DESCRIPTOR for k in kinds.SERVED]
    by_name = {m.name: m for m in schemas.api_messages(roots)}
    for message, fields in REQUIRED.items():
        assert message in by_name, message
        json_names = {f.json_name for f in by_name[message].fields}
        assert set(fields) <= json_names, (message, set(fields) - json_names)


# ---------------------------------------------------------------- real kubectl, real apiserver

KUBECTL = "/usr/bin/kubectl"


def _serves_http() -> bool:
    """Whether the apiserver has its plaintext loopback HTTP listener (engineer A's --http-listen) yet."""
    out = subprocess.run([sys.executable, "-m", "controlplane.apiserver.main", "--help"], capture_output=True,
                         text=True, timeout=60)
    return "--http-listen" in out.stdout


@pytest.fixture(scope="module")
def kubectl_config(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A kubeconfig for real kubectl against an apiserver's loopback HTTP listener."""
    if not shutil.which(KUBECTL):
        pytest.skip(f"{KUBECTL} is not installed")
    if not _serves_http():
        pytest.skip("the apiserver has no --http-listen yet (engineer A's HTTP listener)")
    etcd: Etcd = request.getfixturevalue("etcd")
    base = tmp_path_factory.mktemp("openapi-kubectl")
    port = free_port()
    server = start_apiserver(etcd.url, base, extra=["--http-listen", f"127.0.0.1:{port}"])
    config = base / "kubeconfig"
    config.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: local, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: admin, user: {{}}}}]
contexts: [{{name: local, context: {{cluster: local, user: admin}}}}]
current-context: local
""")
    yield config
    server.process.stop()


def kubectl(config: Path, *args: str) -> str:
    done = subprocess.run([KUBECTL, "--kubeconfig", str(config), "--cache-dir", str(config.parent / "cache"),
                           *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_kubectl_explain_prints_the_fields_of_a_deployment_spec(kubectl_config: Path) -> None:
    out = kubectl(kubectl_config, "explain", "deployment.spec", "--api-version=apps/v1")
    assert "KIND:       Deployment" in out and "FIELDS:" in out
    assert "template\t<PodTemplateSpec> -required-" in out
    assert "replicas\t<integer>" in out


def test_kubectl_explain_prints_the_proto_comment_of_a_field(kubectl_config: Path) -> None:
    out = kubectl(kubectl_config, "explain", "pods.spec.containers.imagePullPolicy")
    assert "FIELD: imagePullPolicy <string>" in out
    assert "Always, IfNotPresent, Never" in out
