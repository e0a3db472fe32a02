"""One standard kubeconfig for kubectl and kctl.

Given a cluster's admin kubeconfig, it is kubectl's own format (the Kubernetes
API's HTTPS address as `server`, the CA, the admin's certificate) with kctl's
gRPC ports in the cluster entry's `flotilla.dev/grpc` extension; real kubectl
reads it as it is. `cluster up` merges the cluster's context into the user's
kubeconfig, as kind does, keeping every other cluster, context and preference
and the file's 0600; `down` takes out exactly those entries. kctl finds its
file as kubectl does (--kubeconfig, $KUBECONFIG's list merged, ~/.kube/config,
then its legacy ~/.kctl/config), takes the current context or --context, and
says plainly when a context is not a Flotilla cluster's.

Every test runs with HOME and $KUBECONFIG in its own tmp folder: none reads or
writes the user's ~/.kube or ~/.kctl.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from client import certificates
from client import config as clientconfig
from kctl.main import cli
from provision import components, phases
from provision.processes import Etcd, Process, free_port, wait_until

KUBECTL = "/usr/bin/kubectl"
OTHER: dict[str, Any] = {  # what a user's ~/.kube/config holds before: another Kubernetes (kind's), a preference
    "apiVersion": "v1", "kind": "Config", "current-context": "kind-dev", "preferences": {"colors": True},
    "clusters": [{"name": "kind-dev", "cluster": {"server": "https://127.0.0.1:40001",
                                                  "insecure-skip-tls-verify": True}}],
    "users": [{"name": "kind-dev", "user": {"token": "kind-token"}}],
    "contexts": [{"name": "kind-dev", "context": {"cluster": "kind-dev", "user": "kind-dev"}}],
}


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of the test's own; kctl and kubectl find their files as they would for a user with nothing set."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KCTL_CONFIG", raising=False)
    return folder


def make_plan(folder: Path, *, master: str = "192.168.74.1", api_port: int = 16443, token_port: int = 16444,
              grpc_port: int = 16445, etcd_url: str = "http://127.0.0.1:12474") -> components.ClusterPlan:
    nodes = (components.NodePlan("kc-master", master, "10.74.0.0/24", control_plane=True),)
    return components.ClusterPlan("kc", master, nodes, "10.74.0.0/16", etcd_url, folder, api_port=api_port,
                                  token_port=token_port, grpc_port=grpc_port)


def admin_kubeconfig(folder: Path, plan: components.ClusterPlan | None = None) -> Path:
    """The cluster's admin kubeconfig, as `up` keeps it in the cluster's folder."""
    plan = plan or make_plan(folder / "config")
    components.bundle(plan).write(plan.config_dir)
    return Path(plan.kubeconfig_path(components.ADMIN))


def write(path: Path, doc: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def names(doc: Mapping[str, Any], section: str) -> list[str]:
    return [entry["name"] for entry in doc[section]]


# ---------------------------------------------------------------- the format

def test_the_admin_kubeconfig_is_kubectls_format_with_kctls_ports_in_an_extension(tmp_path: Path) -> None:
    path = admin_kubeconfig(tmp_path)
    doc = yaml.safe_load(path.read_text())
    assert (doc["apiVersion"], doc["kind"], doc["current-context"]) == ("v1", "Config", "flotilla-kc")
    cluster = doc["clusters"][0]
    assert cluster["name"] == "flotilla-kc" and cluster["cluster"]["server"] == "https://192.168.74.1:16443"
    assert cluster["cluster"]["extensions"] == [{"name": "flotilla.dev/grpc", "extension": {
        "server": "192.168.74.1:16445", "tokenServer": "192.168.74.1:16444"}}]
    assert doc["contexts"] == [{"name": "flotilla-kc", "context": {
        "cluster": "flotilla-kc", "user": "flotilla-kc", "namespace": "default"}}]
    assert names(doc, "users") == ["flotilla-kc"]

    loaded = clientconfig.load(kubeconfig=path)
    assert (loaded.server, loaded.url, loaded.context) == ("192.168.74.1:16445", "https://192.168.74.1:16443",
                                                          "flotilla-kc")
    assert loaded.certificate_authority_data == (tmp_path / "config" / "pki" / "ca.crt").read_bytes()
    assert loaded.client_certificate_data is not None and loaded.client_key_data is not None
    assert certificates.identity_of(loaded.client_certificate_data) == ("kubernetes-admin", ("system:masters",))


def test_the_apiservers_certificate_covers_the_address_kubectl_dials(tmp_path: Path) -> None:
    from cryptography import x509

    plan = make_plan(tmp_path)
    cert = x509.load_pem_x509_certificate(components.bundle(plan).files[f"{components.APISERVER}.crt"])
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert plan.master_address in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


def test_a_token_identity_dials_the_token_port(tmp_path: Path) -> None:
    """A joining node's bootstrap kubeconfig: a token and no certificate go to the port that takes tokens."""
    ca = certificates.create_ca()
    endpoints = clientconfig.GrpcEndpoints("10.0.0.1:6445", "10.0.0.1:6444")
    doc = clientconfig.kubeconfig("flotilla-kc", "https://10.0.0.1:6443", ca.cert_pem, endpoints,
                                  token="abcdef.0123456789abcdef")
    loaded = clientconfig.load(kubeconfig=write(tmp_path / "bootstrap.conf", doc))
    assert (loaded.server, loaded.token) == ("10.0.0.1:6444", "abcdef.0123456789abcdef")


