"""Issue 16: a pod talks to its cluster as its ServiceAccount, through the `kubernetes` Service.

Given `kctl cluster up --workers 1` (its own name, subnet 192.168.81.0/24, bridge
flt81sa, pod network 10.81.0.0/16; its own HOME and KUBECONFIG), a ServiceAccount
bound to `view` in its namespace, and a pod running as it from the in-cluster
client image (`flotilla/python-client`): `kubernetes.config.load_incluster_config()`
finds the API at KUBERNETES_SERVICE_HOST:PORT (10.96.0.1:443, the `kubernetes`
Service, whose endpoints are the live apiservers) with the projected token and CA,
lists the namespace's pods and gets 403 reading its Secrets. A running pod's
projected token authenticates from outside the cluster too, and stops working
once the pod is deleted.

In the same cluster, kopf runs **in a pod** (`flotilla/kopf`) as a ServiceAccount
whose Role covers only the custom resource, its status, events and ConfigMaps in
its namespace: `python3 -m kopf run --standalone --namespace=ops` with scanning
off (no cluster-wide list of CRDs or namespaces), its operator script from a
ConfigMap. A Widget created gets its status written by the operator's create
handler; deleted, it is held by kopf's finalizer until the delete handler has
recorded it (a ConfigMap), then goes; the event it posted is there, and its log
shows no 401 or 403. Needs root, containerd, runc and the CNI plugins.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client import config as clientconfig
from tests.e2e.test_seed_journey import Cluster, eventually

NAME = "ident"
SUBNET_PREFIX = "192.168.81"
BRIDGE = "flt81sa"
POD_NETWORK = "10.81.0.0/16"
NAMESPACE = "apps"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("containerd") or not Path("/usr/lib/cni/bridge").exists(),
    reason="needs root, containerd and the CNI plugins (the local provider makes network namespaces)")

CLIENT = """
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_incluster_config()
api = client.CoreV1Api()
pods = api.list_namespaced_pod(open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read())
print('pods', len(pods.items))
try:
    api.list_namespaced_secret('apps')
    print('secrets readable')
except ApiException as err:
    print('secrets', err.status)
