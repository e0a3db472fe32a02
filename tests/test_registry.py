"""The cluster registry story: build an image, push it, and a node pulls and runs it over plain HTTP.

Given a real docker-registry on 127.0.0.1:<free port>: pushing is idempotent
and pulling gives back the same digest; then `kctl image build` (busybox base
pulled from that registry + a COPY'd page + CMD httpd) and `kctl image push`,
and a real containerd + kubelet configured with that registry (hosts.toml:
plain HTTP, docker.io served from it, the pause image pulled from it, no
images imported) runs a pod from the short name `web:1` — the page answers.
An image the registry lacks shows ErrImagePull with the registry's reason.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from client import Client
from kctl.main import cli
from proto import core_pb2, cri_pb2, cri_pb2_grpc
from provision.images import distribution, registry
from provision.images.oci import REGISTRY_PAUSE_IMAGE, busybox_image, pause_image
from provision.localnode import LocalNode, free_pod_cidr
from provision.processes import ApiServer, Process, free_port, wait_until
from tests.kubelet_support import SETTINGS, containerd_unusable, make_pod, wait_pod

PAGE = "<h1>built by kctl, pulled over plain HTTP</h1>\n"


@pytest.fixture(scope="module")
def registry_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A docker-registry on loopback holding pause and busybox under docker.io's paths."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (provision/install.sh installs it)")
    folder = tmp_path_factory.mktemp("registry")
    address = f"127.0.0.1:{free_port()}"
    process = Process("registry", registry.argv(registry.write_config(folder, address)), folder / "registry.log")
    process.start()
    try:
        wait_until(lambda: registry.ready(address), "registry /v2/", process)
        for name, image in ((REGISTRY_PAUSE_IMAGE, pause_image()), ("library/busybox:latest", busybox_image())):
            repository, _, tag = name.partition(":")
            distribution.push(image, registry=address, repository=repository, tag=tag)
        yield address
    finally:
        process.stop()


def test_the_config_stays_on_the_private_network(tmp_path: Path) -> None:
    text = registry.config_text(storage=tmp_path, address="192.168.72.1:5000", secret="s")
    import yaml

    config = yaml.safe_load(text)
    assert config["http"]["addr"] == "192.168.72.1:5000"
    assert config["storage"]["filesystem"]["rootdirectory"] == str(tmp_path)
    assert config["storage"]["delete"]["enabled"] is False  # nothing removes an image a node may pull
    assert not {"auth", "proxy", "notifications", "reporting"} & set(config)


def test_push_skips_what_the_registry_has_and_pull_gives_the_same_image(registry_address: str) -> None:
    image = busybox_image()
    again = distribution.push(image, registry=registry_address, repository="library/busybox", tag="latest")
    assert (again.uploaded, again.skipped) == (0, 2)
    assert again.digest == image.digest
    other = distribution.push(image, registry=registry_address, repository="team/tools", tag="v1")
    assert other.uploaded == 2  # blobs are per repository until linked (no cross-repository mount)
    pulled = distribution.pull(registry=registry_address, repository="team/tools", tag="v1")
    assert pulled.digest == image.digest and pulled.layers == image.layers
    with pytest.raises(distribution.RegistryError, match="team/nothing:v1: not found in the registry"):
        distribution.pull(registry=registry_address, repository="team/nothing", tag="v1")
    with pytest.raises(distribution.RegistryError, match="cannot connect"):
        distribution.pull(registry=f"127.0.0.1:{free_port()}", repository="library/busybox", tag="latest")


def kctl(*args: str, home: Path) -> str:
    result = CliRunner().invoke(cli, list(args), env={"FLOTILLA_HOME": str(home), "KCTL_CONFIG": "/nonexistent"})
    assert result.exit_code == 0, f"kctl {' '.join(args)}: {result.output}"
    return result.output


@pytest.fixture(scope="module")
async def registry_node(apiserver: ApiServer, registry_address: str) -> AsyncIterator[LocalNode]:
    """A node whose containerd pulls from the test registry (nothing imported, the pause image included)."""
    reason = containerd_unusable()
    if reason:
        pytest.skip(f"no container runtime: {reason}")
    name = f"rg-{uuid.uuid4().hex[:6]}"
    base = Path(tempfile.mkdtemp(prefix="flt-"))
    node = LocalNode(name, base, apiserver.address, "127.0.0.1", free_pod_cidr(),
                     {**SETTINGS, "cluster_registry": registry_address})
    node.runtime.registry = registry_address
    try:
        await asyncio.to_thread(node.runtime.start)
        node.start_kubelet()
        yield node
    finally:
        async with Client(apiserver.address) as client:
            for pod in (await client.list(core_pb2.Pod, field_selector=f"spec.nodeName={name}")).items:
                await client.delete(core_pb2.Pod, pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
            await asyncio.to_thread(node.cleanup)
            shutil.rmtree(base, ignore_errors=True)
            await client.delete(core_pb2.Node, name)


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


def images_on(node: LocalNode) -> set[str]:
    with grpc.insecure_channel(f"unix://{node.runtime.socket}") as channel:
        listed = cri_pb2_grpc.ImageServiceStub(channel).ListImages(cri_pb2.ListImagesRequest(), timeout=10)
    return {tag for image in listed.images for tag in image.repo_tags}


async def test_a_built_image_is_pushed_and_runs_from_its_short_name(
        client: Client, namespace: str, registry_address: str, registry_node: LocalNode, tmp_path: Path) -> None:
    # Given a directory with a page and a Containerfile on busybox (which only the registry has, so the
    # build pulls it),
    context = tmp_path / "site"
    (context / "html").mkdir(parents=True)
    (context / "html" / "index.html").write_text(PAGE)
    (context / "Containerfile").write_text('FROM busybox\nCOPY html/ /srv/www/\nEXPOSE 8080\n'
                                           'CMD ["httpd", "-f", "-p", "8080", "-h", "/srv/www"]\n')
    home = tmp_path / "home"
    # when I build and push it,
    built = await asyncio.to_thread(kctl, "image", "build", str(context), "-t", "web:1",
                                    "--registry", registry_address, home=home)
    assert built.startswith("built web:1 sha256:")
    pushed = await asyncio.to_thread(kctl, "image", "push", "web:1", "--registry", registry_address, home=home)
    assert pushed.startswith(f"pushed {registry_address}/library/web:1 ")
    catalog = json.loads(await asyncio.to_thread(http_get, f"http://{registry_address}/v2/_catalog"))
    assert "library/web" in catalog["repositories"]

    # then a pod naming it by its short name runs it, pulled over plain HTTP.
    web = core_pb2.Container(name="web", image="web:1")
    await client.create(make_pod("web", registry_node, web, grace=1), namespace=namespace)
    pod = await wait_pod(client, "web", namespace, lambda p: p.status.phase == "Running", timeout=60,
                         what="web Running")
    digest = built.split()[2]
    assert pod.status.container_statuses[0].image_id == f"{registry_address}/library/web@{digest}"
    assert await asyncio.to_thread(http_get, f"http://{pod.status.pod_ip}:8080/") == PAGE
    # Nothing was imported: the sandbox's pause image came from the registry too.
    assert {f"{registry_address}/{REGISTRY_PAUSE_IMAGE}", f"{registry_address}/library/web:1"} <= images_on(
        registry_node)


async def test_an_image_the_registry_lacks_shows_err_image_pull(
        client: Client, namespace: str, registry_node: LocalNode) -> None:
    missing = core_pb2.Container(name="c", image="nothing-here:1")
    await client.create(make_pod("missing", registry_node, missing, grace=1), namespace=namespace)

    def waiting(p: core_pb2.Pod) -> bool:
        return bool(p.status.container_statuses) and p.status.container_statuses[0].state.waiting.reason in (
            "ErrImagePull", "ImagePullBackOff")

    pod = await wait_pod(client, "missing", namespace, waiting, what="ErrImagePull")
    assert pod.status.phase == "Pending"
    events = (await client.list(core_pb2.Event, namespace=namespace)).items
    failed = [e.message for e in events if e.involved_object.name == "missing" and e.reason == "Failed"
              and e.message.startswith("Failed to pull")]
    assert failed and "nothing-here:1" in failed[0] and "not found" in failed[0], failed
    assert any(e.message == "Error: ErrImagePull" for e in events if e.involved_object.name == "missing")
