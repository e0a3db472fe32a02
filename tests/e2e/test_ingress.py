"""Ingress acceptance on the local provider: HTTP routing from outside the cluster through each node's haproxy.

Given one cluster with one worker (its own name, subnet 192.168.76.0/24, bridge
flt76i and pod network 10.76.0.0/16, so it meets no other cluster on this
host), whose proxy runs the ingress agent: the default IngressClass `flotilla`
exists without anyone making it. Two Deployments go behind one Ingress —
`a.example/` → service A (nginx) and `b.example/api` → service B (busybox
httpd answering with its pod name; rewrite-target `/`) — and from the host,
with those Host headers, to the worker's address:

- each host reaches its own pods, B through the rewrite; an unknown host gets
  the default backend's 404; the Ingress's status carries the worker's address;
- a TLS host presents its Secret's certificate (SNI) and its plain-HTTP
  requests are redirected (ssl-redirect);
- a canary Ingress of weight 20 takes 20% ± 10 of 200 requests;
- scaling B 3 → 1 → 3 during a stream of requests drops none (slices mark the
  leaving pods terminating, the agent takes them out of haproxy's slots
  without a reload while their preStop hook keeps them serving), and B's
  NodePort, programmed by the node's proxy from the same EndpointSlices,
  reaches exactly the three pods running afterwards.

Needs root, containerd, runc, the CNI plugins and /usr/sbin/haproxy.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from nodeagent.ingress.haproxy import HAPROXY, self_signed_certificate
from tests.e2e.test_seed_journey import Cluster, eventually, http_get
from tests.e2e.test_service_networking import apply, deployment, running_pods

NAME = "ingr"
SUBNET_PREFIX = "192.168.76"
BRIDGE = "flt76i"
POD_NETWORK = "10.76.0.0/16"
WORKER = f"{NAME}-worker-1"
WORKER_IP = f"{SUBNET_PREFIX}.101"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("containerd") or not Path("/usr/lib/cni/bridge").exists()
    or not Path(HAPROXY).exists(),
    reason="needs root, containerd, the CNI plugins (the local provider makes network namespaces) and haproxy")


def request(host: str, path: str = "/", *, timeout: float = 5) -> tuple[int, str]:
    """GET http://<worker>/<path> with `Host: host`; (status, body)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())
    req = urllib.request.Request(f"http://{WORKER_IP}{path}", headers={"Host": host})
    try:
        with opener.open(req, timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def answered(host: str, path: str = "/") -> str | None:
    """The body of a 200 answer (for `eventually`), None for any other."""
    status, body = request(host, path)
    return body.strip() if status == 200 else None


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def without_token(workload: dict[str, Any]) -> dict[str, Any]:
    """The Deployment with pods that mount no API token: web servers need none."""
    workload["spec"]["template"]["spec"]["automountServiceAccountToken"] = False
    return workload


def service(name: str, kind: str = "ClusterIP") -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": kind, "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": 80}]}}


def ingress(name: str, rules: list[dict[str, object]], *, annotations: dict[str, str] | None = None,
            tls: list[dict[str, object]] | None = None) -> dict[str, object]:
    spec: dict[str, object] = {"rules": rules}
    if tls:
        spec["tls"] = tls
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "annotations": annotations or {}}, "spec": spec}


def rule(host: str, path: str, svc: str, port: int | str = 80) -> dict[str, object]:
    backend_port = {"number": port} if isinstance(port, int) else {"name": port}
    return {"host": host, "http": {"paths": [{"path": path, "pathType": "Prefix",
                                              "backend": {"service": {"name": svc, "port": backend_port}}}]}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("ingress")
    with Cluster(home).up(NAME, workers=1, subnet_prefix=SUBNET_PREFIX, bridge=BRIDGE, pod_network=POD_NETWORK) as c:
        yield c


@pytest.fixture(scope="module")
def certificate(cluster: Cluster) -> bytes:
    """A kubernetes.io/tls Secret for t.example; its certificate's PEM."""
    pem = self_signed_certificate("t.example")
    end = pem.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----\n")
    apply(cluster, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t-tls"}, "type": "kubernetes.io/tls",
                    "data": {"tls.crt": base64.b64encode(pem[:end]).decode(),
                             "tls.key": base64.b64encode(pem[end:]).decode()}})
    return pem[:end]