"""

POD = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: reader, namespace: {NAMESPACE}}}
spec:
  serviceAccountName: reader
  restartPolicy: Never
  containers:
  - name: c
    image: flotilla/python-client
    command: ["python3", "-c", {json.dumps(CLIENT)}]
---
apiVersion: v1
kind: Pod
metadata: {{name: holder, namespace: {NAMESPACE}}}
spec:
  serviceAccountName: reader
  terminationGracePeriodSeconds: 0
  containers:
  - {{name: c, image: busybox, command: [sleep, "3600"]}}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("serviceaccounts")
    with Cluster(home).up(NAME, workers=1, subnet_prefix=SUBNET_PREFIX, bridge=BRIDGE, pod_network=POD_NETWORK) as c:
        yield c


def status_of(cluster: Cluster, pod: str, namespace: str = NAMESPACE) -> str:
    rows = [r for r in cluster.rows("get", "pods", "-n", namespace) if r["NAME"] == pod]
    return rows[0]["STATUS"] if rows else ""


def whoami(cluster: Cluster, token: str) -> int:
    """The HTTP status of `auth whoami` with this token, from the host, against the cluster's HTTPS API."""
    settings = clientconfig.load(kubeconfig=str(cluster.kubeconfig))
    context = ssl.create_default_context(cadata=(settings.certificate_authority_data or b"").decode())
    body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode()
    request = urllib.request.Request(f"{settings.url}/apis/authentication.k8s.io/v1/selfsubjectreviews", data=body,
                                     method="POST", headers={"Authorization": f"Bearer {token}",
                                                             "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_a_pod_uses_its_service_account_through_the_kubernetes_service(cluster: Cluster) -> None:
    endpoints = cluster.kctl("get", "endpoints", "kubernetes", "-n", "default")
    assert f"{SUBNET_PREFIX}.1:" in endpoints  # the master's apiserver, published by its lease
    cluster.kctl("create", "namespace", NAMESPACE)
    eventually(lambda: "default" in cluster.kctl("get", "sa", "-n", NAMESPACE), "the default ServiceAccount")
    assert cluster.kctl("create", "serviceaccount", "reader", "-n", NAMESPACE) == "serviceaccount/reader created\n"
    cluster.kctl("create", "rolebinding", "reader-view", "--clusterrole", "view", "--serviceaccount",
                 f"{NAMESPACE}:reader", "-n", NAMESPACE)
    manifest = Path(cluster.home) / "pods.yaml"
    manifest.write_text(POD)
    cluster.kctl("apply", "-f", str(manifest))
    eventually(lambda: status_of(cluster, "reader") in ("Completed", "Error"), "reader finished", timeout=240)
    logs = cluster.kctl("logs", "reader", "-n", NAMESPACE)
    assert logs == "pods 2\nsecrets 403\n", logs
    eventually(lambda: status_of(cluster, "holder") == "Running", "holder Running", timeout=120)
    token = cluster.kctl("exec", "holder", "-n", NAMESPACE, "--", "cat",
                         "/var/run/secrets/kubernetes.io/serviceaccount/token")
    assert whoami(cluster, token) == 201
    cluster.kctl("delete", "pod", "holder", "-n", NAMESPACE, "--grace-period", "0")
    eventually(lambda: whoami(cluster, token) == 401, "the deleted pod's token refused", timeout=60)


OPERATOR_NAMESPACE = "ops"

OPERATOR = """
import kopf
from kubernetes import client, config


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    # Restricted mode, as its Role allows: no cluster-wide watch of CRDs or namespaces.
    settings.scanning.disabled = True


@kopf.on.create("example.com", "v1", "widgets")
def created(body, spec, patch, **_):
    patch.status["phase"] = "Reconciled"
    patch.status["size"] = spec.get("size", 0)
    kopf.info(body, reason="Reconciled", message=f"size {spec.get('size', 0)}")


@kopf.on.delete("example.com", "v1", "widgets")
def deleted(name, namespace, **_):
    config.load_incluster_config()
    client.CoreV1Api().create_namespaced_config_map(namespace, {
        "metadata": {"name": f"deleted-{name}"}, "data": {"widget": name}})
"""

OPERATOR_MANIFEST = f"""\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: widgets.example.com}}
spec:
  group: example.com
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {{status: {{}}}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties: {{size: {{type: integer}}}}
          status: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {OPERATOR_NAMESPACE}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: widget-operator, namespace: {OPERATOR_NAMESPACE}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: widget-operator, namespace: {OPERATOR_NAMESPACE}}}
rules:
- {{apiGroups: [example.com], resources: [widgets], verbs: [get, list, watch, patch]}}
- {{apiGroups: [example.com], resources: [widgets/status], verbs: [get, patch]}}
- {{apiGroups: [""], resources: [events], verbs: [create]}}
- {{apiGroups: [""], resources: [configmaps], verbs: [create]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: widget-operator, namespace: {OPERATOR_NAMESPACE}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: widget-operator}}
subjects: [{{kind: ServiceAccount, name: widget-operator, namespace: {OPERATOR_NAMESPACE}}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: operator, namespace: {OPERATOR_NAMESPACE}}}
data:
  operator.py: {json.dumps(OPERATOR)}
---
apiVersion: v1
kind: Pod
metadata: {{name: widget-operator, namespace: {OPERATOR_NAMESPACE}}}
spec:
  serviceAccountName: widget-operator
  terminationGracePeriodSeconds: 0
  containers:
  - name: kopf
    image: flotilla/kopf
    command: [python3, -m, kopf, run, --standalone, --namespace={OPERATOR_NAMESPACE}, /op/operator.py]
    volumeMounts: [{{name: operator, mountPath: /op}}]
  volumes: [{{name: operator, configMap: {{name: operator}}}}]
"""

WIDGET = f"""\
apiVersion: example.com/v1
kind: Widget
metadata: {{name: gear, namespace: {OPERATOR_NAMESPACE}}}
spec: {{size: 3}}
"""


def kubectl(cluster: Cluster, *args: str) -> str:
    """Real kubectl against the cluster (the user's tool for CRDs and custom objects)."""
    done = subprocess.run(["kubectl", *args], env=cluster.env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def widget(cluster: Cluster) -> dict[str, Any] | None:
    """The Widget `gear` as JSON, or None once it is gone."""
    out = kubectl(cluster, "get", "widgets", "gear", "-n", OPERATOR_NAMESPACE, "-o", "json", "--ignore-not-found")
    return json.loads(out) if out.strip() else None


def test_kopf_in_a_pod_reconciles_a_custom_resource_and_sees_it_deleted(cluster: Cluster) -> None:
    manifest = Path(cluster.home) / "operator.yaml"
    manifest.write_text(OPERATOR_MANIFEST)
    kubectl(cluster, "apply", "-f", str(manifest))

    def operator_log() -> str:
        return cluster.kctl("logs", "widget-operator", "-n", OPERATOR_NAMESPACE, check=False)

    def deletion_recorded() -> bool:
        return kubectl(cluster, "get", "configmaps", "-n", OPERATOR_NAMESPACE, "--ignore-not-found", "-o",
                       "jsonpath={.items[?(@.metadata.name=='deleted-gear')].data.widget}") == "gear"

    def reconciled() -> bool:
        got = widget(cluster) or {}
        return {"phase": "Reconciled", "size": 3}.items() <= got.get("status", {}).items()
    try:
        eventually(lambda: status_of(cluster, "widget-operator", OPERATOR_NAMESPACE) == "Running",
                   "the operator pod Running", timeout=240)
        eventually(lambda: "Initial authentication has finished" in operator_log(), "kopf signed in", timeout=60)
        (Path(cluster.home) / "widget.yaml").write_text(WIDGET)
        kubectl(cluster, "apply", "-f", str(Path(cluster.home) / "widget.yaml"))
        eventually(reconciled, "the operator to write the Widget's status", timeout=90)
        got = widget(cluster)
        assert got is not None and "kopf.zalando.org/KopfFinalizerMarker" in got["metadata"]["finalizers"]

        kubectl(cluster, "delete", "widgets", "gear", "-n", OPERATOR_NAMESPACE, "--wait=false")
        eventually(deletion_recorded, "the delete handler's ConfigMap", timeout=90)
        eventually(lambda: widget(cluster) is None, "the Widget gone once kopf released it", timeout=60)
    except AssertionError as err:
        raise AssertionError(f"{err}\nkopf's log:\n{operator_log()[-4000:]}") from err
    log = operator_log()
    assert "Handler 'created' succeeded" in log and "Handler 'deleted' succeeded" in log, log
    # Its Role was enough: no refusal, no fallback for want of permissions, its event posted.
    for refusal in ("Unauthorized", "Forbidden", "'code': 40", "Not enough permissions", "Failed to post"):
        assert refusal not in log, log
    events = json.loads(kubectl(cluster, "get", "events", "-n", OPERATOR_NAMESPACE, "-o", "json"))["items"]
    posted = [(e["reason"], e["message"]) for e in events if e["involvedObject"].get("kind") == "Widget"]
    assert ("Reconciled", "size 3") in posted, (posted, log)
