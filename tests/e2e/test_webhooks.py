"""Issue 16: admission webhooks served by a pod behind a Service, in a real local cluster.

Given `kctl cluster up --workers 1` (its own name, subnet 192.168.87.0/24,
bridge flt87wh and pod network 10.87.0.0/16, so it meets no other cluster on
this host; its own HOME and KUBECONFIG), a webhook pod in `hooks`: the
cluster's nginx image terminating TLS with a certificate for
`webhook.hooks.svc` signed by a CA this test makes, in front of busybox httpd
running two CGI scripts that answer AdmissionReviews (a validating one that
refuses ConfigMaps labelled deny=true, a mutating one that labels Pods), behind
the Service `webhook` (443 → 8443). With configurations naming that Service
(caBundle: the test's CA) and selecting the namespace `apps`, the apiserver
resolves the Service to the pod's address itself and calls it over HTTPS:
ConfigMaps labelled deny=true are refused with the webhook's message, others
are stored, new Pods get the label. Once the webhook's pod is gone, Fail
refuses writes naming the Service that has no endpoints, and Ignore lets them
through. Needs root, containerd, runc and the CNI plugins.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from client.certificates import KeyPair, create_ca, create_serving_cert
from tests.e2e.test_seed_journey import KCTL, Cluster, eventually

NAME = "hooks"
SUBNET_PREFIX = "192.168.87"
BRIDGE = "flt87wh"
POD_NETWORK = "10.87.0.0/16"
MUTATED_LABEL = "webhook.flotilla.dev/mutated"
DENY_MESSAGE = "ConfigMaps labelled deny=true are not welcome in apps"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("containerd") or not Path("/usr/lib/cni/bridge").exists(),
    reason="needs root, containerd and the CNI plugins (the local provider makes network namespaces)")

# nginx terminates TLS and hands each review to a CGI script of busybox httpd in the same pod.
NGINX_CONF = """\
user nobody nogroup;
worker_processes 1;
daemon off;
pid /tmp/nginx.pid;
error_log stderr;
events { worker_connections 64; }
http {
    access_log /dev/stdout;
    client_body_temp_path /tmp/body;
    proxy_temp_path /tmp/proxy;
    server {
        listen 8443 ssl;
        ssl_certificate /tls/tls.crt;
        ssl_certificate_key /tls/tls.key;
        location /validate { proxy_pass http://127.0.0.1:8080/cgi-bin/validate; }
        location /mutate { proxy_pass http://127.0.0.1:8080/cgi-bin/mutate; }
    }
}
"""
_PATCH = base64.b64encode(json.dumps([{"op": "add", "path": "/metadata/labels/" + MUTATED_LABEL.replace("/", "~1"),
                                       "value": "true"}]).encode()).decode()
# The request's uid is the first key of `request` (the apiserver's JSON keeps Kubernetes' order).
_READ = """#!/bin/sh
body=$(head -c "$CONTENT_LENGTH")
uid=$(printf '%s' "$body" | sed -n 's/.*"request":{"uid":"\\([^"]*\\)".*/\\1/p')
printf 'Content-Type: application/json\\r\\n\\r\\n'
answer() {
  printf '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"%s",%s}}' "$uid" "$1"
}
"""
VALIDATE = _READ + f"""case "$body" in
  *'"deny":"true"'*) answer '"allowed":false,"status":{{"code":403,"message":"{DENY_MESSAGE}"}}' ;;
  *) answer '"allowed":true' ;;
esac
"""
MUTATE = _READ + f"""answer '"allowed":true,"patchType":"JSONPatch","patch":"{_PATCH}"'
"""


def webhook_server(ca: KeyPair) -> list[dict[str, object]]:
    """The webhook's namespace, TLS Secret, scripts, pod and Service; and the namespace it watches."""
    serving = create_serving_cert(ca, "webhook.hooks.svc", ["webhook.hooks.svc"])
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hooks"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps", "labels": {"webhooks": "on"}}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
         "metadata": {"name": "webhook-tls", "namespace": "hooks"},
         "data": {"tls.crt": base64.b64encode(serving.cert_pem).decode(),
                  "tls.key": base64.b64encode(serving.key_pem).decode()}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "webhook-nginx", "namespace": "hooks"},
         "data": {"nginx.conf": NGINX_CONF}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "webhook-cgi", "namespace": "hooks"},
         "data": {"validate": VALIDATE, "mutate": MUTATE}},
        # The webhook needs no API access: no service-account token volume.
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "webhook", "namespace": "hooks",
                                                         "labels": {"app": "webhook"}},
         "spec": {"terminationGracePeriodSeconds": 0, "automountServiceAccountToken": False, "containers": [
             {"name": "tls", "image": "nginx", "command": ["nginx", "-c", "/etc/webhook/nginx.conf"],
              "ports": [{"name": "https", "containerPort": 8443}],
              "readinessProbe": {"tcpSocket": {"port": 8443}, "periodSeconds": 1},
              "volumeMounts": [{"name": "conf", "mountPath": "/etc/webhook"}, {"name": "tls", "mountPath": "/tls"},
                               {"name": "tmp", "mountPath": "/tmp"}]},
             {"name": "cgi", "image": "busybox", "command": ["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"],
              "volumeMounts": [{"name": "cgi", "mountPath": "/www/cgi-bin"}]}],
             "volumes": [{"name": "conf", "configMap": {"name": "webhook-nginx"}},
                         {"name": "tls", "secret": {"secretName": "webhook-tls"}},
                         {"name": "tmp", "emptyDir": {}},
                         {"name": "cgi", "configMap": {"name": "webhook-cgi", "defaultMode": 0o755}}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "webhook", "namespace": "hooks"},
         "spec": {"selector": {"app": "webhook"}, "ports": [{"name": "https", "port": 443, "targetPort": 8443}]}},
    ]


