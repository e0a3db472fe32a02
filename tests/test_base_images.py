"""Issue 17 (and 16 item 4): the `debian:bookworm-slim` base and the Python client image, made offline.

From this machine's installed Debian packages: the slim base holds a shell,
coreutils, dpkg and apt with a dpkg database listing exactly its packages, the
accounts of base-passwd and the alternatives (awk), and no documentation; the
same packages give the same digest (the layer is cached by recipe hash). The
client image adds python3 and the `kubernetes` client in dist-packages, without
its asyncio variant; the kopf image adds one layer on it with kopf and aiohttp and
nothing the client layer holds already. A new cluster registry starts from the seed storage, its
blobs hard-linked, so the pushes at `cluster up` send nothing.
(tests/e2e/test_images.py builds FROM the base and runs the client in a
cluster.) Needs dpkg (and docker-registry for the seed); no root.
"""

from __future__ import annotations

import io
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from provision.images import debian, distribution, registry, transfer
from provision.images.base import (
    BASE_REPOSITORIES,
    KOPF_IMAGE,
    PYTHON_CLIENT_IMAGE,
    node_images,
    push_node_images,
)
from provision.images.seed import seed_storage
from provision.processes import Process, free_port, wait_until

pytestmark = pytest.mark.skipif(not shutil.which("dpkg-query"), reason="needs a Debian machine (dpkg)")


@pytest.fixture(scope="module")
def images() -> dict[str, debian.OCIImage]:
    return debian.debian_images()


def names(layer: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return {m.name: m for m in tar.getmembers()}


def read(layer: bytes, path: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        extracted = tar.extractfile(path)
        assert extracted is not None
        return extracted.read()


def test_the_slim_base_is_a_debian_root_filesystem(images: dict[str, debian.OCIImage]) -> None:
    slim = images["library/debian:bookworm-slim"]
    assert images["library/debian:bookworm"] is slim and len(slim.layers) == 1
    entries = names(slim.layers[0])
    for path in ("usr/bin/bash", "usr/bin/dpkg", "usr/bin/apt-get", "usr/bin/ls", "etc/os-release", "etc/passwd"):
        assert path in entries, path
    assert entries["bin"].issym() and entries["bin"].linkname == "usr/bin"  # merged /usr, as bookworm
    assert entries["tmp"].mode == 0o1777
    assert entries["usr/bin/awk"].issym()  # an alternative its postinst made
    assert not any(n.startswith("usr/share/doc/") or n.startswith("usr/share/man/") for n in entries)
    status = read(slim.layers[0], "var/lib/dpkg/status").decode()
    listed = set(re.findall(r"^Package: (\S+)", status, re.MULTILINE))
    assert {"bash", "coreutils", "dpkg", "apt", "libc6"} <= listed and "python3" not in listed
    assert read(slim.layers[0], "etc/passwd").startswith(b"root:x:0:0:")
    assert slim.config_json["config"]["Cmd"] == ["bash"]


def test_the_same_packages_give_the_same_digest(images: dict[str, debian.OCIImage]) -> None:
    assert debian.debian_images()["library/debian:bookworm-slim"].digest == \
        images["library/debian:bookworm-slim"].digest


def test_the_python_client_image_adds_python_and_the_kubernetes_client(
        images: dict[str, debian.OCIImage]) -> None:
    client = images[f"library/{PYTHON_CLIENT_IMAGE}"] if f"library/{PYTHON_CLIENT_IMAGE}" in images else \
        images[PYTHON_CLIENT_IMAGE]
    slim = images["library/debian:bookworm-slim"]
    assert client.layers[0] == slim.layers[0] and len(client.layers) == 2
    entries = names(client.layers[1])
    assert "usr/bin/python3.11" in entries
    assert f"{debian.DIST_PACKAGES}/kubernetes/__init__.py" in entries
    assert f"{debian.DIST_PACKAGES}/kubernetes/config/incluster_config.py" in entries
    assert f"{debian.DIST_PACKAGES}/yaml/__init__.py" in entries
    assert not any(n.startswith(f"{debian.DIST_PACKAGES}/kubernetes/aio/") for n in entries)
    version = next(t for t in images if t.startswith(debian.PYTHON_CLIENT_REPOSITORY + ":") and
                   not t.endswith(":latest")).rpartition(":")[2]
    assert images[f"{debian.PYTHON_CLIENT_REPOSITORY}:{version}"] is client


def test_the_kopf_image_adds_kopf_on_the_python_client(images: dict[str, debian.OCIImage]) -> None:
    operator, client = images[KOPF_IMAGE], images[PYTHON_CLIENT_IMAGE]
    assert operator.layers[:2] == client.layers and len(operator.layers) == 3  # the nodes store the rest once
    entries = names(operator.layers[2])
    for module in ("kopf/__main__.py", "aiohttp/__init__.py", "multidict/__init__.py", "iso8601/__init__.py",
                   "jsonpatch.py", "click/__init__.py"):
        assert f"{debian.DIST_PACKAGES}/{module}" in entries, module
    assert any(n.startswith(f"{debian.DIST_PACKAGES}/aiohttp/_http_parser.cpython-311") for n in entries)
    # Only what the client layer lacks: the kubernetes client and yaml come from below.
    assert not any(n.startswith((f"{debian.DIST_PACKAGES}/kubernetes/", f"{debian.DIST_PACKAGES}/yaml/"))
                   for n in entries)
    assert operator.config_json["config"]["Cmd"] == ["python3", "-m", "kopf"]
    version = next(t for t in images if t.startswith(debian.KOPF_REPOSITORY + ":") and
                   not t.endswith(":latest")).rpartition(":")[2]
    assert images[f"{debian.KOPF_REPOSITORY}:{version}"] is operator


def test_a_cluster_registry_starts_from_the_seed(tmp_path: Path) -> None:
    """`cluster up` links the seed's blobs into the new registry's storage: the pushes after it send nothing."""
    if not shutil.which("docker-registry"):
        pytest.skip("docker-registry is not installed")
    storage = tmp_path / "storage"
    images = node_images()
    assert seed_storage(images, storage, BASE_REPOSITORIES)
    address = f"127.0.0.1:{free_port()}"
    config = tmp_path / "config.yml"
    config.write_text(registry.config_text(storage=storage, address=address, secret="s"))
    process = Process("registry", registry.argv(config), tmp_path / "registry.log")
    process.start()
    try:
        wait_until(lambda: registry.ready(address), "registry /v2/", process)
        pushed = push_node_images(address, storage=storage)
        assert pushed and all(p.uploaded == 0 for p in pushed)
        assert {f"{r}:{t}" for r, t in transfer.catalog(address)} == set(images)
        pulled = distribution.pull(registry=address, repository=debian.PYTHON_CLIENT_REPOSITORY, tag="latest")
        assert pulled.digest == images[PYTHON_CLIENT_IMAGE].digest
    finally:
        process.stop()
    blobs = list(storage.rglob("blobs/sha256/*/*/data"))
    assert blobs and all(b.stat().st_nlink >= 2 for b in blobs)  # shared with the seed, not copied
