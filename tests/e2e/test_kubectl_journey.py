"""Issue 13's acceptance: real kubectl 1.32, unchanged, drives a `kctl cluster up` cluster over HTTPS.

Given one local cluster with two workers (its own name, subnet 192.168.78.0/24,
bridge and pod network 10.78.0.0/16, so it meets no other cluster on this host;
its own HOME and KUBECONFIG in a temporary folder, so the user's ~/.kube is
never touched), /usr/bin/kubectl reads the context `cluster up` merged into
$KUBECONFIG and, step by step in this file's order (later steps build on
earlier ones), does what a Kubernetes book does:

- the seed journey, verbatim: get nodes, run, get -o wide, expose a pod on a
  NodePort (answered over HTTP), create and scale a Deployment, put a
  LoadBalancer in front (its EXTERNAL-IP answers), delete it all;
- then client-side and server-side apply, rollouts, logs, exec (also on a
  terminal), port-forward, watches, wait, top, describe, explain, the four ways
  to change an object (label/annotate, three patch types, edit, set image),
  cordon and drain, access checks, api-resources, the protobuf-bodied
  generators, and two refusals: a caller the apiserver cannot authenticate,
  and a `view` user's delete.

Every step asserts the lines kubectl itself prints (`deployment.apps/web
scaled`, `Error from server (Forbidden): ...`), so a wrong Status, Table or
discovery document shows up as the text a user would see. Every wait polls
against a deadline; the only network used is the cluster's own addresses and
loopback. Needs root, containerd, runc and the CNI plugins, and kubectl.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pty
import queue
import re
import shutil
import ssl
import subprocess
import termios
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from client import certificates
from tests.e2e.test_seed_journey import Cluster, eventually, http_get, table_rows
from tests.test_kubelet_exec import _read_until

NAME = "kjourney"
SUBNET_PREFIX = "192.168.78"
BRIDGE = "flt78k"
POD_NETWORK = "10.78.0.0/16"
MASTER = f"{NAME}-master"
WORKERS = {f"{NAME}-worker-1": f"{SUBNET_PREFIX}.101", f"{NAME}-worker-2": f"{SUBNET_PREFIX}.102"}
NODES = {MASTER: f"{SUBNET_PREFIX}.1", **WORKERS}
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("containerd") or not Path("/usr/lib/cni/bridge").exists(),
        reason="needs root, containerd and the CNI plugins (the local provider makes network namespaces)"),
    pytest.mark.skipif(not Path(KUBECTL).exists(), reason="real kubectl is not installed (/usr/bin/kubectl)"),
]

WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.22
        ports:
        - containerPort: 80
"""
TICKER = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"