def configurations(ca_pem: bytes, failure_policy: str) -> list[dict[str, object]]:
    def hook(name: str, path: str, resources: list[str]) -> dict[str, object]:
        return {"name": name, "failurePolicy": failure_policy, "sideEffects": "None",
                "admissionReviewVersions": ["v1"], "namespaceSelector": {"matchLabels": {"webhooks": "on"}},
                "clientConfig": {"service": {"namespace": "hooks", "name": "webhook", "path": path},
                                 "caBundle": base64.b64encode(ca_pem).decode()},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": resources}]}
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": {"name": "deny-labelled"}, "webhooks": [hook("deny.hooks.flotilla.dev", "/validate",
                                                                  ["configmaps"])]},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": "label-pods"}, "webhooks": [hook("label.hooks.flotilla.dev", "/mutate", ["pods"])]},
    ]


def write(cluster: Cluster, documents: list[dict[str, object]], name: str) -> None:
    path = cluster.home / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    cluster.kctl("apply", "-f", str(path))


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return create_ca("webhook-e2e-ca")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, ca: KeyPair) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("webhooks")
    with Cluster(home).up(NAME, workers=1, subnet_prefix=SUBNET_PREFIX, bridge=BRIDGE, pod_network=POD_NETWORK) as c:
        write(c, webhook_server(ca), "webhook-server")
        eventually(lambda: any(r["READY"] == "2/2" for r in c.rows("get", "pods", "-n", "hooks")),
                   "the webhook pod is ready", timeout=180)
        yield c


def refused(cluster: Cluster, *args: str) -> str:
    """kctl's error output for a command that must fail ("" if it did not)."""
    done = subprocess.run([KCTL, *args], env=cluster.env, capture_output=True, text=True, timeout=120)
    return done.stderr if done.returncode != 0 else ""


def test_a_pod_behind_a_service_validates_and_mutates_writes(cluster: Cluster, ca: KeyPair) -> None:
    write(cluster, configurations(ca.cert_pem, "Fail"), "configurations")

    attempts = iter(range(1000))

    def probe_denied() -> str:
        # Each probe a new name: one created before the configuration took effect must not hide the next.
        text = refused(cluster, "create", "-f", str(labelled_config_map(cluster, f"probe-{next(attempts)}")))
        return text if "denied the request" in text else ""

    eventually(probe_denied, "a ConfigMap labelled deny=true is refused by the webhook", timeout=90)
    text = refused(cluster, "create", "-f", str(labelled_config_map(cluster)))
    assert f'admission webhook "deny.hooks.flotilla.dev" denied the request: {DENY_MESSAGE}' in text
    cluster.kctl("create", "-f", str(config_map(cluster, "good")))
    assert "good" in cluster.kctl("get", "configmaps", "-n", "apps")
    assert "bad" not in cluster.kctl("get", "configmaps", "-n", "apps")

    [row] = cluster.rows("get", "validatingwebhookconfigurations")
    assert (row["NAME"], row["WEBHOOKS"]) == ("deny-labelled", "1")

    cluster.kctl("run", "web", "-n", "apps", "--image=busybox")
    labels = cluster.kctl("get", "pod", "web", "-n", "apps", "-o", "jsonpath={.metadata.labels}")
    assert MUTATED_LABEL in labels and "true" in labels


def test_with_the_webhook_pod_gone_fail_refuses_and_ignore_lets_writes_through(cluster: Cluster,
                                                                                ca: KeyPair) -> None:
    write(cluster, configurations(ca.cert_pem, "Fail"), "configurations")
    cluster.kctl("delete", "pod", "webhook", "-n", "hooks")

    def no_endpoints() -> str:
        text = refused(cluster, "create", "-f", str(config_map(cluster, "later")))
        return text if "no endpoints available" in text else ""

    text = eventually(no_endpoints, "writes refused once the webhook has no endpoints", timeout=60)
    assert ('failed calling webhook "deny.hooks.flotilla.dev": failed to call webhook: Post '
            '"https://webhook.hooks.svc:443/validate?timeout=10s": no endpoints available for service "webhook"'
            in text)

    write(cluster, configurations(ca.cert_pem, "Ignore"), "configurations")

    def through() -> bool:
        done = subprocess.run([KCTL, "create", "-f", str(config_map(cluster, "later"))],
                              env=cluster.env, capture_output=True, text=True, timeout=120)
        return done.returncode == 0

    eventually(through, "writes let through with failurePolicy Ignore", timeout=60)
    assert "later" in cluster.kctl("get", "configmaps", "-n", "apps")


def config_map(cluster: Cluster, name: str, **labels: str) -> Path:
    """A ConfigMap manifest in `apps` (kctl has no `create configmap`)."""
    path = cluster.home / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": name, "namespace": "apps", "labels": labels},
                                    "data": {"k": "v"}}))
    return path


def labelled_config_map(cluster: Cluster, name: str = "bad") -> Path:
    return config_map(cluster, name, deny="true")
