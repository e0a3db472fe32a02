# mypy: disable-error-code="union-attr,type-var,index,arg-type"
# (the kubernetes client types every field Optional; these tests read fields they just set)
"""Real clients against the HTTP API, unchanged: the `kubernetes` Python client and kubectl 1.32.

Given the test session's apiserver (its loopback `--http-listen` port), a user of
either client does what they do against any cluster and gets what Kubernetes
gives them: objects, typed errors, watch events in order, kubectl's own lines.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import utils, watch
from kubernetes.client.rest import ApiException

KUBECTL = "/usr/bin/kubectl"
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def api_client(http_url: str) -> Iterator[k8s.ApiClient]:
    config = k8s.Configuration(host=http_url)
    with k8s.ApiClient(config) as api:
        yield api


@pytest.fixture
def k8s_ns(api_client: k8s.ApiClient) -> str:
    name = f"k-{uuid.uuid4().hex[:10]}"
    k8s.CoreV1Api(api_client).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    return name


def a_pod(name: str, **labels: str) -> k8s.V1Pod:
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name=name, labels=labels or None),
                     spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="c", image="nginx:1.27")]))


# ---------------------------------------------------------------- the Python client


def test_python_client_crud_and_errors(api_client: k8s.ApiClient, k8s_ns: str) -> None:
    core = k8s.CoreV1Api(api_client)
    created = core.create_namespaced_pod(k8s_ns, a_pod("web", app="web"))
    assert created.metadata.uid and created.spec.containers[0].image == "nginx:1.27"
    assert core.read_namespaced_pod("web", k8s_ns).metadata.labels == {"app": "web"}
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_pod(k8s_ns, a_pod("web"))
    assert exists.value.status == 409 and exists.value.reason == "Conflict"
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("nope", k8s_ns)
    assert missing.value.status == 404
    bad = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="bad"), spec=k8s.V1PodSpec(containers=[]))
    with pytest.raises(ApiException) as invalid:
        core.create_namespaced_pod(k8s_ns, bad)
    assert invalid.value.status == 422 and '"reason":"Invalid"' in invalid.value.body.replace(" ", "")
    patched = core.patch_namespaced_pod("web", k8s_ns, {"metadata": {"labels": {"tier": "front"}}})
    assert patched.metadata.labels == {"app": "web", "tier": "front"}
    patched = core.patch_namespaced_pod("web", k8s_ns, [{"op": "remove", "path": "/metadata/labels/tier"}])
    assert patched.metadata.labels == {"app": "web"}
    core.delete_namespaced_pod("web", k8s_ns)
    assert core.list_namespaced_pod(k8s_ns).items == []


def test_python_client_errors_carry_status_and_reason(api_client: k8s.ApiClient, k8s_ns: str) -> None:
    core = k8s.CoreV1Api(api_client)
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("nope", k8s_ns)
    assert (missing.value.status, missing.value.reason) == (404, "Not Found")
    assert json.loads(missing.value.body)["reason"] == "NotFound"
    core.create_namespaced_config_map(k8s_ns, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="c")))
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_config_map(k8s_ns, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="c")))
    assert (exists.value.status, exists.value.reason) == (409, "Conflict")
    assert json.loads(exists.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as invalid:
        core.create_namespaced_config_map(k8s_ns, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="Not_Valid")))
    assert (invalid.value.status, invalid.value.reason) == (422, "Unprocessable Entity")
    status = json.loads(invalid.value.body)
    assert status["reason"] == "Invalid" and status["details"]["causes"][0]["field"] == "metadata.name"


def test_python_client_strategic_and_json_patches(api_client: k8s.ApiClient, k8s_ns: str) -> None:
    apps = k8s.AppsV1Api(api_client)
    containers = [k8s.V1Container(name="web", image="nginx:1.27"), k8s.V1Container(name="log", image="busybox")]
    template = k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels={"app": "web"}),
                                     spec=k8s.V1PodSpec(containers=containers))
    apps.create_namespaced_deployment(k8s_ns, k8s.V1Deployment(metadata=k8s.V1ObjectMeta(name="web"), spec=(
        k8s.V1DeploymentSpec(selector=k8s.V1LabelSelector(match_labels={"app": "web"}), template=template))))
    # A dict is a strategic merge patch: containers merge by name, the other one stays.
    patched = apps.patch_namespaced_deployment("web", k8s_ns, {"spec": {"template": {"spec": {
        "containers": [{"name": "web", "image": "nginx:1.28"}]}}}})
    assert [(c.name, c.image) for c in patched.spec.template.spec.containers] == [("web", "nginx:1.28"),
                                                                                 ("log", "busybox")]
    # A list is a JSON patch.
    patched = apps.patch_namespaced_deployment("web", k8s_ns, [
        {"op": "test", "path": "/spec/template/spec/containers/1/name", "value": "log"},
        {"op": "remove", "path": "/spec/template/spec/containers/1"}])
    assert [c.name for c in patched.spec.template.spec.containers] == ["web"]
    with pytest.raises(ApiException) as failed:
        apps.patch_namespaced_deployment("web", k8s_ns, [{"op": "test", "path": "/spec/replicas", "value": 7}])
    assert failed.value.status == 422
    managers = {e.manager for e in apps.read_namespaced_deployment("web", k8s_ns).metadata.managed_fields}
    assert "OpenAPI-Generator" in managers  # the Python client's User-Agent names its writes


def test_python_client_lists_with_selectors(api_client: k8s.ApiClient, k8s_ns: str) -> None:
    core = k8s.CoreV1Api(api_client)
    for name, tier in (("a", "x"), ("b", "y"), ("c", "x")):
        core.create_namespaced_pod(k8s_ns, a_pod(name, tier=tier))
    picked = core.list_namespaced_pod(k8s_ns, label_selector="tier=x")
    assert sorted(p.metadata.name for p in picked.items) == ["a", "c"]
    one = core.list_namespaced_pod(k8s_ns, field_selector="metadata.name=b")
    assert [p.metadata.name for p in one.items] == ["b"]
    page = core.list_namespaced_pod(k8s_ns, limit=2)
    assert len(page.items) == 2 and page.metadata._continue


def test_python_client_watch_in_order(api_client: k8s.ApiClient, k8s_ns: str) -> None:
    core = k8s.CoreV1Api(api_client)
    rv = core.list_namespaced_config_map(k8s_ns).metadata.resource_version
    cm = k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="w"), data={"a": "1"})
    core.create_namespaced_config_map(k8s_ns, cm)
    core.patch_namespaced_config_map("w", k8s_ns, {"data": {"a": "2"}})
    core.delete_namespaced_config_map("w", k8s_ns)
    seen = []
    for event in watch.Watch().stream(core.list_namespaced_config_map, k8s_ns, resource_version=rv,
                                      timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            break
    assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


def test_python_client_create_from_multi_document_yaml(api_client: k8s.ApiClient, k8s_ns: str,
                                                       tmp_path: Path) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {k8s_ns}}}
data: {{mode: fast}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {k8s_ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: "nginx:1.27"}}]
""")
    utils.create_from_yaml(api_client, str(manifest))
    assert k8s.CoreV1Api(api_client).read_namespaced_config_map("settings", k8s_ns).data == {"mode": "fast"}
    assert k8s.AppsV1Api(api_client).read_namespaced_deployment("web", k8s_ns).spec.replicas == 2


