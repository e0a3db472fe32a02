"""kctl, as a user drives it: apply the kubernetes.io examples, read them back, break them, delete them.

The server tests run kctl's click entry point in-process (CliRunner) against
the real apiserver fixture, each in a fresh namespace; two tests run the
installed `kctl` script as a subprocess, for what only a process shows (exit
code on Ctrl-C, no traceback when the server is down). The printer and
kubeconfig tests need no server.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from client import config as clientconfig
from kctl import apply as applier
from kctl import manifests, printers
from kctl.commands.metadata import parse_changes
from kctl.errors import CliError
from kctl.main import cli
from proto import core_pb2, kinds, manifest
from proto.wellknown import ANNOTATION_LAST_APPLIED
from provision.processes import ApiServer

KCTL = str(Path(sys.executable).with_name("kctl"))

# Verbatim from kubernetes.io (tests/manifests/README.md says where each comes from).
MANIFESTS = Path(__file__).parent / "manifests"
DEPLOYMENT = (MANIFESTS / "nginx-deployment.yaml").read_text()
SERVICE = (MANIFESTS / "my-service.yaml").read_text()
POD = (MANIFESTS / "simple-pod.yaml").read_text()

Kctl = Callable[..., Result]


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def kctl(apiserver: ApiServer, tmp_path: Path) -> Kctl:
    """Run `kctl -s <apiserver> ARGS...` in-process; no kubeconfig is read from $HOME."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(cli, ["-s", apiserver.address, *args], input=input,
                             env={"KCTL_CONFIG": str(tmp_path / "no-config")})
    return run


@pytest.fixture
def ns(kctl: Kctl) -> str:
    name = f"k-{uuid.uuid4().hex[:10]}"
    result = kctl("create", "namespace", name)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"namespace/{name} created\n"
    return name


def write(path: Path, *docs: str) -> str:
    path.write_text("---\n".join(docs))
    return str(path)


def read_yaml(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.stdout)


# ---------------------------------------------------------------- apply and read back


