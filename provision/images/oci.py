"""OCI images as data, and the node's base images built locally: pause and busybox.

Every pod needs a pause container (the sandbox that holds its network namespace)
and the tests and examples need a small image with a shell and an HTTP server.
These machines have no internet, so the images are made here from Debian
packages: busybox from `busybox-static`, pause from a twenty-line C program built
with `gcc -static`. An `OCIImage` (manifest, config, layers) is what the rest
shares: the provisioner pushes it to the cluster registry (provision/images/base.py),
`kctl image build` makes one, and tests without a registry write it as an OCI
image-layout tar that `ctr -n k8s.io images import` takes (the CRI plugin only
sees the `k8s.io` namespace) under `localhost/` names, which containerd does
not rewrite to docker.io/library/... Layers are built reproducibly, so every
user of this module gets byte-identical images. `parse_reference` is the one
place image names are split the way Docker splits them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAUSE_IMAGE = "localhost/pause:3.9"
# The pause image's path in a cluster registry (docker.io's layout, as every base image there).
REGISTRY_PAUSE_IMAGE = "library/pause:3.9"
BUSYBOX_IMAGE = "localhost/busybox:latest"
BUSYBOX_BINARY = Path("/bin/busybox")

# Sleeps until SIGTERM/SIGINT; as PID 1 of the pod's PID namespace (when shared) it also
# reaps orphans, which is the pause container's second job in Kubernetes.
PAUSE_SOURCE = r"""
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
    struct sigaction term = {.sa_handler = stop}, chld = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
    sigaction(SIGTERM, &term, NULL);
    sigaction(SIGINT, &term, NULL);
    sigaction(SIGCHLD, &chld, NULL);
    for (;;) pause();
}
"""

# Directories a container expects to exist; runc mounts over /proc, /dev, /sys.
BASE_DIRS = ("bin", "dev", "etc", "proc", "sys", "tmp", "var", "var/www", "root")


_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class ImageReference:
    """An image name split as Docker does: `[registry/]repository[:tag]`.

    A one-component repository with no registry ("nginx") is an official image,
    `library/nginx`: that is the path docker.io serves it under, and the cluster
    registry stands in for docker.io, so it keeps that path. With a registry
    named ("10.0.0.5:5000/web") the path is taken as written, as Docker does.
    """

    registry: str
    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.registry + '/' if self.registry else ''}{self.repository}:{self.tag}"

    def familiar(self) -> str:
        """The name as people write it: `nginx:latest`, not `library/nginx:latest`."""
        repository = self.repository if self.registry else self.repository.removeprefix("library/")
        return f"{self.registry + '/' if self.registry else ''}{repository}:{self.tag}"


def parse_reference(name: str) -> ImageReference:
    """`nginx` → ("", "library/nginx", "latest"); `10.0.0.5:5000/web:1` → ("10.0.0.5:5000", "web", "1")."""
    if not name or "@" in name:
        raise ValueError(f"invalid image name {name!r}: want [registry/]repository[:tag] (digests are not supported)")
    first, slash, rest = name.partition("/")
    registry = ""
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, name = first, rest
    repository, colon, tag = name.partition(":")
    if colon and not _TAG.fullmatch(tag):
        raise ValueError(f"invalid tag {tag!r} in image name {name!r}")
    if not all(_COMPONENT.fullmatch(c) for c in repository.split("/")):
        raise ValueError(f"invalid repository {repository!r}: lowercase letters, digits and . _ - between slashes")
    if not registry and "/" not in repository:
        repository = f"library/{repository}"
    return ImageReference(registry, repository, tag or "latest")


def _info(path: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.type, info.mode = kind, mode
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


class Layer:
    """One image layer, reproducibly: entries by path, written by `tar()` sorted, owned by root, mtime 0.

    The base images here, the provisioner's nginx and `kctl image build` all make their layers with
    it, so the same files always give the same digest.
    """

    def __init__(self) -> None:
        self.entries: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self.entries.setdefault(path, (_info(path, tarfile.DIRTYPE, mode), None))

    def add_parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        while parent:
            self.add_dir(parent)
            parent = posixpath.dirname(parent)

    def add_file(self, path: str, data: bytes, mode: int) -> None:
        self.add_parents(path)
        info = _info(path, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.entries[path] = (info, data)

    def add_symlink(self, path: str, target: str) -> None:
        self.add_parents(path)
        info = _info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.entries[path] = (info, None)

    def add_tree(self, source: Path, dest: str) -> None:
        """`source` (a file, or a directory's contents) at `dest`; symlinks inside directories stay links."""
        if source.is_dir():
            if dest:
                self.add_parents(dest)
                self.add_dir(dest, stat.S_IMODE(source.stat().st_mode))
            for child in sorted(source.iterdir()):
                target = posixpath.join(dest, child.name)
                if child.is_symlink():
                    self.add_symlink(target, os.readlink(child))
                elif child.is_dir():
                    self.add_tree(child, target)
                elif child.is_file():
                    self.add_file(target, child.read_bytes(), stat.S_IMODE(child.stat().st_mode))
        else:
            self.add_file(dest, source.read_bytes(), stat.S_IMODE(source.stat().st_mode))

    def add_archive(self, source: Path, dest: str) -> None:
        """ADD's unpacking of a local tar (plain, gzip, bzip2, xz) into `dest`, normalised like everything else."""
        with tarfile.open(source) as archive:
            for member in archive.getmembers():
                name = posixpath.normpath(posixpath.join(dest, member.name.lstrip("/")))
                if name.startswith("..") or name == ".":
                    continue  # never outside the image's root
                if member.isdir():
                    self.add_parents(name)
                    self.add_dir(name, member.mode & 0o7777)
                elif member.issym():
                    self.add_symlink(name, member.linkname)
                elif member.isfile():
                    extracted = archive.extractfile(member)
                    self.add_file(name, extracted.read() if extracted else b"", member.mode & 0o7777)

    def tar(self) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                info, data = self.entries[path]
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return out.getvalue()


DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"  # uncompressed: a layer's diff id is its digest


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class OCIImage:
    """One linux/amd64 image as the OCI spec lays it out: a manifest naming a config blob and layer blobs.

    The same object is imported into containerd (`archive()`), pushed to a
    registry (provision/images/distribution.py) and kept in kctl's local store
    (provision/images/store.py), so all three see byte-identical blobs.
    """

    manifest: bytes
    config: bytes
    layers: tuple[bytes, ...]

    @property
    def digest(self) -> str:
        """The manifest's digest: what a registry and containerd call this image."""
        return digest_of(self.manifest)

    @property
    def config_json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.config)
        return parsed

    def blobs(self) -> dict[str, bytes]:
        """Config and layers by digest (the manifest is not a blob to a registry), as the manifest names them:
        hashing hundreds of megabytes again on every push cost seconds of each `cluster up`."""
        manifest = json.loads(self.manifest)
        digests = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
        return dict(zip(digests, (self.config, *self.layers), strict=True))

    def archive(self, name: str) -> bytes:
        """An OCI image-layout tar holding this image as `name`, the form `ctr images import` takes."""
        manifest_desc = {"mediaType": MANIFEST_TYPE, "digest": self.digest, "size": len(self.manifest),
                         # ctr import names the image after this annotation.
                         "annotations": {"io.containerd.image.name": name,
                                         "org.opencontainers.image.ref.name": name.rpartition(":")[2]}}
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [manifest_desc]}
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            entries = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": json.dumps(index).encode()}
            blobs = {self.digest: self.manifest, **self.blobs()}
            entries.update({f"blobs/sha256/{d.removeprefix('sha256:')}": data for d, data in blobs.items()})
            for path, data in entries.items():
                info = tarfile.TarInfo(path)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()


