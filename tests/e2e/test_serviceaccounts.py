"""Issue 16: a pod talks to its cluster as its ServiceAccount, through the `kubernetes` Service.

Given `kctl cluster up --workers 1` (its own name, subnet 192.168.81.0/24, bridge
flt81sa, pod network 10.81.0.0/16; its own HOME and KUBECONFIG), a ServiceAccount
bound to `view` in its namespace, and a pod running as it from the in-cluster
client image (`flotilla/python-client`): `kubernetes.config.load_incluster_config()`
finds the API at KUBERNETES_SERVICE_HOST:PORT (10.96.0.1:443, the `kubernetes`
Service, whose endpoints are the live apiservers) with the projected token and CA,
lists the namespace's pods and gets 403 reading its Secrets. A running pod's
projected token authenticates from outside the cluster too, and stops working
once the pod is deleted. Needs root, containerd, runc and the CNI plugins.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import config as clientconfig
from provision.processes import free_port
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
    c = Cluster(tmp_path_factory.mktemp("serviceaccounts"))
    try:
        c.kctl("cluster", "up", "--name", NAME, "--workers", "1", "--subnet", f"{SUBNET_PREFIX}.0/24",
               "--bridge", BRIDGE, "--pod-network", POD_NETWORK, "--api-port", str(free_port()),
               "--etcd-port", str(free_port()), timeout=400)
        yield c
    finally:
        c.kctl("cluster", "down", "--name", NAME, check=False, timeout=300)


def status_of(cluster: Cluster, pod: str) -> str:
    rows = [r for r in cluster.rows("get", "pods", "-n", NAMESPACE) if r["NAME"] == pod]
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