@pytest.fixture(scope="module")
def shop(cluster: Cluster, certificate: bytes) -> None:
    """A (nginx), B (3 replicas) and a canary of B behind the Ingresses; every pod ready."""
    eventually(lambda: "flotilla.dev/ingress-haproxy" in cluster.kctl("get", "ingressclass", "flotilla"),
               "the default IngressClass made by the ingress agent", timeout=60)
    nginx = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "svc-a"},
             "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "svc-a"}},
                      "template": {"metadata": {"labels": {"app": "svc-a"}},
                                   "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}}
    apply(cluster, *(without_token(d) for d in (nginx, deployment("svc-b", 3), deployment("canary", 1))),
          service("svc-a"), service("svc-b", "NodePort"), service("canary"),
          ingress("shop", [rule("a.example", "/", "svc-a"), rule("b.example", "/api", "svc-b", "http")],
                  annotations={"nginx.ingress.kubernetes.io/rewrite-target": "/"}),
          ingress("secure", [rule("t.example", "/", "svc-b")], tls=[{"hosts": ["t.example"], "secretName": "t-tls"}]),
          ingress("main", [rule("c.example", "/", "svc-b")]),
          ingress("main-canary", [rule("c.example", "/", "canary")],
                  annotations={"nginx.ingress.kubernetes.io/canary": "true",
                               "nginx.ingress.kubernetes.io/canary-weight": "20"}))
    eventually(lambda: running_pods(cluster, "svc-a-", 1), "nginx ready", timeout=180)
    eventually(lambda: running_pods(cluster, "svc-b-", 3), "3 svc-b replicas ready", timeout=180)
    eventually(lambda: running_pods(cluster, "canary-", 1), "the canary ready", timeout=180)


def test_hosts_and_paths_reach_their_pods(cluster: Cluster, shop: None) -> None:
    b_pods = {p["NAME"] for p in running_pods(cluster, "svc-b-", 3) or []}
    body = eventually(lambda: answered("a.example"), "a.example through the ingress", timeout=60)
    assert "nginx" in body
    # /api is rewritten to / (busybox httpd has no /api: a 200 with a pod name means the rewrite happened).
    answers = {eventually(lambda: answered("b.example", "/api"), "b.example/api through the ingress", timeout=60)
               for _ in range(12)}
    assert answers <= b_pods and answers, answers
    assert request("b.example", "/other")[0] == 404  # b.example's own catch-all
    assert request("unknown.example") == (404, "default backend - 404")
    # The agent (the lowest-named live one: the only one) writes the worker's address into the status.
    rows = eventually(lambda: [r for r in cluster.rows("get", "ingress") if r["NAME"] == "shop" and r["ADDRESS"]],
                      "the Ingress's address", timeout=60)
    assert rows[0]["ADDRESS"] == WORKER_IP and rows[0]["CLASS"] == "flotilla" and rows[0]["PORTS"] == "80"


def test_a_tls_host_presents_its_secret_by_sni(shop: None, certificate: bytes) -> None:
    def served() -> bytes | None:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection((WORKER_IP, 443), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="t.example") as tls:
            der = tls.getpeercert(binary_form=True)
        if der is None:
            return None
        cert = x509.load_der_x509_certificate(der)
        return der if cert == x509.load_pem_x509_certificate(certificate) else None
    eventually(served, "t.example's certificate on 443", timeout=60)
    # ssl-redirect: on by default for a host with TLS (one certificate is also haproxy's default for any
    # name, so the certificate alone does not show t.example's rules are loaded: wait for them).
    eventually(lambda: request("t.example")[0] == 308, "t.example redirected to https", timeout=60)


def test_a_weight_20_canary_takes_a_fifth(cluster: Cluster, shop: None) -> None:
    canary = {p["NAME"] for p in running_pods(cluster, "canary-", 1) or []}
    eventually(lambda: answered("c.example"), "c.example through the ingress", timeout=60)
    answers = [request("c.example")[1].strip() for _ in range(200)]
    share = sum(1 for a in answers if a in canary)
    print(f"\ncanary weight 20: {share} of 200 requests")
    assert 20 <= share <= 60, share  # 20% ± 10 of 200


def test_scaling_a_backend_drops_no_request(cluster: Cluster, shop: None) -> None:
    results: list[tuple[bool, str]] = []
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            try:
                status, body = request("b.example", "/api", timeout=3)
                results.append((status == 200, f"{status} {body.strip()[:60]}"))
            except OSError as err:
                results.append((False, repr(err)))
            stop.wait(0.02)

    worker = threading.Thread(target=stream, daemon=True)
    worker.start()
    try:
        time.sleep(0.5)
        cluster.kctl("scale", "deployment/svc-b", "--replicas=1")
        eventually(lambda: running_pods(cluster, "svc-b-", 1), "svc-b down to 1", timeout=120)
        time.sleep(1.0)
        cluster.kctl("scale", "deployment/svc-b", "--replicas=3")
        eventually(lambda: running_pods(cluster, "svc-b-", 3), "svc-b back to 3", timeout=120)
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join()
    failures = [text for ok, text in results if not ok]
    answered_by = {text.split()[1] for ok, text in results if ok}
    print(f"\nscale 3 → 1 → 3: {len(results)} requests, {len(failures)} failed, {len(answered_by)} pods answered")
    assert len(answered_by) >= 4, answered_by  # the old pods and the new ones served
    assert not failures, failures[:5]

    # The node's proxy followed the same slices: svc-b's NodePort reaches the three pods running now.
    pods = {p["NAME"] for p in running_pods(cluster, "svc-b-", 3) or []}
    node_port = {r["NAME"]: r for r in cluster.rows("get", "svc")}["svc-b"]["PORT(S)"].split(":")[1].split("/")[0]

    def every_pod_behind_the_node_port() -> set[str] | None:
        seen = {http_get(f"http://{WORKER_IP}:{node_port}/").strip() for _ in range(30)}
        return seen if seen == pods else None
    eventually(every_pod_behind_the_node_port, "the NodePort reaching the 3 current pods", timeout=30)