def test_apply_kubernetes_examples_then_read_them_back(kctl: Kctl, ns: str, tmp_path: Path) -> None:
    # Given the three examples in one multi-document file
    path = write(tmp_path / "examples.yaml", DEPLOYMENT, SERVICE, POD)

    # When I apply it, each object is created
    result = kctl("apply", "-f", path, "-n", ns)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "deployment.apps/nginx-deployment created", "service/my-service created", "pod/nginx created"]

    # Then -o yaml shows the fields exactly as written
    dep = read_yaml(kctl("get", "deployment", "nginx-deployment", "-n", ns, "-o", "yaml"))
    assert dep["kind"] == "Deployment" and dep["apiVersion"] == "apps/v1"
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["selector"] == {"matchLabels": {"app": "nginx"}}
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert (container["name"], container["image"]) == ("nginx", "nginx:1.14.2")
    assert container["ports"][0]["containerPort"] == 80
    assert json.loads(dep["metadata"]["annotations"][ANNOTATION_LAST_APPLIED])["spec"]["replicas"] == 3

    svc = read_yaml(kctl("get", "svc/my-service", "-n", ns, "-o", "yaml"))
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "MyApp"}
    assert svc["spec"]["ports"][0]["port"] == 80
    assert svc["spec"]["ports"][0]["targetPort"] == 9376
    assert svc["spec"]["ports"][0]["protocol"] == "TCP"

    pod = json.loads(kctl("get", "po", "nginx", "-n", ns, "-o", "json").stdout)
    assert pod["spec"]["containers"][0]["image"] == "nginx:1.14.2"
    assert pod["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]

    # And applying the same file again changes nothing
    again = kctl("apply", "-f", path, "-n", ns)
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines() == [
        "deployment.apps/nginx-deployment unchanged", "service/my-service unchanged", "pod/nginx unchanged"]


def test_get_output_applies_back(kctl: Kctl, ns: str, tmp_path: Path) -> None:
    kctl("apply", "-n", ns, "-f", write(tmp_path / "d.yaml", DEPLOYMENT, SERVICE))

    # -o yaml of several objects is a List; -o json of one is the object: both re-apply
    listing = kctl("get", "deploy,svc", "-n", ns, "-o", "yaml")
    assert yaml.safe_load(listing.stdout)["kind"] == "List"
    result = kctl("apply", "-f", "-", input=listing.stdout)
    assert result.exit_code == 0, result.output
    assert sorted(line.rsplit(" ", 1)[1] for line in result.stdout.splitlines()) == ["configured", "configured"]
    one = kctl("get", "deploy", "nginx-deployment", "-n", ns, "-o", "json")
    result = kctl("apply", "-f", "-", input=one.stdout)
    assert result.stdout == "deployment.apps/nginx-deployment unchanged\n", result.output


def test_changing_a_field_configures_and_keeps_what_others_set(kctl: Kctl, ns: str, tmp_path: Path) -> None:
    path = tmp_path / "deploy.yaml"
    kctl("apply", "-n", ns, "-f", write(path, DEPLOYMENT))
    # Someone else labels the deployment; a later apply must not drop that label
    assert kctl("label", "deploy", "nginx-deployment", "team=web", "-n", ns).exit_code == 0

    write(path, DEPLOYMENT.replace("replicas: 3", "replicas: 5"))
    result = kctl("apply", "-n", ns, "-f", str(path))
    assert result.stdout == "deployment.apps/nginx-deployment configured\n", result.output

    dep = read_yaml(kctl("get", "deploy", "nginx-deployment", "-n", ns, "-o", "yaml"))
    assert dep["spec"]["replicas"] == 5
    assert dep["metadata"]["labels"] == {"app": "nginx", "team": "web"}
    # A label dropped from the manifest leaves the object; one set by someone else stays (three-way merge)
    write(path, DEPLOYMENT.replace("replicas: 3", "replicas: 5").replace(
        "  labels:\n    app: nginx\nspec:", "  labels:\n    tier: frontend\nspec:"))
    assert kctl("apply", "-n", ns, "-f", str(path)).exit_code == 0
    dep = read_yaml(kctl("get", "deploy", "nginx-deployment", "-n", ns, "-o", "yaml"))
    assert dep["metadata"]["labels"] == {"team": "web", "tier": "frontend"}


# case: (manifest, object name, what stderr must name). The apiserver's validation (dry run) catches
# the first three; kctl's parse catches the others before any request.
BROKEN = {
    "bad-name": (DEPLOYMENT.replace("name: nginx-deployment", "name: Bad_Name"), "Bad_Name", "metadata.name"),
    "port-70000": (DEPLOYMENT.replace("containerPort: 80", "containerPort: 70000"), "nginx-deployment",
                   "containers[0].ports[0].containerPort"),
    "missing-image": (POD.replace("    image: nginx:1.14.2\n", ""), "nginx", "spec.containers[0].image"),
    "unknown-field": (DEPLOYMENT.replace("  replicas: 3\n", "  replicas: 3\n  replicaz: 4\n"),
                      "nginx-deployment", 'spec.replicaz: unknown field "replicaz"'),
    "cpu-abc": (POD.replace("    image: nginx:1.14.2\n",
                            "    image: nginx:1.14.2\n    resources:\n      requests:\n        cpu: abc\n"),
                "nginx", "spec.containers[0].resources.requests.cpu"),
    # Line 5 of the pod, after the Service's lines and the `---` that precede it in the file
    "malformed-yaml": (POD.replace("  name: nginx\n", "  name: nginx\n   labels: {}\n", 1), "nginx",
                       f"yaml: line {SERVICE.count(chr(10)) + 1 + 5}: mapping values are not allowed here"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_manifest_stores_nothing(kctl: Kctl, ns: str, tmp_path: Path, case: str) -> None:
    text, name, named = BROKEN[case]
    # A valid Service comes first in the same file: validation of every document precedes any write
    path = write(tmp_path / f"{case}.yaml", SERVICE, text)

    result = kctl("apply", "-n", ns, "-f", path)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert named in result.stderr and f"{case}.yaml" in result.stderr
    server_side = case in ("bad-name", "port-70000", "missing-image")
    assert result.stderr.startswith("Error from server (Invalid): error when creating" if server_side
                                    else "error: error ")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    kind = "deploy" if "Deployment" in text else "po"
    for args in ((kind, name), ("svc", "my-service")):
        gone = kctl("get", *args, "-n", ns)
        assert gone.exit_code == 1 and "Error from server (NotFound)" in gone.stderr


def test_create_refuses_an_existing_object(kctl: Kctl, ns: str, tmp_path: Path) -> None:
    path = write(tmp_path / "pod.yaml", POD)
    assert kctl("create", "-f", path, "-n", ns).stdout == "pod/nginx created\n"
    # The existing pod is an error; the service beside it is still created, as with kubectl
    again = kctl("create", "-f", path, "-f", write(tmp_path / "svc.yaml", SERVICE), "-n", ns)
    assert again.exit_code == 1
    assert again.stderr.startswith('Error from server (AlreadyExists): error when creating "')
    assert again.stdout == "service/my-service created\n"


# ---------------------------------------------------------------- get


def test_get_prints_kubectl_tables(kctl: Kctl, ns: str, tmp_path: Path) -> None:
    kctl("apply", "-n", ns, "-f", write(tmp_path / "all.yaml", DEPLOYMENT, SERVICE, POD))

    pods = kctl("get", "pods", "-n", ns).stdout.splitlines()
    assert pods[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert pods[1].split()[:4] == ["nginx", "0/1", "Pending", "0"]
    wide = kctl("get", "po", "-o", "wide", "-n", ns).stdout.splitlines()[0]
    assert re.split(r"\s{2,}", wide)[5:] == ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    deploy = kctl("get", "deploy", "-n", ns).stdout.splitlines()
    assert deploy[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert deploy[1].split()[:2] == ["nginx-deployment", "0/3"]
    svc = kctl("get", "svc", "-n", ns).stdout.splitlines()
    assert svc[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert svc[1].split()[1] == "ClusterIP" and "80/TCP" in svc[1].split()
    assert kctl("get", "ns", ns).stdout.splitlines()[0].split() == ["NAME", "STATUS", "AGE"]
    assert kctl("get", "ns", ns, "--no-headers").stdout.split()[:2] == [ns, "Active"]

    # Columns line up: every row's second column starts where its header does
    assert len({line.index(line.split()[1]) for line in pods}) == 1

    # Several kinds: names carry their kind, tables are separated by a blank line
    everything = kctl("get", "all", "-n", ns).stdout
    assert "pod/nginx " in everything and "service/my-service " in everything
    assert "deployment.apps/nginx-deployment " in everything and "\n\n" in everything

    assert kctl("get", "po,deploy", "-n", ns, "-o", "name").stdout.splitlines() == [
        "pod/nginx", "deployment.apps/nginx-deployment"]
    labelled = kctl("get", "deploy", "-n", ns, "--show-labels").stdout.splitlines()
    assert labelled[0].endswith("LABELS") and labelled[1].endswith("app=nginx")

    every_ns = kctl("get", "po", "-A").stdout.splitlines()
    assert every_ns[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:2] == [ns, "nginx"] for line in every_ns)


def test_get_selectors_and_empty_results(kctl: Kctl, ns: str, tmp_path: Path) -> None:
    kctl("apply", "-n", ns, "-f", write(tmp_path / "p.yaml", POD, POD.replace("name: nginx", "name: other")))
    kctl("label", "po", "other", "tier=db", "-n", ns)

    assert kctl("get", "po", "-l", "tier=db", "-n", ns, "-o", "name").stdout == "pod/other\n"
    assert kctl("get", "po", "--field-selector", "metadata.name=nginx", "-n", ns,
                "-o", "name").stdout == "pod/nginx\n"

    empty = kctl("get", "po", "-l", "tier=none", "-n", ns)
    assert (empty.exit_code, empty.stdout) == (0, "")
    assert empty.stderr == f"No resources found in {ns} namespace.\n"

    missing = kctl("get", "po", "nope", "-n", ns)
    assert missing.exit_code == 1
    assert missing.stderr.startswith("Error from server (NotFound): ")

    unknown = kctl("get", "widgets")
    assert (unknown.exit_code, unknown.stderr) == (1, 'error: the server doesn\'t have a resource type "widgets"\n')


def test_bad_namespace_selector_and_replicas_are_refused_in_kubernetes_words(kctl: Kctl, ns: str) -> None:
    bad_ns = kctl("-n", "Bad NS", "get", "pods")
    assert bad_ns.exit_code == 1 and bad_ns.stdout == ""
    assert bad_ns.stderr.startswith('error: invalid namespace "Bad NS": a lowercase RFC 1123 label must consist of')

    bang = kctl("get", "pods", "-l", "!!", "-n", ns)
    assert (bang.exit_code, bang.stderr) == (
        1, "Error from server (BadRequest): unable to parse requirement: found '!', expected: identifier\n")

    assert kctl("create", "deployment", "web", "--image", "nginx", "-n", ns).exit_code == 0
    huge = kctl("scale", "deployment/web", "--replicas", str(10**12), "-n", ns)
    assert huge.exit_code == 1 and "Traceback" not in huge.output and "ValueError" not in huge.output
    assert huge.stderr.startswith(f"error: Invalid value for '--replicas': {10**12} is out of range: "
                                  "it must fit a 32-bit integer (at most 2147483647)")
    # Nothing changed, and a count that fits still scales.
    assert kctl("get", "deployment", "web", "-n", ns, "-o", "jsonpath={.spec.replicas}").stdout == "1"
    assert kctl("scale", "deployment/web", "--replicas", "3", "-n", ns).stdout == "deployment.apps/web scaled\n"


def test_describe_shows_sections_and_events(kctl: Kctl, ns: str, tmp_path: Path) -> None:
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "nginx.1"},
             "involvedObject": {"kind": "Pod", "name": "nginx", "namespace": ns},
             "reason": "Scheduled", "message": "Successfully assigned to worker-1", "type": "Normal",
             "source": {"component": "default-scheduler"}, "count": 1,
             "lastTimestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    kctl("apply", "-n", ns, "-f", write(tmp_path / "d.yaml", DEPLOYMENT, POD, json.dumps(event)))

    pod = kctl("describe", "pod", "nginx", "-n", ns)
    assert pod.exit_code == 0, pod.output
    assert pod.stdout.startswith("Name:")
    assert f"Namespace:        {ns}" in pod.stdout
    assert "    Image:          nginx:1.14.2" in pod.stdout
    assert pod.stdout.splitlines()[-1].split()[:2] == ["Normal", "Scheduled"]
    assert "Successfully assigned to worker-1" in pod.stdout

    dep = kctl("describe", "deploy/nginx-deployment", "-n", ns).stdout
    assert "3 desired | 0 updated | 0 total | 0 available | 0 unavailable" in dep
    assert dep.rstrip().splitlines()[-1].split() == ["Events:", "<none>"]


# ---------------------------------------------------------------- label, annotate, delete


def test_label_and_annotate(kctl: Kctl, ns: str, tmp_path: Path) -> None:
    kctl("apply", "-n", ns, "-f", write(tmp_path / "pod.yaml", POD))

    assert kctl("label", "po", "nginx", "tier=web", "-n", ns).stdout == "pod/nginx labeled\n"
    refused = kctl("label", "pod/nginx", "tier=db", "-n", ns)
    assert refused.exit_code == 1
    assert refused.stderr == "error: 'tier' already has a value (web), and --overwrite is false\n"
    assert kctl("label", "po", "nginx", "tier=db", "--overwrite", "-n", ns).exit_code == 0
    assert kctl("get", "po", "-l", "tier=db", "-n", ns, "-o", "name").stdout == "pod/nginx\n"
    assert kctl("label", "po", "nginx", "tier-", "-n", ns).stdout == "pod/nginx unlabeled\n"

    assert kctl("annotate", "po", "nginx", "owner=alice", "-n", ns).stdout == "pod/nginx annotated\n"
    pod = read_yaml(kctl("get", "po", "nginx", "-n", ns, "-o", "yaml"))
    assert "tier" not in pod["metadata"].get("labels", {})
    assert pod["metadata"]["annotations"]["owner"] == "alice"


def test_delete(kctl: Kctl, ns: str, tmp_path: Path) -> None:
    path = write(tmp_path / "all.yaml", DEPLOYMENT, SERVICE, POD)
    kctl("apply", "-n", ns, "-f", path)

    assert kctl("delete", "po", "nginx", "-n", ns, "--now").stdout == 'pod "nginx" deleted\n'
    assert kctl("get", "po", "nginx", "-n", ns).exit_code == 1
    missing = kctl("delete", "po", "nginx", "-n", ns)
    assert missing.exit_code == 1 and missing.stderr.startswith("Error from server (NotFound): ")
    assert kctl("delete", "po", "nginx", "-n", ns, "--ignore-not-found").exit_code == 0

    result = kctl("delete", "svc/my-service", "deploy/nginx-deployment", "-n", ns, "--cascade=background")
    assert result.stdout.splitlines() == ['service "my-service" deleted',
                                          'deployment.apps "nginx-deployment" deleted']

    kctl("apply", "-n", ns, "-f", path)
    assert kctl("delete", "-f", path, "-n", ns).exit_code == 0
    assert kctl("get", "all", "-n", ns).stderr == f"No resources found in {ns} namespace.\n"


# ---------------------------------------------------------------- discovery and config


def test_api_resources_lists_short_names() -> None:
    result = CliRunner().invoke(cli, ["api-resources"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    assert ["pods", "po", "v1", "true", "Pod"] in [line.split() for line in lines]
    assert ["deployments", "deploy", "apps/v1", "true", "Deployment"] in [line.split() for line in lines]


def test_version_reports_the_server(kctl: Kctl) -> None:
    result = kctl("version")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Client Version: v")
    assert "Server Version: " in result.stdout and "etcd Version: " in result.stdout


def test_kubeconfig_gives_server_and_namespace(apiserver: ApiServer, kctl: Kctl, ns: str,
                                               tmp_path: Path) -> None:
    kctl("apply", "-n", ns, "-f", write(tmp_path / "pod.yaml", POD))
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "dev",
              "clusters": [{"name": "local", "cluster": {"server": f"https://{apiserver.address}", "extensions": [
                  {"name": "flotilla.dev/grpc", "extension": {"server": apiserver.address}}]}}],
              "users": [{"name": "me", "user": {"token": "t0k3n"}}],
              "contexts": [{"name": "dev", "context": {"cluster": "local", "user": "me", "namespace": ns}}]}
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))

    result = CliRunner().invoke(cli, ["get", "po", "-o", "name"], env={"KCTL_CONFIG": str(path)})
    assert (result.exit_code, result.stdout) == (0, "pod/nginx\n"), result.output
    loaded = clientconfig.load(kubeconfig=path)
    assert (loaded.server, loaded.namespace, loaded.token) == (apiserver.address, ns, "t0k3n")
    assert loaded.credentials() is None  # no CA: plaintext until the apiserver serves TLS


def test_kubeconfig_precedence_and_tls_material(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    (tmp_path / "ca.crt").write_bytes(ca)
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "a",
              "clusters": [{"name": "c", "cluster": {"server": "10.0.0.1:6443",
                                                     "certificate-authority": "ca.crt"}}],
              "users": [{"name": "u", "user": {"client-key-data": base64.b64encode(b"KEY").decode()}}],
              "contexts": [{"name": "a", "context": {"cluster": "c", "user": "u"}}]}
    path = tmp_path / "kc"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KCTL_CONFIG", str(path))

    loaded = clientconfig.load()
    assert (loaded.server, loaded.namespace) == ("10.0.0.1:6443", "default")
    assert loaded.certificate_authority_data == ca and loaded.client_key_data == b"KEY"
    assert clientconfig.load(server="127.0.0.1:1", namespace="x").server == "127.0.0.1:1"
    assert clientconfig.load(server="127.0.0.1:1", namespace="x").namespace == "x"
    with pytest.raises(clientconfig.ConfigError, match="does not exist"):
        clientconfig.load(kubeconfig=tmp_path / "missing")
    monkeypatch.setenv("KCTL_CONFIG", str(tmp_path / "missing"))
    with pytest.raises(clientconfig.ConfigError, match="no server"):
        clientconfig.load()


# ---------------------------------------------------------------- the real process


def test_unreachable_server_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run([KCTL, "-s", "127.0.0.1:1", "get", "pods"], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "KCTL_CONFIG": str(tmp_path / "none")})
    assert done.returncode == 1
    assert done.stderr == "error: the server at 127.0.0.1:1 is unreachable (is the apiserver running?)\n"


def test_watch_prints_a_row_per_change_and_stops_on_ctrl_c(apiserver: ApiServer, kctl: Kctl, ns: str,
                                                             tmp_path: Path) -> None:
    kctl("apply", "-n", ns, "-f", write(tmp_path / "pod.yaml", POD))
    watch = subprocess.Popen([KCTL, "-s", apiserver.address, "get", "po", "-w", "-n", ns],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline().split()[0] == "NAME"
        assert watch.stdout.readline().split()[:3] == ["nginx", "0/1", "Pending"]
        kctl("label", "po", "nginx", "seen=yes", "-n", ns)
        assert watch.stdout.readline().split()[0] == "nginx"
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=10)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 130
    assert "Traceback" not in err


# ---------------------------------------------------------------- printers, no server


def test_format_table_pads_columns_with_three_spaces() -> None:
    lines = printers.format_table([["NAME", "READY"], ["a-long-name", "1/1"]])
    assert lines == ["NAME          READY", "a-long-name   1/1"]


def test_get_table_renders_the_api_side_columns() -> None:
    # kctl keeps no columns of its own: names upper-cased, priority-1 columns only with -o wide,
    # cells as text, kind/ before the name when several kinds print, NAMESPACE and LABELS added.
    hpa = manifest.from_dict({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5}})
    table = printers.Table(kinds.resolve("hpa"))
    assert table.header() == ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]
    assert table.row(hpa, printers.now())[:6] == ["web", "Deployment/web", "<none>", "<unset>", "5", "0"]

    pods = printers.Table(kinds.resolve("pods"), wide=True, namespace_column=True, show_labels=True,
                          name_prefix="pod/")
    assert pods.header() == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
                             "NOMINATED NODE", "READINESS GATES", "LABELS"]
    pod = core_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace = "p", "shop"
    pod.metadata.labels["app"] = "web"
    assert pods.row(pod, printers.now()) == ["shop", "pod/p", "0/0", "Pending", "0", "<unknown>", "<none>",
                                             "<none>", "<none>", "<none>", "app=web"]
    assert printers.Table(kinds.resolve("pods")).header() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]


