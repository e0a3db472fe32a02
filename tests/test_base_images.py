"""Issue 17 (and 16 item 4): the `debian:bookworm-slim` base and the Python client image, made offline.

From this machine's installed Debian packages: the slim base holds a shell,
coreutils, dpkg and apt with a dpkg database listing exactly its packages, the
accounts of base-passwd and the alternatives (awk), and no documentation; the
same packages give the same digest (the layer is cached by recipe hash). The
client image adds python3 and the `kubernetes` client in dist-packages, without
its asyncio variant. (tests/e2e/test_images.py builds FROM the base and runs
the client in a cluster.) Needs dpkg; no root.
"""

from __future__ import annotations

import io
import re
import shutil
import tarfile

import pytest

from provision.images import debian
from provision.images.base import PYTHON_CLIENT_IMAGE

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