def make_image(layers: list[bytes], config: dict[str, Any], *, history: list[dict[str, Any]] | None = None,
               digests: dict[int, str] | None = None) -> OCIImage:
    """An image from uncompressed layer tars and the runtime `config` (Cmd, Env, ...); reproducible bytes.

    `digests`: layer digests by id() of the layer bytes, shared by calls that reuse layers (each layer is
    hashed once: images of one base share its tens of megabytes)."""
    known = digests if digests is not None else {}
    layer_digests = []
    for layer in layers:
        if id(layer) not in known:
            known[id(layer)] = digest_of(layer)
        layer_digests.append(known[id(layer)])
    image_config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    }
    if history:
        image_config["history"] = history
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "digest": digest_of(config_bytes), "size": len(config_bytes)},
                "layers": [{"mediaType": LAYER_TYPE, "digest": digest, "size": len(layer)}
                           for layer, digest in zip(layers, layer_digests, strict=True)]}
    return OCIImage(json.dumps(manifest, sort_keys=True).encode(), config_bytes, tuple(layers))


def oci_archive(name: str, layer: bytes, *, cmd: list[str], env: list[str] | None = None) -> bytes:
    """An OCI image-layout tar holding one single-layer linux/amd64 image called `name`."""
    return make_image([layer], {"Cmd": cmd, "Env": env or DEFAULT_ENV}).archive(name)


