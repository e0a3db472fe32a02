"""Build the node's base images locally: a pause image and a busybox image.

Every pod needs a pause container (the sandbox that holds its network namespace)
and the tests and examples need a small image with a shell and an HTTP server.
These machines have no internet, so the images are made here from Debian
packages: busybox from `busybox-static`, pause from a twenty-line C program built
with `gcc -static`. Each image is written as an OCI image-layout tar that
`ctr -n k8s.io images import` takes (the CRI plugin only sees the `k8s.io`
namespace). The names start with `localhost/` so containerd does not rewrite them
to docker.io/library/... The provisioner and the tests share this module, so
both get byte-identical images (the layers are built reproducibly).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

PAUSE_IMAGE = "localhost/pause:3.9"
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


@dataclass(frozen=True)
class ImageFile:
    """One file of a layer: its path in the image, content (or a symlink target) and mode."""

    path: str
    data: bytes = b""
    mode: int = 0o644
    link: str = ""


def _layer(files: list[ImageFile], dirs: tuple[str, ...]) -> bytes:
    """An uncompressed, reproducible layer tar (fixed mtimes and owners)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        for f in files:
            info = tarfile.TarInfo(f.path)
            info.mode = f.mode
            if f.link:
                info.type, info.linkname = tarfile.SYMTYPE, f.link
                tar.addfile(info)
            else:
                info.size = len(f.data)
                tar.addfile(info, io.BytesIO(f.data))
    return buf.getvalue()


def _blob(blobs: dict[str, bytes], data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def oci_archive(name: str, layer: bytes, *, cmd: list[str], env: list[str] | None = None) -> bytes:
    """An OCI image-layout tar holding one single-layer linux/amd64 image called `name`."""
    blobs: dict[str, bytes] = {}
    layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar", **_blob(blobs, layer)}
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        # An uncompressed layer's diff id is its own digest.
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    }
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **_blob(blobs, json.dumps(config, sort_keys=True).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": [layer_desc]}
    manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                     **_blob(blobs, json.dumps(manifest, sort_keys=True).encode()),
                     # ctr import names the image after this annotation.
                     "annotations": {"io.containerd.image.name": name,
                                     "org.opencontainers.image.ref.name": name.rpartition(":")[2]}}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [manifest_desc]}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        entries = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": json.dumps(index).encode()}
        entries.update({f"blobs/sha256/{d.removeprefix('sha256:')}": data for d, data in blobs.items()})
        for path, data in entries.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def busybox_archive(name: str = BUSYBOX_IMAGE) -> bytes:
    """busybox-static with a symlink per applet, so `sh`, `httpd`, `wget` are on PATH."""
    if not BUSYBOX_BINARY.exists():
        raise RuntimeError("busybox is not installed: apt-get install busybox-static")
    applets = subprocess.run([str(BUSYBOX_BINARY), "--list"], capture_output=True, text=True, check=True).stdout
    files = [ImageFile("bin/busybox", BUSYBOX_BINARY.read_bytes(), 0o755)]
    files += [ImageFile(f"bin/{a}", link="busybox") for a in sorted(set(applets.split())) if a != "busybox"]
    files += [ImageFile("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"),
              ImageFile("etc/group", b"root:x:0:\nnogroup:x:65534:\n"),
              ImageFile("var/www/index.html", b"hello from flotilla\n")]
    return oci_archive(name, _layer(files, BASE_DIRS), cmd=["sh"])


def pause_archive(name: str = PAUSE_IMAGE) -> bytes:
    """The sandbox image: one static binary, /pause."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler to build the pause program: apt-get install gcc libc6-dev")
    with tempfile.TemporaryDirectory() as tmp:
        src, binary = Path(tmp, "pause.c"), Path(tmp, "pause")
        src.write_text(PAUSE_SOURCE)
        subprocess.run([cc, "-static", "-Os", "-s", "-o", str(binary), str(src)], check=True, capture_output=True)
        data = binary.read_bytes()
    return oci_archive(name, _layer([ImageFile("pause", data, 0o755)], ("dev", "etc", "proc", "sys")), cmd=["/pause"])


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
    """`python -m nodeagent.images SOCKET`: build and import the base images into that containerd."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nodeagent.images", description=main.__doc__)
    parser.add_argument("socket", help="containerd's socket, e.g. /var/lib/flotilla/node-1/containerd/containerd.sock")
    opts = parser.parse_args(argv)
    import_base_images(opts.socket)
    print(f"imported {PAUSE_IMAGE} and {BUSYBOX_IMAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