def test_event_name_column_is_prefixed_only_when_wide_shows_it() -> None:
    event = core_pb2.Event(type="Normal", reason="Pulled", message="done", count=2)
    event.metadata.name = "web.1"
    event.involved_object.kind, event.involved_object.name = "Pod", "web-1"
    narrow = printers.Table(kinds.resolve("events"), name_prefix="event/").row(event, printers.now())
    wide = printers.Table(kinds.resolve("events"), wide=True, name_prefix="event/").row(event, printers.now())
    assert narrow[1:] == ["Normal", "Pulled", "pod/web-1", "done"]
    assert wide[-2:] == ["2", "event/web.1"]


# ---------------------------------------------------------------- apply's merge and manifest loading


def test_three_way_merge_keeps_defaults_and_drops_what_the_user_removed() -> None:
    live = {"spec": {"replicas": 3, "paused": False,
                     "containers": [{"name": "a", "image": "x:1", "imagePullPolicy": "IfNotPresent"}]},
            "metadata": {"labels": {"app": "web", "team": "ops", "old": "1"}}}
    last = {"metadata": {"labels": {"app": "web", "old": "1"}}, "spec": {"replicas": 3}}
    new = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "x:2"}]}}
    merged = applier.merge(live, last, new)
    assert merged["metadata"]["labels"] == {"app": "web", "team": "ops"}  # "old" removed, "team" kept
    assert "replicas" not in merged["spec"] and merged["spec"]["paused"] is False
    assert merged["spec"]["containers"] == [{"name": "a", "image": "x:2", "imagePullPolicy": "IfNotPresent"}]