def busybox_layer() -> bytes:
    """busybox-static with a symlink per applet, so `sh`, `httpd`, `wget` are on PATH."""
    if not BUSYBOX_BINARY.exists():
        raise RuntimeError("busybox is not installed: apt-get install busybox-static")
    applets = subprocess.run([str(BUSYBOX_BINARY), "--list"], capture_output=True, text=True, check=True).stdout
    layer = Layer()
    for d in BASE_DIRS:
        layer.add_dir(d, 0o1777 if d == "tmp" else 0o755)
    layer.add_file("bin/busybox", BUSYBOX_BINARY.read_bytes(), 0o755)
    for applet in set(applets.split()) - {"busybox"}:
        layer.add_symlink(f"bin/{applet}", "busybox")
    layer.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n", 0o644)
    layer.add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
    layer.add_file("var/www/index.html", b"hello from flotilla\n", 0o644)
    return layer.tar()


def busybox_image() -> OCIImage:
    return make_image([busybox_layer()], {"Cmd": ["sh"], "Env": DEFAULT_ENV})


def busybox_archive(name: str = BUSYBOX_IMAGE) -> bytes:
    return busybox_image().archive(name)


def pause_image() -> OCIImage:
    """The sandbox image: one static binary, /pause."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler to build the pause program: apt-get install gcc libc6-dev")
    with tempfile.TemporaryDirectory() as tmp:
        src, binary = Path(tmp, "pause.c"), Path(tmp, "pause")
        src.write_text(PAUSE_SOURCE)
        subprocess.run([cc, "-static", "-Os", "-s", "-o", str(binary), str(src)], check=True, capture_output=True)
        data = binary.read_bytes()
    layer = Layer()
    for d in ("dev", "etc", "proc", "sys"):
        layer.add_dir(d)
    layer.add_file("pause", data, 0o755)
    return make_image([layer.tar()], {"Cmd": ["/pause"], "Env": DEFAULT_ENV})


def pause_archive(name: str = PAUSE_IMAGE) -> bytes:
    return pause_image().archive(name)


def import_image(archive: bytes, *, address: str, namespace: str = "k8s.io") -> None:
    """Load an OCI archive into the containerd at `address` (a socket path) with ctr."""
    ctr = shutil.which("ctr")
    if ctr is None:
        raise RuntimeError("ctr is not installed: apt-get install containerd")
    with tempfile.NamedTemporaryFile(suffix=".tar") as tar:
        tar.write(archive)
        tar.flush()
        done = subprocess.run([ctr, "--address", address, "-n", namespace, "images", "import", tar.name],
                              capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ctr images import failed: {done.stderr.strip()}")


def import_base_images(address: str) -> None:
    """Build and import the pause and busybox images into one containerd."""
    import_image(pause_archive(), address=address)
    import_image(busybox_archive(), address=address)


def main(argv: list[str] | None = None) -> int:
    """`python -m provision.images.oci SOCKET`: build and import the base images into that containerd."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m provision.images.oci", description=main.__doc__)
    parser.add_argument("socket", help="containerd's socket, e.g. /var/lib/flotilla/node-1/containerd/containerd.sock")
    opts = parser.parse_args(argv)
    import_base_images(opts.socket)
    print(f"imported {PAUSE_IMAGE} and {BUSYBOX_IMAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
