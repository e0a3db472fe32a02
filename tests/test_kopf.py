"""kopf, unchanged, runs an operator against Flotilla's Kubernetes HTTP API.

Given the session's apiserver (its loopback `--http-listen` port) and a kubeconfig
naming it, an operator written the way kopf's documentation writes one — an
`@kopf.on.create('configmaps')` handler that annotates what it sees — is started
with `kopf run` in its own process, as a user starts it. kopf logs in through
the kubeconfig, scans discovery, looks for its peering resources (a real cluster
without kopf's CRDs has none, and kopf goes on), lists and watches ConfigMaps,
and merge-patches each new one: the annotation must be there within 10 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

OPERATOR = '''
import kopf


@kopf.on.create("configmaps")
def annotate(meta, patch, **_):
    patch.metadata.annotations["flotilla.dev/seen-by"] = "kopf"
'''
STARTED = "Starting the watch-stream for configmaps.v1"  # kopf's own log line once it watches


def api(http_url: str, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(http_url + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        answer: dict[str, Any] = json.loads(reply.read())
        return answer


@pytest.fixture
def kopf_ns(http_url: str) -> str:
    name = f"kopf-{uuid.uuid4().hex[:8]}"
    api(http_url, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": name}})
    return name


def start_operator(http_url: str, folder: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    (folder / "operator.py").write_text(OPERATOR)
    (folder / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: flotilla\n"
        f"clusters: [{{name: flotilla, cluster: {{server: '{http_url}'}}}}]\n"
        "users: [{name: admin, user: {}}]\n"
        "contexts: [{name: flotilla, context: {cluster: flotilla, user: admin}}]\n")
    log = folder / "kopf.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--verbose", *args, "operator.py"],
                                   cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                   env={"KUBECONFIG": str(folder / "kubeconfig"), "PATH": "/usr/bin:/bin",
                                        "HOME": str(folder)})
    return process, log


@pytest.fixture
def operator(http_url: str, kopf_ns: str, tmp_path: Path) -> Iterator[Path]:
    """`kopf run --standalone --namespace <ns> operator.py`, watching by the time the test runs."""
    process, log = start_operator(http_url, tmp_path, "--standalone", "--namespace", kopf_ns)
    try:
        deadline = time.monotonic() + 30
        while STARTED not in log.read_text(errors="replace"):
            assert process.poll() is None, f"kopf exited: {log.read_text(errors='replace')[-3000:]}"
            assert time.monotonic() < deadline, f"kopf never watched: {log.read_text(errors='replace')[-3000:]}"
            time.sleep(0.1)
        yield log
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_kopf_operator_annotates_a_new_configmap(http_url: str, kopf_ns: str, operator: Path) -> None:
    path = f"/api/v1/namespaces/{kopf_ns}/configmaps"
    api(http_url, "POST", path, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                                 "data": {"mode": "fast"}})
    deadline = time.monotonic() + 10
    while True:
        annotations = api(http_url, "GET", f"{path}/settings")["metadata"].get("annotations", {})
        if annotations.get("flotilla.dev/seen-by") == "kopf":
            break
        assert time.monotonic() < deadline, f"not annotated in 10 s: {operator.read_text(errors='replace')[-3000:]}"
        time.sleep(0.2)
    # kopf keeps its own bookkeeping on the object too, as on any cluster
    assert "kopf.zalando.org/last-handled-configuration" in annotations
    logged = operator.read_text(errors="replace")
    assert "Handler 'annotate' succeeded" in logged
    assert "Traceback" not in logged and "APIClientError" not in logged and "APIServerError" not in logged


def test_kopf_without_peering_resources_goes_on(http_url: str, kopf_ns: str, tmp_path: Path) -> None:
    """Without --standalone kopf asks for its peering resources; like a cluster without kopf's CRDs, none."""
    with pytest.raises(urllib.error.HTTPError) as missing:
        api(http_url, "GET", "/apis/kopf.dev/v1/clusterkopfpeerings")
    assert missing.value.code == 404
    process, log = start_operator(http_url, tmp_path, "--namespace", kopf_ns)
    try:
        deadline = time.monotonic() + 30
        while STARTED not in log.read_text(errors="replace"):
            assert process.poll() is None, f"kopf exited: {log.read_text(errors='replace')[-3000:]}"
            assert time.monotonic() < deadline, f"kopf never watched: {log.read_text(errors='replace')[-3000:]}"
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert "Traceback" not in log.read_text(errors="replace")