def test_a_kubeconfig_for_another_kubernetes_is_refused_with_what_kctl_needs(tmp_path: Path, home: Path) -> None:
    path = write(home / ".kube" / "config", OTHER)
    with pytest.raises(clientconfig.ConfigError, match=r"no flotilla\.dev/grpc extension: kctl needs a Flotilla"):
        clientconfig.load()
    result = CliRunner().invoke(cli, ["get", "pods"])
    assert result.exit_code == 1
    assert f'kubeconfig {path}: cluster "kind-dev" (https://127.0.0.1:40001) has no flotilla.dev/grpc' in result.output
    # An explicit --server says where to go: the file lends only its credentials and namespace.
    assert (clientconfig.load(server="127.0.0.1:1").server, clientconfig.load(server="127.0.0.1:1").token) == \
        ("127.0.0.1:1", "kind-token")


def test_a_malformed_extension_is_refused(tmp_path: Path) -> None:
    doc = yaml.safe_load(admin_kubeconfig(tmp_path).read_text())
    doc["clusters"][0]["cluster"]["extensions"][0]["extension"] = {"tokenServer": "10.0.0.1:6444"}
    with pytest.raises(clientconfig.ConfigError, match=r"extensions\[0\] \(flotilla.dev/grpc\) has no server"):
        clientconfig.load(kubeconfig=write(tmp_path / "bad", doc))


# ---------------------------------------------------------------- up merges, down takes out

def test_up_merges_its_context_into_the_users_kubeconfig_and_keeps_the_rest(tmp_path: Path, home: Path) -> None:
    users = write(home / ".kube" / "config", OTHER)
    written = phases.point_kctl_at(admin_kubeconfig(tmp_path))
    assert written == users
    doc = yaml.safe_load(users.read_text())
    assert doc["current-context"] == "flotilla-kc"
    assert names(doc, "clusters") == names(doc, "users") == names(doc, "contexts") == ["kind-dev", "flotilla-kc"]
    assert doc["preferences"] == {"colors": True} and doc["users"][0]["user"] == {"token": "kind-token"}
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    assert not (home / ".kctl").exists()

    # And kctl reads the merged file: the current context is the cluster's, --context picks another.
    assert clientconfig.load().server == "192.168.74.1:16445"
    with pytest.raises(clientconfig.ConfigError, match='cluster "kind-dev"'):
        clientconfig.load(context="kind-dev")
    with pytest.raises(clientconfig.ConfigError, match='context "nope" does not exist'):
        clientconfig.load(context="nope")

    # Again (a second `up` of the same cluster): its entries are replaced, not repeated.
    phases.point_kctl_at(admin_kubeconfig(tmp_path))
    assert names(yaml.safe_load(users.read_text()), "contexts") == ["kind-dev", "flotilla-kc"]

    # When it goes down, exactly its entries go; current-context pointed at it, so it is unset.
    phases.forget_default_config("kc", tmp_path / "config" / "kubeconfigs" / "admin.conf")
    doc = yaml.safe_load(users.read_text())
    assert {k: v for k, v in doc.items() if k != "current-context"} == \
        {k: v for k, v in OTHER.items() if k != "current-context"}
    assert doc["current-context"] == "" and stat.S_IMODE(users.stat().st_mode) == 0o600


def test_down_leaves_current_context_alone_when_it_names_another_cluster(tmp_path: Path, home: Path) -> None:
    users = home / ".kube" / "config"
    phases.point_kctl_at(admin_kubeconfig(tmp_path))  # no file yet: made, 0600
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    clientconfig.merge(users, OTHER)  # the user switched to another cluster since
    phases.forget_default_config("kc", tmp_path / "config" / "kubeconfigs" / "admin.conf")
    doc = yaml.safe_load(users.read_text())
    assert doc["current-context"] == "kind-dev" and names(doc, "contexts") == ["kind-dev"]


def test_up_writes_to_kubeconfigs_first_file_as_kind_does(tmp_path: Path, home: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", write(tmp_path / "second", OTHER)
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(first), str(second)]))
    assert phases.point_kctl_at(admin_kubeconfig(tmp_path)) == first
    assert yaml.safe_load(second.read_text()) == OTHER and not (home / ".kube").exists()
    # kctl merges the list as kubectl does: the first current-context wins, names come from any file.
    assert clientconfig.load().context == "flotilla-kc"
    with pytest.raises(clientconfig.ConfigError, match='cluster "kind-dev"'):
        clientconfig.load(context="kind-dev")