# ---------------------------------------------------------------- kubectl


@pytest.fixture
def kubectl(http_url: str, tmp_path: Path) -> Iterator[Kubectl]:
    if not shutil.which(KUBECTL):
        pytest.skip(f"{KUBECTL} is not installed on this machine")
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\n")

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KUBECTL, "--kubeconfig", str(config), "--server", http_url,
                               "--cache-dir", str(tmp_path / "cache"), *args],
                              input=stdin, capture_output=True, text=True, timeout=60)
    yield run


def test_kubectl_create_get_wide_delete(kubectl: Kubectl, k8s_ns: str, tmp_path: Path) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {app: web}}\n"
                        "spec: {containers: [{name: c, image: 'nginx:1.27'}]}\n")
    created = kubectl("create", "-n", k8s_ns, "-f", str(manifest))
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "pod/web created"
    got = kubectl("get", "pods", "-n", k8s_ns)
    assert got.returncode == 0, got.stderr
    assert got.stdout.split("\n")[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert got.stdout.split("\n")[1].split()[0] == "web"
    wide = kubectl("get", "pods", "-n", k8s_ns, "-o", "wide")
    assert "NODE" in wide.stdout.split("\n")[0] and "IP" in wide.stdout.split("\n")[0]
    labels = kubectl("get", "pods", "-n", k8s_ns, "--show-labels")
    assert "app=web" in labels.stdout
    missing = kubectl("get", "pod", "nope", "-n", k8s_ns)
    assert missing.returncode == 1
    assert 'Error from server (NotFound): pods "nope" not found' in missing.stderr
    deleted = kubectl("delete", "pod", "web", "-n", k8s_ns, "--wait=false")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == 'pod "web" deleted'


def test_kubectl_invalid_object_lists_causes(kubectl: Kubectl, k8s_ns: str, tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec: {containers: []}\n")
    result = kubectl("create", "-n", k8s_ns, "-f", str(manifest))
    assert result.returncode == 1
    assert result.stderr.strip() == 'The Pod "bad" is invalid: spec.containers: Required value'
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\n"
                        "spec: {restartPolicy: Sometimes, containers: [{name: c}]}\n")
    result = kubectl("create", "-n", k8s_ns, "-f", str(manifest))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == 'The Pod "bad" is invalid: ' and len(lines) >= 3
    assert all(line.startswith("* ") for line in lines[1:]), lines
    assert any(line.startswith("* spec.containers[0].image: Required value") for line in lines)


def test_kubectl_server_side_apply_conflict_and_force(kubectl: Kubectl, k8s_ns: str, tmp_path: Path) -> None:
    created = kubectl("create", "configmap", "settings", "-n", k8s_ns, "--from-literal=mode=fast")
    assert created.returncode == 0, created.stderr
    manifest = tmp_path / "settings.yaml"
    manifest.write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {k8s_ns}}}\n"
                        "data: {mode: slow}\n")
    conflict = kubectl("apply", "--server-side", "-f", str(manifest))
    assert conflict.returncode == 1
    assert 'Apply failed with 1 conflict: conflict with "kubectl-create" using v1: .data.mode' in conflict.stderr
    assert "Please review the fields above--they currently have other managers." in conflict.stderr
    forced = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(manifest))
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.strip() == "configmap/settings serverside-applied"
    owners = kubectl("get", "configmap", "settings", "-n", k8s_ns, "--show-managed-fields", "-o",
                     "jsonpath={.metadata.managedFields[*].manager}")
    assert owners.stdout.split() == ["kubectl", "kubectl-create"]  # Apply entries first, as Kubernetes orders them


def test_kubectl_prints_admission_warnings(kubectl: Kubectl, api_client: k8s.ApiClient) -> None:
    name = f"k-{uuid.uuid4().hex[:10]}"
    k8s.CoreV1Api(api_client).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(
        name=name, labels={"pod-security.kubernetes.io/warn": "restricted"})))
    run = kubectl("run", "web", "-n", name, "--image", "nginx:1.27")
    assert run.returncode == 0, run.stderr
    assert run.stderr.startswith('Warning: would violate PodSecurity "restricted:latest": '), run.stderr
    assert run.stdout.strip() == "pod/web created"


def test_kubectl_api_resources_and_version(kubectl: Kubectl) -> None:
    resources = kubectl("api-resources")
    assert resources.returncode == 0, resources.stderr
    lines = resources.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    assert any(line.split()[:2] == ["deployments", "deploy"] for line in lines)
    version = kubectl("version")
    assert "Server Version: v1.32.0+flotilla" in version.stdout