def test_manifest_errors_name_file_document_and_field(tmp_path: Path) -> None:
    path = write(tmp_path / "two.yaml", POD, DEPLOYMENT.replace("  replicas: 3\n", "  replicas: three\n"))
    with pytest.raises(manifests.InvalidManifests) as caught:
        manifests.load([path], namespace="default", explicit_namespace=False)
    assert caught.value.problems == [
        f'error validating "{path}" (document 2): Deployment "nginx-deployment" is invalid: '
        "spec.replicas: expected an integer, got string 'three'"]

    docs = manifests.load([write(tmp_path / "list.json", json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [yaml.safe_load(POD), yaml.safe_load(SERVICE)]}))],
        namespace="ns1", explicit_namespace=False)
    assert [(d.kind.kind, d.name, d.namespace, d.item) for d in docs] == [
        ("Pod", "nginx", "ns1", 0), ("Service", "my-service", "ns1", 1)]

    with pytest.raises(CliError, match="does not match the namespace"):
        manifests.load([write(tmp_path / "ns.yaml", POD.replace("name: nginx", "name: nginx\n  namespace: a", 1))],
                       namespace="b", explicit_namespace=True)


def test_label_changes_are_parsed_like_kubectl() -> None:
    assert parse_changes(("po", "web", "app.kubernetes.io/name=web", "tier-")) == (
        ["po", "web"], {"app.kubernetes.io/name": "web"}, ["tier"])
    with pytest.raises(CliError):
        parse_changes(("po", "web"))
    with pytest.raises(CliError, match="both modify and remove"):
        parse_changes(("po", "web", "a=1", "a-"))