def test_kctl_config_still_names_kctls_file_ahead_of_kubectls(tmp_path: Path, home: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    write(home / ".kube" / "config", OTHER)
    mine = tmp_path / "kctl-config"
    monkeypatch.setenv("KCTL_CONFIG", str(mine))
    assert phases.point_kctl_at(admin_kubeconfig(tmp_path)) == mine
    assert clientconfig.load().context == "flotilla-kc"
    assert yaml.safe_load((home / ".kube" / "config").read_text()) == OTHER


def test_a_legacy_kctl_config_is_read_when_there_is_no_kubeconfig(tmp_path: Path, home: Path) -> None:
    """Clusters made before the standard format: ~/.kctl/config, `server` the gRPC address, no extension."""
    legacy = {"apiVersion": "v1", "kind": "Config", "current-context": "old",
              "clusters": [{"name": "old", "cluster": {"server": "https://192.168.56.1:6443"}}],
              "users": [{"name": "u", "user": {"token": "t"}}],
              "contexts": [{"name": "old", "context": {"cluster": "old", "user": "u"}}]}
    write(home / ".kctl" / "config", legacy)
    assert clientconfig.load().server == "192.168.56.1:6443"
    # Once ~/.kube/config exists it comes first; a context there without the extension says where the old one is.
    write(home / ".kube" / "config", OTHER)
    with pytest.raises(clientconfig.ConfigError, match=r"made before this format is in .*\.kctl/config"):
        clientconfig.load()


# ---------------------------------------------------------------- real kubectl, a real apiserver

@pytest.mark.skipif(not Path(KUBECTL).exists(), reason=f"{KUBECTL} (kubectl 1.32) is not installed")
def test_real_kubectl_reads_and_rewrites_the_file_and_kctl_still_reads_it(tmp_path: Path, home: Path) -> None:
    users = write(home / ".kube" / "config", OTHER)
    phases.point_kctl_at(admin_kubeconfig(tmp_path))
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "")}

    def kubectl(*args: str) -> str:
        done = subprocess.run([KUBECTL, *args], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    minified = yaml.safe_load(kubectl("config", "view", "--minify", "--raw"))
    assert minified["current-context"] == "flotilla-kc"
    assert minified["clusters"][0]["cluster"]["server"] == "https://192.168.74.1:16443"
    assert minified["clusters"][0]["cluster"]["extensions"][0]["name"] == "flotilla.dev/grpc"
    # kubectl rewrites the file (switching contexts back and forth) and keeps kctl's extension.
    kubectl("config", "use-context", "kind-dev")
    kubectl("config", "use-context", "flotilla-kc")
    assert clientconfig.load().server == "192.168.74.1:16445"
    assert stat.S_IMODE(users.stat().st_mode) == 0o600


@pytest.fixture
def tls_apiserver(own_etcd: Etcd, tmp_path: Path) -> Iterator[components.ClusterPlan]:
    plan = make_plan(tmp_path / "config", master="127.0.0.1", api_port=free_port(), token_port=free_port(),
                     grpc_port=free_port(), etcd_url=own_etcd.url)
    components.bundle(plan).write(plan.config_dir)
    proc = Process("apiserver", components.apiserver_argv(plan), tmp_path / "apiserver.log")
    proc.start()

    def answers() -> bool:
        import socket
        with socket.create_connection(("127.0.0.1", plan.grpc_port), timeout=0.5):
            return True
    try:
        wait_until(answers, "TLS apiserver", proc, timeout=60)
        yield plan
    finally:
        proc.stop()


def test_kctl_and_kubectl_use_the_merged_context_against_a_running_apiserver(
        tls_apiserver: components.ClusterPlan, home: Path) -> None:
    write(home / ".kube" / "config", OTHER)
    phases.point_kctl_at(Path(tls_apiserver.kubeconfig_path(components.ADMIN)))
    env = {**{k: v for k, v in os.environ.items() if k not in ("KCTL_CONFIG", "KUBECONFIG")}, "HOME": str(home)}
    kctl = str(Path(sys.executable).parent / "kctl")
    done = subprocess.run([kctl, "auth", "can-i", "delete", "nodes"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout) == (0, "yes\n"), done.stderr
    other = subprocess.run([kctl, "--context", "kind-dev", "get", "pods"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert other.returncode == 1 and "kctl needs a Flotilla cluster's kubeconfig" in other.stderr
    if shutil.which(KUBECTL):  # real kubectl, same file, same context: HTTPS to the API port, admin's certificate
        nodes = subprocess.run([KUBECTL, "auth", "can-i", "delete", "nodes"], env=env, capture_output=True,
                               text=True, timeout=60)
        assert (nodes.returncode, nodes.stdout) == (0, "yes\n"), nodes.stderr
