"""kctl on custom resources, as a user of a `kctl cluster up` kubeconfig runs it.

Given the CronTab CRD (tests/test_crd.py), kctl — whose own path is gRPC with one message per kind —
reaches CronTabs over the cluster's HTTP API (kctl/custom.py): apply -f creates and then finds them
unchanged, get prints the CRD's printer columns, -o json the object, describe as kubectl does, delete
by name, an unknown type is refused as before, and get -w prints a row per change until Ctrl-C.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes.client as k8s
import yaml

from tests.test_crd import GROUP, api, crontab, crontabs, custom, ns  # noqa: F401 (fixtures)


def kctl_kubeconfig(path: Path, http_url: str, grpc_address: str, namespace: str) -> Path:
    """A kubeconfig as `kctl cluster up` writes one: the HTTP API as server, kctl's gRPC in the extension."""
    from client.config import GRPC_EXTENSION
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": http_url, "extensions": [
            {"name": GRPC_EXTENSION, "extension": {"server": grpc_address}}]}}],
        "users": [{"name": "t", "user": {}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t", "namespace": namespace}}]}))
    return path


def test_kctl_applies_gets_describes_and_deletes_custom_resources(crontabs: str, ns: str,  # noqa: F811
                                                                   apiserver: Any,
                                                                   http_url: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from kctl.main import cli
    kubeconfig = kctl_kubeconfig(tmp_path / "kubeconfig", http_url, apiserver.address, ns)

    def kctl(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["--kubeconfig", str(kubeconfig), *args])
        return result.exit_code, result.output

    (tmp_path / "ct.yaml").write_text(yaml.safe_dump(crontab("from-kctl", cronSpec="*/5 * * * *", replicas=2)))
    assert kctl("apply", "-f", str(tmp_path / "ct.yaml")) == (0, "crontab.stable.example.com/from-kctl created\n")
    assert kctl("apply", "-f", str(tmp_path / "ct.yaml")) == (0, "crontab.stable.example.com/from-kctl unchanged\n")
    code, out = kctl("get", "crontabs")
    assert code == 0, out
    header, row = out.strip().split("\n")
    assert header.split() == ["NAME", "SPEC", "REPLICAS", "AGE"]
    assert row.split()[:7] == ["from-kctl", "*/5", "*", "*", "*", "*", "2"]
    code, out = kctl("get", "ct", "from-kctl", "-o", "json")
    assert code == 0 and json.loads(out)["spec"]["image"] == "my-awesome-cron-image"
    code, out = kctl("describe", "crontab", "from-kctl")
    assert code == 0, out
    assert "Kind:         CronTab" in out and "Cron Spec:  */5 * * * *" in out
    assert kctl("get", "crd", crontabs)[0] == 0  # the CRD itself is a built-in kind (gRPC)
    assert kctl("delete", "crontab", "from-kctl") == (0, 'crontab.stable.example.com "from-kctl" deleted\n')
    code, out = kctl("get", "crontab", "from-kctl")
    assert code == 1 and 'Error from server (NotFound): crontabs.stable.example.com "from-kctl" not found' in out
    code, out = kctl("get", "nosuchthings")
    assert code == 1 and 'the server doesn\'t have a resource type "nosuchthings"' in out


def test_kctl_watches_custom_resources_until_ctrl_c(crontabs: str, ns: str, apiserver: Any,  # noqa: F811
                                                   http_url: str, api: k8s.ApiClient,  # noqa: F811
                                                   tmp_path: Path) -> None:
    kubeconfig = kctl_kubeconfig(tmp_path / "kubeconfig", http_url, apiserver.address, ns)
    custom(api).create_namespaced_custom_object(GROUP, "v1", ns, "crontabs", crontab("first"))
    kctl = str(Path(sys.executable).with_name("kctl"))
    watch = subprocess.Popen([kctl, "--kubeconfig", str(kubeconfig), "get", "crontabs", "-w"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline().split() == ["NAME", "SPEC", "REPLICAS", "AGE"]
        assert watch.stdout.readline().split()[:7] == ["first", "5", "0", "*", "*", "*", "1"]
        custom(api).patch_namespaced_custom_object(GROUP, "v1", ns, "crontabs", "first", {"spec": {"replicas": 6}})
        assert watch.stdout.readline().split()[:7] == ["first", "5", "0", "*", "*", "*", "6"]
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=10)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 130 and "Traceback" not in err
