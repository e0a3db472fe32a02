"""The cluster registry: nobody pushes or deletes without the cluster's credentials, nodes still pull.

Given a cluster's two registries as `kctl cluster up` runs them (one storage:
the read-only pull side in plain HTTP, the push side behind htpasswd over TLS
under the cluster CA; the password, its bcrypt line and the certificate made
by provision/components.py into the PKI folder, 0600): a push to the pull
side is refused (405, read-only), a push to the push side without credentials
is refused (401), `kctl image push` with the cluster's credentials works, a
delete is refused even with them, and a node's containerd pulls the pushed
image from the pull side with no credentials at all.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
from click.testing import CliRunner

from kctl.main import cli
from proto import cri_pb2, cri_pb2_grpc
from provision import components
from provision.containerd import NodeRuntime
from provision.images import distribution, registry
from provision.images.oci import busybox_image
from provision.images.store import ImageStore
from provision.localplan import new_state, save_state
from provision.processes import Process, wait_until
from provision.provider import Options
from tests.kubelet_support import containerd_unusable

# A loopback address of its own: a local cluster's registry is always <master>:5000 (push: 5001).
SUBNET = "127.0.93.0/24"
PULL = "127.0.93.1:5000"
PUSH = "127.0.93.1:5001"


class ClusterRegistry:
    def __init__(self, home: Path) -> None:
        self.home = home
        os.environ["FLOTILLA_HOME"] = str(home)
        self.state = new_state(Options(name="regauth", workers=0, subnet=SUBNET, bridge="fltra0"))
        self.state.config_dir.mkdir(parents=True)
        save_state(self.state)
        plan = self.state.components_plan()
        assert plan.registry == PULL
        components.bundle(plan).write(self.state.config_dir)
        pki = self.state.config_dir
        pull, push = registry.write_cluster_configs(
            self.state.folder / "registry", PULL, htpasswd_file=pki / registry.HTPASSWD_FILE,
            tls=(pki / f"{registry.SERVING_CERT}.crt", pki / f"{registry.SERVING_CERT}.key"))
        logs = self.state.folder
        self.processes = [Process("registry-push", registry.argv(push), logs / "push.log"),
                          Process("registry", registry.argv(pull), logs / "pull.log")]
        for process in self.processes:
            process.start()
        self.ca_file = pki / registry.CA_FILE
        wait_until(lambda: registry.cluster_ready(PULL, self.ca_file), "both registries", self.processes[0])

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture(scope="module")
def cluster_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRegistry]:
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (provision/install.sh installs it)")
    previous = os.environ.get("FLOTILLA_HOME")
    made = ClusterRegistry(tmp_path_factory.mktemp("flotilla-home"))
    yield made
    made.stop()
    if previous is None:
        os.environ.pop("FLOTILLA_HOME", None)
    else:
        os.environ["FLOTILLA_HOME"] = previous


def test_the_credentials_are_the_owners_only_and_hashed_with_bcrypt(cluster_registry: ClusterRegistry) -> None:
    pki = cluster_registry.state.config_dir
    for secret in (registry.CREDENTIALS_FILE, registry.HTPASSWD_FILE, components.ENCRYPTION_CONFIG):
        assert stat.S_IMODE((pki / secret).stat().st_mode) == 0o600, secret
    line = (pki / registry.HTPASSWD_FILE).read_text()
    password = registry.Credentials.read(pki / registry.CREDENTIALS_FILE).password
    assert line.startswith(f"{registry.PUSH_USER}:$2b$") and password not in line


def test_nobody_pushes_without_the_credentials(cluster_registry: ClusterRegistry) -> None:
    image = busybox_image()
    with pytest.raises(distribution.RegistryError, match="HTTP 405: this registry is read-only"):
        distribution.push(image, registry=PULL, repository="evil/busybox", tag="latest")
    anonymous = requests.post(f"https://{PUSH}/v2/evil/busybox/blobs/uploads/", verify=str(cluster_registry.ca_file),
                              timeout=5)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
    wrong = registry.PushTarget(PUSH, registry.Credentials(registry.PUSH_USER, "guess"), cluster_registry.ca_file)
    with pytest.raises(distribution.RegistryError, match="HTTP 401"):
        distribution.push(image, registry=PULL, repository="evil/busybox", tag="latest", target=wrong)
    catalog = requests.get(f"http://{PULL}/v2/_catalog", timeout=5).json()
    assert "evil/busybox" not in (catalog.get("repositories") or [])


def test_kctl_pushes_with_the_clusters_credentials_and_deletes_are_off(cluster_registry: ClusterRegistry,
                                                                      tmp_path: Path) -> None:
    ImageStore(cluster_registry.home / "images").save("tools:1", busybox_image())
    env = {"FLOTILLA_HOME": str(cluster_registry.home), "KCTL_CONFIG": "/nonexistent"}
    pushed = CliRunner().invoke(cli, ["image", "push", "tools:1", "--registry", PULL], env=env)
    assert pushed.exit_code == 0, pushed.output
    assert pushed.output.startswith(f"pushed {PULL}/library/tools:1 sha256:")
    # Served by the pull side, which never saw the upload: one storage.
    oci = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    manifest = requests.get(f"http://{PULL}/v2/library/tools/manifests/1", timeout=5, headers=oci)
    assert manifest.status_code == 200
    digest = manifest.headers["Docker-Content-Digest"]
    creds = registry.Credentials.read(cluster_registry.state.config_dir / registry.CREDENTIALS_FILE)
    for where, auth, verify in ((f"https://{PUSH}", (creds.username, creds.password), str(cluster_registry.ca_file)),
                                (f"http://{PULL}", None, True)):
        deleted = requests.delete(f"{where}/v2/library/tools/manifests/{digest}", auth=auth, verify=verify, timeout=5)
        assert deleted.status_code == 405, (where, deleted.status_code, deleted.text)
    assert requests.get(f"http://{PULL}/v2/library/tools/manifests/1", timeout=5, headers=oci).status_code == 200


def test_a_node_still_pulls_without_credentials(cluster_registry: ClusterRegistry) -> None:
    reason = containerd_unusable()
    if reason:
        pytest.skip(f"no container runtime: {reason}")
    target = registry.cluster_push_target(cluster_registry.state.config_dir, PULL)
    distribution.push(busybox_image(), registry=PULL, repository="library/pulled", tag="1", target=target)
    base = Path(tempfile.mkdtemp(prefix="flt-ra-"))
    runtime = NodeRuntime(f"ra-{os.getpid()}", base, registry=PULL)
    try:
        runtime.start()
        with grpc.insecure_channel(f"unix://{runtime.socket}") as channel:
            images = cri_pb2_grpc.ImageServiceStub(channel)
            pulled = images.PullImage(cri_pb2.PullImageRequest(image=cri_pb2.ImageSpec(image="pulled:1")),
                                      timeout=60)
        assert pulled.image_ref.startswith("sha256:")
    finally:
        runtime.cleanup()
        shutil.rmtree(base, ignore_errors=True)
