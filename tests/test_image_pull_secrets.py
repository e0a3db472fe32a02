"""Issue 17: a pull that fails says why in one line; imagePullSecrets reach the CRI pull.

Given a registry behind htpasswd basic auth (Debian's docker-registry on
loopback, plain HTTP, an open twin over the same storage to push with) and a
real containerd whose hosts.toml knows it: the kubelet's image manager pulls
`<registry>/private:1` for a pod with no imagePullSecret → ErrImagePull whose
message names authentication and `kctl create secret docker-registry`; with a
pull secret as `kctl create secret docker-registry` makes it → the image is
pulled with the credentials. An image missing from an offline cluster registry
names `kctl image load`; a Never policy gives ErrImageNeverPull; the next
failure within the back-off is ImagePullBackOff. Unit parts need nothing; the
containerd parts need root.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kctl.commands.secrets import docker_config_json, docker_registry_secret
from nodeagent.kubelet import credentials
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.images import ImageError, ImageManager, pull_failure
from nodeagent.kubelet.runtime import Runtime
from proto import core_pb2
from provision.containerd import NodeRuntime
from provision.images import distribution, registry
from provision.images.oci import busybox_image
from provision.processes import Process, free_port, wait_until
from tests.kubelet_support import containerd_unusable

USER, PASSWORD = "alice", "s3cret-pass"


# ---------------------------------------------------------------- the one-line messages


def test_offline_missing_image_names_kctl_image_load() -> None:
    details = ('failed to pull and unpack image "docker.io/library/redis:latest": failed to resolve reference '
               '"docker.io/library/redis:latest": docker.io/library/redis:latest: not found')
    message = pull_failure("redis", details, offline=True, cluster_registry="10.0.0.1:5000", authenticated=False)
    assert message == ('image "redis" is not in the cluster registry and the cluster is offline; '
                       "load it with: kctl image load <archive> (or build it with kctl image build)")
    assert "\n" not in message


def test_auth_required_names_image_pull_secrets() -> None:
    details = ('failed to resolve reference "10.0.0.9:5002/private:1": pulling from host 10.0.0.9:5002 failed '
               "with status code [manifests 1]: 401 Unauthorized")
    message = pull_failure("10.0.0.9:5002/private:1", details, offline=True, cluster_registry="10.0.0.1:5000",
                           authenticated=False)
    assert "requires authentication" in message and "kctl create secret docker-registry" in message
    refused = pull_failure("10.0.0.9:5002/private:1", details, offline=True, cluster_registry="", authenticated=True)
    assert "refused the credentials" in refused


def test_missing_tag_elsewhere_says_no_such_tag() -> None:
    message = pull_failure("quay.io/x/y:9", "quay.io/x/y:9: not found", offline=False, cluster_registry="",
                           authenticated=False)
    assert message == 'image "quay.io/x/y:9" not found in registry quay.io: no such repository or tag'


# ---------------------------------------------------------------- pull secrets


def test_docker_registry_secret_is_kubectls_format() -> None:
    secret = docker_registry_secret("regcred", "ns", server="10.0.0.9:5002", username=USER, password=PASSWORD,
                                    email="a@example.com")
    assert secret.type == "kubernetes.io/dockerconfigjson"
    doc = json.loads(secret.data[".dockerconfigjson"])
    entry = doc["auths"]["10.0.0.9:5002"]
    assert entry == {"username": USER, "password": PASSWORD, "email": "a@example.com",
                     "auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


def test_credentials_match_the_images_registry() -> None:
    hub = credentials.auths_of("hub", {".dockerconfigjson": docker_config_json(
        "https://index.docker.io/v1/", "bob", "pw", "")})
    private = credentials.auths_of("private", {".dockerconfigjson": json.dumps(
        {"auths": {"http://10.0.0.9:5002/v2/": {"auth": base64.b64encode(b"alice:x").decode()}}}).encode()})
    assert [a.username for a in credentials.matching([hub, private], "nginx")] == ["bob"]
    assert [a.username for a in credentials.matching([hub, private], "10.0.0.9:5002/app:1")] == ["alice"]
    assert credentials.matching([hub, private], "quay.io/x/y") == []
    with pytest.raises(credentials.CredentialError, match="secret broken has neither"):
        credentials.auths_of("broken", {"other": b"{}"})
    with pytest.raises(credentials.CredentialError, match="secret bad: not JSON"):
        credentials.auths_of("bad", {".dockerconfigjson": b"{nope"})


# ---------------------------------------------------------------- against a real registry and containerd


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a registry that wants basic auth to pull; `private:1` pushed through an open twin."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (provision/install.sh installs it)")
    folder = tmp_path_factory.mktemp("authreg")
    (folder / "storage").mkdir()
    (folder / "htpasswd").write_bytes(registry.htpasswd(registry.Credentials(USER, PASSWORD)))
    locked, open_ = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    secret = secrets.token_hex(16)
    (folder / "locked.yml").write_text(registry.config_text(storage=folder / "storage", address=locked,
                                                            secret=secret, htpasswd_file=folder / "htpasswd"))
    (folder / "open.yml").write_text(registry.config_text(storage=folder / "storage", address=open_, secret=secret))
    processes = [Process(f"registry-{n}", registry.argv(folder / f"{n}.yml"), folder / f"{n}.log")
                 for n in ("locked", "open")]
    for p in processes:
        p.start()
    try:
        wait_until(lambda: registry.ready(open_), "open registry /v2/", processes[1])
        distribution.push(busybox_image(), registry=open_, repository="private", tag="1")
        yield locked
    finally:
        for p in processes:
            p.stop()


@pytest.fixture(scope="module")
async def runtime(auth_registry: str) -> AsyncIterator[Runtime]:
    reason = containerd_unusable()
    if reason:
        pytest.skip(f"no container runtime: {reason}")
    base = Path(tempfile.mkdtemp(prefix="flt-ps-"))
    # The cluster registry here is the locked one: its hosts.toml makes it plain HTTP. Offline.
    node = NodeRuntime("pullsecrets", base, registry=auth_registry)
    node.start()
    cri = Runtime(str(node.socket))
    try:
        yield cri
    finally:
        await cri.close()
        node.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def pod_of(image: str, *, policy: str = "IfNotPresent", pull_secrets: tuple[str, ...] = ()) -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace, pod.metadata.uid = "p", "default", secrets.token_hex(8)
    pod.spec.containers.add(name="c", image=image, image_pull_policy=policy)
    for name in pull_secrets:
        pod.spec.image_pull_secrets.add(name=name)
    return pod


class Events(list[tuple[str, str, str]]):
    def __call__(self, pod: core_pb2.Pod, kind: str, reason: str, message: str) -> None:
        self.append((kind, reason, message))


async def test_a_pull_without_credentials_names_authentication_and_with_a_secret_it_works(
        runtime: Runtime, auth_registry: str) -> None:
    stored = {("default", "regcred"): dict(docker_registry_secret(
        "regcred", "default", server=auth_registry, username=USER, password=PASSWORD).data)}

    async def secret(namespace: str, name: str) -> dict[str, bytes]:
        return stored.get((namespace, name), {})

    config = KubeletConfig(cluster_registry=auth_registry, registry_offline=True)
    events = Events()
    images = ImageManager(runtime, config, events, secret)
    image = f"{auth_registry}/private:1"
    bare = pod_of(image)
    with pytest.raises(ImageError) as failed:
        await images.ensure_image_exists(bare, bare.spec.containers[0])
    assert failed.value.reason == "ErrImagePull"
    assert "requires authentication" in str(failed.value), str(failed.value)
    assert ("Warning", "Failed", f'Failed to pull image "{image}": {failed.value}') in events
    # Within the back-off the next sync does not pull: ImagePullBackOff, 10 s first.
    with pytest.raises(ImageError) as backing_off:
        await images.ensure_image_exists(bare, bare.spec.containers[0])
    assert backing_off.value.reason == "ImagePullBackOff" and 0 < backing_off.value.retry_after <= 10

    never = pod_of(image, policy="Never")
    with pytest.raises(ImageError, match="is not present with pull policy of Never") as refused:
        await images.ensure_image_exists(never, never.spec.containers[0])
    assert refused.value.reason == "ErrImageNeverPull"

    with_secret = pod_of(image, pull_secrets=("missing", "regcred"))
    assert await images.ensure_image_exists(with_secret, with_secret.spec.containers[0]) == image
    assert await runtime.image_present(image)
    assert any(r == "FailedToRetrieveImagePullSecret" and "missing" in m for _, r, m in events)


async def test_an_image_missing_from_the_offline_cluster_registry_names_kctl_image_load(
        runtime: Runtime, auth_registry: str) -> None:
    # The locked registry answers 401 before 404; an open cluster registry would say not found. Both are one line.
    images = ImageManager(runtime, KubeletConfig(cluster_registry=auth_registry, registry_offline=True), Events())
    pod = pod_of("redis", policy="Always")
    with pytest.raises(ImageError) as failed:
        await asyncio.wait_for(images.ensure_image_exists(pod, pod.spec.containers[0]), 60)
    assert failed.value.reason == "ErrImagePull" and "\n" not in str(failed.value)
