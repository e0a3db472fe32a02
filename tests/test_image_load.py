"""Issue 17: `kctl image load` puts every image and tag of an archive into the cluster registry; `image list`.

Given an open docker-registry on loopback holding busybox: a `docker save`
archive (written by skopeo from busybox, tagged `redis:latest` and `redis:7`)
and an OCI archive (`alice/tool:2`) are loaded with `kctl image load` (from a
file and from stdin), and `kctl image list` shows `redis latest`, `redis 7`
and `alice/tool 2` beside busybox; the images pull back with busybox's layer.
A file that is no archive, and a nameless image, are refused naming what is
wrong, and nothing is stored. Needs docker-registry and skopeo; no root.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kctl.main import cli
from provision.images import distribution, registry, transfer
from provision.images.oci import busybox_image
from provision.processes import Process, free_port, wait_until

pytestmark = pytest.mark.skipif(not shutil.which("skopeo") or not shutil.which("docker-registry"),
                                reason="needs skopeo and docker-registry (provision/install.sh installs them)")


@contextlib.contextmanager
def serving_registry(folder: Path) -> Iterator[str]:
    """Debian's docker-registry on loopback without auth, holding library/busybox:latest; its address."""
    address = f"127.0.0.1:{free_port()}"
    process = Process("registry", registry.argv(registry.write_config(folder, address)), folder / "registry.log")
    process.start()
    try:
        wait_until(lambda: registry.ready(address), "registry /v2/", process)
        distribution.push(busybox_image(), registry=address, repository="library/busybox", tag="latest")
        yield address
    finally:
        process.stop()


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving_registry(tmp_path_factory.mktemp("loadreg")) as address:
        yield address


def skopeo_copy(source: str, dest: str, *extra: str) -> None:
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false", *extra, source, dest],
                   check=True, capture_output=True, timeout=120)


def kctl(*args: str, stdin: bytes | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin)
    return result.exit_code, result.output


def test_docker_and_oci_archives_load_every_tag(open_registry: str, tmp_path: Path) -> None:
    busybox = f"docker://{open_registry}/library/busybox:latest"
    saved = tmp_path / "redis.tar"
    skopeo_copy(busybox, f"docker-archive:{saved}:redis:latest", "--additional-tag", "redis:7")
    # skopeo writes RepoTags fully qualified (docker save: "redis:latest"); both go to docker.io's layout.
    assert [str(transfer.cluster_reference(i.name)) for i in transfer.archive_images(saved)] == [
        "library/redis:latest", "library/redis:7"]
    oci = tmp_path / "tool.tar"
    skopeo_copy(busybox, f"oci-archive:{oci}:alice/tool:2")

    code, out = kctl("image", "load", str(saved), "--registry", open_registry)
    assert code == 0, out
    assert f"redis:latest as {open_registry}/library/redis:latest" in out
    code, out = kctl("image", "load", "-", "--registry", open_registry, stdin=oci.read_bytes())
    assert code == 0, out
    assert f"as {open_registry}/alice/tool:2" in out

    code, out = kctl("image", "list", "--registry", open_registry)
    assert code == 0, out
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["REPOSITORY", "TAG"]
    assert {("redis", "latest"), ("redis", "7"), ("alice/tool", "2"), ("busybox", "latest")} <= {
        (r[0], r[1]) for r in rows[1:]}
    pulled = distribution.pull(registry=open_registry, repository="library/redis", tag="7")
    assert pulled.layers == busybox_image().layers


def test_bad_archives_are_refused_naming_why(open_registry: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all")
    code, out = kctl("image", "load", str(junk), "--registry", open_registry)
    assert code != 0 and "not an image archive" in out, out
    nameless = tmp_path / "nameless.tar"
    with tarfile.open(nameless, "w") as tar:
        data = json.dumps([{"Config": "c.json", "RepoTags": None, "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, __import__("io").BytesIO(data))
    code, out = kctl("image", "load", str(nameless), "--registry", open_registry)
    assert code != 0 and "has no name (RepoTags)" in out, out
    code, out = kctl("image", "load", "--registry", open_registry)
    assert code != 0 and "give exactly one of ARCHIVE" in out, out
    assert not any(r.startswith("nameless") for r, _ in transfer.catalog(open_registry))


def test_from_docker_says_when_it_cannot(open_registry: str) -> None:
    code, out = kctl("image", "load", "--from-docker", "redis", "--registry", open_registry)
    assert code != 0
    assert "docker" in out and ("not installed" in out or "docker save redis failed" in out), out
