# mypy: disable-error-code="union-attr,type-var,index,arg-type"
# (the kubernetes client types every field Optional; these tests read fields they just set)
"""Real clients against the HTTP API, unchanged: the `kubernetes` Python client and kubectl 1.32.

Given the test session's apiserver (its loopback `--http-listen` port), a user of
either client does what they do against any cluster and gets what Kubernetes
gives them: objects, typed errors, watch events in order, kubectl's own lines.
"""

from __future__ import annotations

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


def test_kubectl_api_resources_and_version(kubectl: Kubectl) -> None:
    resources = kubectl("api-resources")
    assert resources.returncode == 0, resources.stderr
    lines = resources.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    assert any(line.split()[:2] == ["deployments", "deploy"] for line in lines)
    version = kubectl("version")
    assert "Server Version: v1.32.0+flotilla" in version.stdout