class Kubectl:
    """Real kubectl on the cluster's context, as a user's shell runs it."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.env = cluster.env

    def run(self, *args: str, kubeconfig: Path | None = None, timeout: float = 90,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        argv = [KUBECTL, *(["--kubeconfig", str(kubeconfig)] if kubeconfig else []), *args]
        return subprocess.run(argv, env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def __call__(self, *args: str, **kwargs: object) -> str:
        """kubectl's stdout; its failure is the test's, with everything it printed."""
        done = self.run(*args, **kwargs)  # type: ignore[arg-type]
        assert done.returncode == 0, f"kubectl {' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}"
        return done.stdout

    def rows(self, *args: str) -> list[dict[str, str]]:
        """A kubectl table as dicts keyed by column header."""
        return table_rows(self(*args))

    def stream(self, *args: str) -> Stream:
        return Stream(subprocess.Popen([KUBECTL, *args], env=self.env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True))


class Stream:
    """A kubectl that keeps printing (logs -f, get -w, port-forward): its lines, as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def read_line(self, timeout: float = 30) -> str:
        """The next line kubectl prints, within `timeout`."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"kubectl {self.process.args!r} printed no line for {timeout:.0f}s") from None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("kubectl-journey")
    with Cluster(home).up(NAME, workers=2, subnet_prefix=SUBNET_PREFIX, bridge=BRIDGE, pod_network=POD_NETWORK) as c:
        yield c


@pytest.fixture(scope="module")
def kubectl(cluster: Cluster) -> Kubectl:
    return Kubectl(cluster)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("manifests")


# ---------------------------------------------------------------- the seed journey


def test_get_nodes_three_ready_with_kubectls_columns(kubectl: Kubectl) -> None:
    lines = kubectl("get", "nodes").splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    rows = {r["NAME"]: r for r in kubectl.rows("get", "nodes")}
    assert {n: (r["STATUS"], r["ROLES"]) for n, r in rows.items()} == {
        MASTER: ("Ready", "control-plane"), **{w: ("Ready", "worker") for w in WORKERS}}
    wide = {r["NAME"]: r["INTERNAL-IP"] for r in kubectl.rows("get", "nodes", "-o", "wide")}
    assert wide == NODES


def test_run_a_pod_and_expose_it_on_a_node_port(kubectl: Kubectl) -> None:
    assert kubectl("run", "nginx", "--image=nginx") == "pod/nginx created\n"

    def running() -> dict[str, str] | None:
        pod = {r["NAME"]: r for r in kubectl.rows("get", "pod", "-o", "wide")}.get("nginx")
        return pod if pod and pod["STATUS"] == "Running" and pod["READY"] == "1/1" else None
    pod = eventually(running, "pod nginx Running", timeout=60)
    header = kubectl("get", "pod", "-o", "wide").splitlines()[0]
    assert re.split(r"\s{2,}", header.strip()) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
                                                   "NOMINATED NODE", "READINESS GATES"]
    assert pod["IP"].startswith("10.78.") and pod["NODE"] in WORKERS, pod

    assert kubectl("expose", "pod", "nginx", "--type=NodePort", "--port=80") == "service/nginx exposed\n"
    node_port = kubectl("get", "service", "nginx", "-o", "jsonpath={.spec.ports[0].nodePort}")
    assert 30000 <= int(node_port) <= 32767
    page = eventually(lambda: http_get(f"http://{WORKERS[pod['NODE']]}:{node_port}/"), "the NodePort answers", 60)
    assert "Welcome to nginx!" in page


def test_create_scale_and_load_balance_a_deployment(kubectl: Kubectl) -> None:
    assert kubectl("create", "deployment", "deploy-nginx", "--image=nginx") == \
        "deployment.apps/deploy-nginx created\n"
    assert kubectl("scale", "deployment", "deploy-nginx", "--replicas=3") == "deployment.apps/deploy-nginx scaled\n"

    def three_running() -> list[dict[str, str]] | None:
        pods = kubectl.rows("get", "pods", "-l", "app=deploy-nginx", "-o", "wide")
        running = [p for p in pods if p["STATUS"] == "Running"]
        return running if len(running) == 3 else None
    eventually(three_running, "3 deploy-nginx pods Running", timeout=90)
    ready = kubectl.rows("get", "deployment", "deploy-nginx")[0]
    assert (ready["READY"], ready["UP-TO-DATE"], ready["AVAILABLE"]) == ("3/3", "3", "3"), ready

    assert kubectl("expose", "deployment", "deploy-nginx", "--type=LoadBalancer", "--port=80") == \
        "service/deploy-nginx exposed\n"

    def external_ip() -> str | None:
        row = kubectl.rows("get", "service", "deploy-nginx")[0]
        return row["EXTERNAL-IP"] if row["EXTERNAL-IP"].startswith(SUBNET_PREFIX) else None
    lb = eventually(external_ip, "the LoadBalancer's EXTERNAL-IP", timeout=60)
    assert "Welcome to nginx!" in eventually(lambda: http_get(f"http://{lb}/"), "the LoadBalancer answers", 60)


def test_delete_waits_and_leaves_nothing(kubectl: Kubectl) -> None:
    assert kubectl("delete", "service", "nginx", "deploy-nginx") == \
        'service "nginx" deleted\nservice "deploy-nginx" deleted\n'
    assert kubectl("delete", "deployment", "deploy-nginx") == 'deployment.apps "deploy-nginx" deleted\n'
    assert kubectl("delete", "pod", "nginx") == 'pod "nginx" deleted\n'
    # delete waited for the pod to be gone (its containers stopped), not only for the request's answer.
    gone = kubectl.run("get", "pod", "nginx")
    assert (gone.returncode, gone.stderr) == (1, 'Error from server (NotFound): pods "nginx" not found\n')

    def nothing_left() -> bool:
        done = kubectl.run("get", "pods,deployments,replicasets")
        return (done.stdout, done.stderr) == ("", "No resources found in default namespace.\n")
    eventually(nothing_left, "no pods, deployments or replicasets left", timeout=60)
    # Of the Services only the apiserver's own is left, as in every Kubernetes cluster.
    assert kubectl("get", "services", "-o", "name") == "service/kubernetes\n"


# ---------------------------------------------------------------- then: declarative configuration, rollouts


def test_apply_creates_leaves_unchanged_then_configures(kubectl: Kubectl, files: Path) -> None:
    (files / "web.yaml").write_text(WEB)
    assert kubectl("apply", "-f", str(files / "web.yaml")) == "deployment.apps/web created\n"
    assert kubectl("apply", "-f", str(files / "web.yaml")) == "deployment.apps/web unchanged\n"
    (files / "web.yaml").write_text(WEB.replace("replicas: 2", "replicas: 3"))
    assert kubectl("apply", "-f", str(files / "web.yaml")) == "deployment.apps/web configured\n"
    assert kubectl("get", "deployment", "web", "-o", "jsonpath={.spec.replicas}") == "3"
    last = json.loads(kubectl("get", "deployment", "web", "-o",
                              "jsonpath={.metadata.annotations.kubectl\\.kubernetes\\.io/last-applied-configuration}"))
    assert last["spec"]["replicas"] == 3


def test_apply_server_side_owns_fields_and_reports_conflicts(kubectl: Kubectl, files: Path) -> None:
    (files / "settings.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n"
                                         "data:\n  color: blue\n")
    assert kubectl("apply", "--server-side", "-f", str(files / "settings.yaml")) == \
        "configmap/settings serverside-applied\n"
    (files / "settings.yaml").write_text((files / "settings.yaml").read_text().replace("blue", "red"))
    conflict = kubectl.run("apply", "--server-side", "--field-manager=ops", "-f", str(files / "settings.yaml"))
    assert conflict.returncode == 1
    assert conflict.stderr.startswith('error: Apply failed with 1 conflict: conflict with "kubectl": .data.color\n')
    assert kubectl("apply", "--server-side", "--field-manager=ops", "--force-conflicts",
                   "-f", str(files / "settings.yaml")) == "configmap/settings serverside-applied\n"
    managed = json.loads(kubectl("get", "configmap", "settings", "--show-managed-fields", "-o", "json"))
    assert [(m["manager"], m["operation"]) for m in managed["metadata"]["managedFields"]] == [("ops", "Apply")]
    assert managed["data"] == {"color": "red"}


def test_rollout_status_history_and_undo(kubectl: Kubectl) -> None:
    status = kubectl("rollout", "status", "deployment/web", "--timeout=90s", timeout=120)
    assert status.splitlines()[-1] == 'deployment "web" successfully rolled out'
    assert kubectl("set", "image", "deployment/web", "web=nginx:latest") == "deployment.apps/web image updated\n"
    status = kubectl("rollout", "status", "deployment/web", "--timeout=90s", timeout=120)
    assert status.splitlines()[-1] == 'deployment "web" successfully rolled out'
    history = kubectl("rollout", "history", "deployment/web").splitlines()
    assert history[:2] == ["deployment.apps/web ", "REVISION  CHANGE-CAUSE"], history
    assert [line.split()[0] for line in history[2:] if line] == ["1", "2"]

    assert kubectl("rollout", "undo", "deployment/web") == "deployment.apps/web rolled back\n"
    status = kubectl("rollout", "status", "deployment/web", "--timeout=90s", timeout=120)
    assert status.splitlines()[-1] == 'deployment "web" successfully rolled out'
    assert kubectl("get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}") == \
        "nginx:1.22"
    # Undo brought revision 1's ReplicaSet back as revision 3 (the same template, the same ReplicaSet).
    history = kubectl("rollout", "history", "deployment/web").splitlines()
    assert [line.split()[0] for line in history[2:] if line] == ["2", "3"], history
    assert len(kubectl("get", "replicasets", "-l", "app=web", "-o", "name").split()) == 2


def test_port_forward_then_a_get_on_loopback(kubectl: Kubectl) -> None:
    forward = kubectl.stream("port-forward", "deployment/web", ":80")
    try:
        first = forward.read_line()
        match = re.fullmatch(r"Forwarding from 127\.0\.0\.1:(\d+) -> 80\n", first)
        assert match, first
        assert "Welcome to nginx!" in http_get(f"http://127.0.0.1:{match.group(1)}/")
        assert "Welcome to nginx!" in http_get(f"http://127.0.0.1:{match.group(1)}/")  # the tunnel stays up
    finally:
        forward.stop()


# ---------------------------------------------------------------- a pod's life: wait, logs, exec, top, describe


def test_wait_for_ready_then_logs_follow_the_tail(kubectl: Kubectl) -> None:
    assert kubectl("run", "ticker", "--image=busybox", "--", "sh", "-c", TICKER) == "pod/ticker created\n"
    assert kubectl("wait", "--for=condition=Ready", "pod/ticker", "--timeout=60s", timeout=90) == \
        "pod/ticker condition met\n"
    eventually(lambda: "tick 2" in kubectl("logs", "ticker"), "three ticks logged", timeout=30)
    follow = kubectl.stream("logs", "-f", "--tail=1", "ticker")
    try:
        first = follow.read_line()
        second = follow.read_line(timeout=10)  # it follows: the next tick arrives live
    finally:
        follow.stop()
    assert re.fullmatch(r"tick \d+\n", first) and int(first.split()[1]) >= 2, first
    assert second == f"tick {int(first.split()[1]) + 1}\n"


def test_exec_propagates_the_exit_code(kubectl: Kubectl) -> None:
    done = kubectl.run("exec", "ticker", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (done.returncode, done.stdout) == (3, "out\n")
    assert done.stderr == "err\ncommand terminated with exit code 3\n"
    assert kubectl("exec", "ticker", "--", "cat", "/etc/hostname") == "ticker\n"


def test_exec_it_on_a_terminal(kubectl: Kubectl) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: kubectl on a terminal, as a user starts it
        os.execve(KUBECTL, [KUBECTL, "exec", "-it", "ticker", "--", "sh"], kubectl.env)
    try:
        termios.tcsetwinsize(fd, (30, 90))
        out = _read_until(fd, b"# ", 30)  # busybox's prompt: the session is live
        os.write(fd, b"stty size\r")
        out += _read_until(fd, b"30 90", 10)
        os.write(fd, b"exit 4\r")
        with contextlib.suppress(AssertionError):
            out += _read_until(fd, b"exit code 4", 10)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 4, out
    assert b"command terminated with exit code 4" in out


def test_get_watch_sees_a_change(kubectl: Kubectl) -> None:
    watch = kubectl.stream("get", "configmap", "settings", "--watch")
    try:
        header, first = watch.read_line(), watch.read_line()
        assert header.split() == ["NAME", "DATA", "AGE"] and first.split()[:2] == ["settings", "1"], (header, first)
        assert kubectl("patch", "configmap", "settings", "--type=merge", "-p", '{"data":{"size":"L"}}') == \
            "configmap/settings patched\n"
        assert watch.read_line(timeout=15).split()[:2] == ["settings", "2"]
    finally:
        watch.stop()


def test_top_pods_and_nodes(kubectl: Kubectl) -> None:
    def every_node_reported() -> list[dict[str, str]] | None:
        rows = kubectl.rows("top", "nodes")
        return rows if {r["NAME"] for r in rows} == set(NODES) and all(
            re.fullmatch(r"\d+m", r["CPU(cores)"]) and re.fullmatch(r"\d+Mi", r["MEMORY(bytes)"]) for r in rows) \
            else None
    eventually(every_node_reported, "top nodes reports every node", timeout=60)
    assert kubectl("top", "nodes").splitlines()[0].split() == \
        ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]

    def pods_reported() -> list[dict[str, str]] | None:
        rows = kubectl.rows("top", "pods")
        live = set(kubectl("get", "pods", "-o", "jsonpath={.items[*].metadata.name}").split())
        # Every running pod is reported, and the deleted ones (nginx, deploy-nginx-...) no longer are.
        return rows if {r["NAME"] for r in rows} == live else None
    rows = eventually(pods_reported, "top pods reports exactly the pods that run", timeout=60)
    assert all(re.fullmatch(r"\d+m", r["CPU(cores)"]) and re.fullmatch(r"\d+Mi", r["MEMORY(bytes)"])
               for r in rows), rows


def test_describe_shows_events(kubectl: Kubectl) -> None:
    node = kubectl("get", "pod", "ticker", "-o", "jsonpath={.spec.nodeName}")
    pod = kubectl("describe", "pod", "ticker")
    assert re.search(r"^Status:\s+Running$", pod, re.M) and re.search(rf"^Node:\s+{node}/", pod, re.M), pod
    events = pod[pod.index("\nEvents:\n"):]
    assert re.search(rf"Normal\s+Scheduled\s+\S+\s+default-scheduler\s+"
                     rf"Successfully assigned default/ticker to {node}\n", events), events
    assert re.search(r"Normal\s+Started\s+\S+\s+kubelet\s+Started container ticker\n", events), events
    deployment = kubectl("describe", "deployment", "web")
    assert re.search(r"Normal\s+ScalingReplicaSet\s+.*deployment-controller\s+Scaled up replica set web-\w+ to 2",
                     deployment), deployment


def test_explain_deployment_spec(kubectl: Kubectl) -> None:
    explained = kubectl("explain", "deployment.spec")
    assert re.search(r"^KIND:\s+Deployment$", explained, re.M) and re.search(r"^VERSION:\s+v1$", explained, re.M)
    assert "FIELD: spec <DeploymentSpec>" in explained
    assert re.search(r"^  selector\t<LabelSelector> -required-$", explained, re.M), explained
    assert re.search(r"^  template\t<PodTemplateSpec> -required-$", explained, re.M), explained
    assert re.search(r"^  replicas\t<integer>$", explained, re.M), explained


# ---------------------------------------------------------------- changing objects in place


def test_label_annotate_and_the_three_patch_types(kubectl: Kubectl) -> None:
    assert kubectl("label", "pod", "ticker", "color=green") == "pod/ticker labeled\n"
    assert kubectl("get", "pods", "-l", "color=green", "-o", "name") == "pod/ticker\n"
    assert kubectl("annotate", "pod", "ticker", "owner=team-a") == "pod/ticker annotated\n"
    assert kubectl("get", "pod", "ticker", "-o", "jsonpath={.metadata.annotations.owner}") == "team-a"

    # Strategic: the container list merges by name, so the image stays and env is added.
    strategic = '{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"MODE","value":"prod"}]}]}}}}'
    assert kubectl("patch", "deployment", "web", "-p", strategic) == "deployment.apps/web patched\n"
    container = json.loads(kubectl("get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0]}"))
    assert (container["image"], container["env"]) == ("nginx:1.22", [{"name": "MODE", "value": "prod"}])
    assert kubectl("patch", "deployment", "web", "--type=merge", "-p", '{"metadata":{"labels":{"team":"a"}}}') == \
        "deployment.apps/web patched\n"
    assert kubectl("patch", "deployment", "web", "--type=json",
                   "-p", '[{"op":"replace","path":"/spec/replicas","value":2}]') == "deployment.apps/web patched\n"
    web = json.loads(kubectl("get", "deployment", "web", "-o", "json"))
    assert (web["metadata"]["labels"], web["spec"]["replicas"]) == ({"app": "web", "team": "a"}, 2)
    # A patch that changes nothing writes nothing, and kubectl says so.
    assert kubectl("patch", "configmap", "settings", "--type=merge", "-p", '{"data":{"size":"L"}}') == \
        "configmap/settings patched (no change)\n"


def test_edit_with_an_editor_script(kubectl: Kubectl, files: Path) -> None:
    editor = files / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/^  size: L$/  size: XL/' \"$1\"\n")
    editor.chmod(0o755)
    assert kubectl("edit", "configmap", "settings", env={"EDITOR": str(editor)}) == "configmap/settings edited\n"
    assert kubectl("get", "configmap", "settings", "-o", "jsonpath={.data.size}") == "XL"


def test_cordon_and_drain(kubectl: Kubectl) -> None:
    status = kubectl("rollout", "status", "deployment/web", "--timeout=90s", timeout=120)
    assert status.splitlines()[-1] == 'deployment "web" successfully rolled out'
    worker = kubectl("get", "pod", "ticker", "-o", "jsonpath={.spec.nodeName}")
    assert kubectl("cordon", worker) == f"node/{worker} cordoned\n"
    assert {r["NAME"]: r["STATUS"] for r in kubectl.rows("get", "nodes")}[worker] == "Ready,SchedulingDisabled"
    drained = kubectl.run("drain", worker, "--ignore-daemonsets", "--force", "--timeout=90s", timeout=120)
    assert drained.returncode == 0, drained
    assert drained.stdout.splitlines()[0] == f"node/{worker} already cordoned"
    assert "evicting pod default/ticker\n" in drained.stdout and "pod/ticker evicted\n" in drained.stdout
    assert drained.stdout.endswith(f"node/{worker} drained\n"), drained.stdout
    assert "Warning: deleting Pods that declare no controller: default/ticker" in drained.stderr
    assert kubectl("get", "pods", "-A", f"--field-selector=spec.nodeName={worker}", "-o", "name") == ""
    # The Deployment's pods came back on the other worker.
    def back_elsewhere() -> bool:
        pods = kubectl.rows("get", "pods", "-l", "app=web", "-o", "wide")
        return len(pods) == 2 and all(p["STATUS"] == "Running" and p["NODE"] != worker for p in pods)
    eventually(back_elsewhere, "web's two pods Running on the other worker", timeout=90)
    assert kubectl("uncordon", worker) == f"node/{worker} uncordoned\n"


STATEFUL = """\
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      containers:
      - name: db
        image: busybox
        command: [sh, -c, "mkdir -p /www && echo $(hostname) > /www/index.html && httpd -f -p 80 -h /www"]
        readinessProbe:
          tcpSocket: {port: 80}
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 64Mi}}
"""


def test_a_statefulset_keeps_its_names_claims_and_data(kubectl: Kubectl, files: Path) -> None:
    (files / "db.yaml").write_text(STATEFUL)
    assert kubectl("apply", "-f", str(files / "db.yaml")) == "service/db created\nstatefulset.apps/db created\n"
    status = kubectl("rollout", "status", "statefulset/db", "--timeout=90s", timeout=120)
    assert status.splitlines()[-1] == "partitioned roll out complete: 2 new pods have been updated...", status
    pods = {p["metadata"]["name"]: p for p in json.loads(kubectl("get", "pods", "-l", "app=db", "-o", "json"))["items"]}
    assert sorted(pods) == ["db-0", "db-1"]
    # OrderedReady: db-1 is created only once db-0 is Ready.
    ready_at = next(c["lastTransitionTime"] for c in pods["db-0"]["status"]["conditions"] if c["type"] == "Ready")
    assert ready_at <= pods["db-1"]["metadata"]["creationTimestamp"], (ready_at, pods["db-1"]["metadata"])
    # Each pod has its own claim of the default class, bound.
    claims = {r["NAME"]: r for r in kubectl.rows("get", "pvc")}
    assert {n: (c["STATUS"], c["STORAGECLASS"]) for n, c in claims.items() if n.startswith("data-db-")} == {
        "data-db-0": ("Bound", "standard"), "data-db-1": ("Bound", "standard")}

    # What db-0 writes in its volume survives the pod: it comes back with the same claim on the same node.
    kubectl("exec", "db-0", "--", "sh", "-c", "echo kept > /data/file")
    node = pods["db-0"]["spec"]["nodeName"]
    assert kubectl("delete", "pod", "db-0") == 'pod "db-0" deleted\n'

    def back() -> bool:
        got = json.loads(kubectl("get", "pods", "-l", "app=db", "-o", "json"))["items"]
        db0 = next((p for p in got if p["metadata"]["name"] == "db-0"), None)
        return db0 is not None and db0["metadata"]["uid"] != pods["db-0"]["metadata"]["uid"] and any(
            c["type"] == "Ready" and c["status"] == "True" for c in db0["status"].get("conditions", []))
    eventually(back, "db-0 recreated and Ready", timeout=90)
    assert kubectl("get", "pod", "db-0", "-o", "jsonpath={.spec.nodeName}") == node
    assert kubectl("exec", "db-0", "--", "cat", "/data/file") == "kept\n"

    # Its stable name resolves from another pod (busybox's nslookup exits 1 on the other search domains).
    def resolves() -> bool:
        out = kubectl.run("exec", "db-1", "--", "nslookup", "db-0.db.default.svc.cluster.local").stdout
        return "Name:\tdb-0.db.default.svc.cluster.local" in out
    eventually(resolves, "db-0.db resolving from db-1", timeout=30)

    # Scaling down removes db-1 but keeps its claim (retention policy Retain by default).
    assert kubectl("scale", "statefulset", "db", "--replicas=1") == "statefulset.apps/db scaled\n"
    eventually(lambda: kubectl("get", "pods", "-l", "app=db", "-o", "name") == "pod/db-0\n", "db-1 gone", timeout=60)
    assert kubectl("get", "pvc", "data-db-1", "-o", "jsonpath={.status.phase}") == "Bound"


# ---------------------------------------------------------------- discovery, access, generators, refusals


def test_auth_can_i_and_api_resources(kubectl: Kubectl) -> None:
    assert kubectl("auth", "can-i", "create", "deployments") == "yes\n"
    assert kubectl("auth", "can-i", "delete", "nodes") == "yes\n"
    # By name and group-version: metrics.k8s.io serves `pods` and `nodes` too, as metrics-server does.
    resources = {(r["NAME"], r["APIVERSION"]): r for r in kubectl.rows("api-resources")}
    assert resources["deployments", "apps/v1"] == {"NAME": "deployments", "SHORTNAMES": "deploy",
                                                   "APIVERSION": "apps/v1", "NAMESPACED": "true", "KIND": "Deployment"}
    assert resources["nodes", "v1"]["NAMESPACED"] == "false" and resources["pods", "v1"]["SHORTNAMES"] == "po"
    assert resources["pods", "metrics.k8s.io/v1beta1"]["KIND"] == "PodMetrics"
    assert {"pods", "services", "configmaps", "secrets", "namespaces", "roles", "resourcequotas",
            "horizontalpodautoscalers", "leases"} <= {name for name, _ in resources}


def test_create_generators_send_protobuf(kubectl: Kubectl) -> None:
    assert kubectl("create", "namespace", "team-a") == "namespace/team-a created\n"
    assert kubectl("create", "configmap", "app-config", "-n", "team-a", "--from-literal=mode=prod") == \
        "configmap/app-config created\n"
    assert kubectl("create", "secret", "generic", "app-secret", "-n", "team-a", "--from-literal=password=s3cret") \
        == "secret/app-secret created\n"
    assert kubectl("create", "role", "pod-reader", "-n", "team-a", "--verb=get,list", "--resource=pods") == \
        "role.rbac.authorization.k8s.io/pod-reader created\n"
    assert kubectl("create", "quota", "team-quota", "-n", "team-a", "--hard=pods=10,limits.memory=1Gi") == \
        "resourcequota/team-quota created\n"
    assert kubectl("create", "service", "clusterip", "my-svc", "-n", "team-a", "--tcp=8080:80") == \
        "service/my-svc created\n"
    # What the protobuf bodies carried arrived whole.
    assert kubectl("get", "configmap", "app-config", "-n", "team-a", "-o", "jsonpath={.data}") == '{"mode":"prod"}'
    secret = kubectl("get", "secret", "app-secret", "-n", "team-a", "-o", "jsonpath={.data.password}")
    assert base64.b64decode(secret) == b"s3cret"
    role = json.loads(kubectl("get", "role", "pod-reader", "-n", "team-a", "-o", "json"))
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    quota = json.loads(kubectl("get", "quota", "team-quota", "-n", "team-a", "-o", "json"))
    assert quota["spec"]["hard"] == {"pods": "10", "limits.memory": "1Gi"}
    # And each prints with Kubernetes' columns: a quota's used/hard per resource, a role's creation time.
    assert kubectl.rows("get", "quota", "-n", "team-a")[0] | {"AGE": ""} == {
        "NAME": "team-quota", "AGE": "", "REQUEST": "pods: 0/10", "LIMIT": "limits.memory: 0/1Gi"}
    [role_row] = kubectl.rows("get", "role", "-n", "team-a")
    assert role_row["NAME"] == "pod-reader" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", role_row["CREATED AT"])
    service = json.loads(kubectl("get", "service", "my-svc", "-n", "team-a", "-o", "json"))
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["clusterIP"].startswith("10.")
    assert service["spec"]["ports"] == [{"name": "8080-80", "port": 8080, "protocol": "TCP", "targetPort": 80}]
    assert kubectl("get", "namespace", "team-a", "-o", "jsonpath={.status.phase}") == "Active"


def test_an_unauthenticated_request_is_unauthorized(kubectl: Kubectl, cluster: Cluster, files: Path) -> None:
    # The cluster's address and CA, but none of the admin's credentials: only a token nobody issued.
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "stranger", "user": {"token": "not-a-token"}}]
    config["contexts"][0]["context"]["user"] = "stranger"
    stranger = files / "stranger.conf"
    stranger.write_text(yaml.safe_dump(config))
    refused = kubectl.run("get", "pods", kubeconfig=stranger)
    assert (refused.returncode, refused.stderr) == (1, "error: You must be logged in to the server (Unauthorized)\n")
    # And a request with no credentials at all (kubectl would stop to prompt for a password) gets a 401 Status.
    cluster_entry = config["clusters"][0]["cluster"]
    context = ssl.create_default_context(cadata=base64.b64decode(cluster_entry["certificate-authority-data"]).decode())
    with pytest.raises(urllib.error.HTTPError) as refusal:
        urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)) \
            .open(f"{cluster_entry['server']}/api/v1/namespaces/default/pods", timeout=10)
    status = json.loads(refusal.value.read())
    assert (refusal.value.code, status["kind"], status["reason"], status["code"]) == \
        (401, "Status", "Unauthorized", 401)


def test_a_view_users_delete_is_forbidden(kubectl: Kubectl, cluster: Cluster, files: Path) -> None:
    assert kubectl("create", "clusterrolebinding", "viewer-view", "--clusterrole=view", "--user=viewer") == \
        "clusterrolebinding.rbac.authorization.k8s.io/viewer-view created\n"
    binding = kubectl.rows("get", "clusterrolebinding", "viewer-view", "-o", "wide")[0]
    assert (binding["ROLE"], binding["USERS"], binding["GROUPS"]) == ("ClusterRole/view", "viewer", "")
    ca = certificates.KeyPair.read(cluster.home / "clusters" / NAME / "config" / "pki", "ca")
    cert = certificates.create_client_cert(ca, "viewer")
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "viewer", "user": {
        "client-certificate-data": base64.b64encode(cert.cert_pem).decode(),
        "client-key-data": base64.b64encode(cert.key_pem).decode()}}]
    config["contexts"][0]["context"]["user"] = "viewer"
    viewer = files / "viewer.conf"
    viewer.touch(mode=0o600)
    viewer.write_text(yaml.safe_dump(config))

    assert [r["NAME"] for r in Kubectl(cluster).rows("--kubeconfig", str(viewer), "get", "deployments")] == ["web"]
    assert kubectl.run("auth", "can-i", "delete", "pods", kubeconfig=viewer).stdout == "no\n"
    refused = kubectl.run("delete", "deployment", "web", kubeconfig=viewer)
    assert (refused.returncode, refused.stderr) == (1, 'Error from server (Forbidden): deployments.apps "web" is '
                                                       'forbidden: User "viewer" cannot delete resource "deployments" '
                                                       'in API group "apps" in the namespace "default"\n')
    assert kubectl("get", "deployment", "web", "-o", "name") == "deployment.apps/web\n"  # still there
