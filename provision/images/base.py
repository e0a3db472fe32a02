"""The images a local cluster starts with: pause, busybox, nginx, debian and the Python client, pushed.

There is no internet here, so `cluster up` builds the base images locally and
pushes them to the cluster registry on the master (provision/images/registry.py) as
`library/pause:3.9`, `library/busybox:latest` and `library/nginx:latest`:
the paths docker.io serves official images under, because every node's
containerd serves docker.io names from the cluster registry. So `--image=nginx`
(docker.io/library/nginx:latest) is pulled from the master over plain HTTP,
and the seed commands work unchanged. provision/images/oci.py builds pause and
busybox; nginx here is the busybox layer plus a second layer with Debian's
nginx: the binary and stock welcome page from the `nginx` and `nginx-common`
.debs (fetched once with `apt-get download` into /var/cache/flotilla/debs and
unpacked with `dpkg -x`, never installed on the host), the shared libraries
`ldd` names copied from the host, and a short nginx.conf serving port 80 in the
foreground. When the packages cannot be had, the image falls back to an honest
stand-in: busybox `httpd` serving a page that says it is not nginx.
`debian:bookworm-slim`, `flotilla/python-client` (Debian's python3 with the
`kubernetes` client) and `flotilla/kopf` (that and kopf) come from this
machine's installed Debian packages (provision/images/debian.py), their layers
cached by recipe hash.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from pathlib import Path

from provision.images.debian import KOPF_REPOSITORY, PYTHON_CLIENT_REPOSITORY, debian_images
from provision.images.distribution import PushResult, push
from provision.images.oci import (
    DEFAULT_ENV,
    REGISTRY_PAUSE_IMAGE,
    Layer,
    OCIImage,
    busybox_image,
    busybox_layer,
    make_image,
    pause_image,
)
from provision.images.registry import PushTarget
from provision.images.seed import seed_storage

NGINX_IMAGE = "localhost/nginx:latest"
# The in-cluster client image (issue 16): Debian's python3 and the kubernetes client; `kubectl run` it
# as `flotilla/python-client` (pulled from the cluster registry like nginx).
PYTHON_CLIENT_IMAGE = f"{PYTHON_CLIENT_REPOSITORY}:latest"
# The python client image plus kopf, for operators run in pods (`python3 -m kopf run ...`).
KOPF_IMAGE = f"{KOPF_REPOSITORY}:latest"
# Pushed first, so the images on top of them mount their layers (kopf's sits on the python client's).
BASE_REPOSITORIES = ("library/busybox", "library/debian", PYTHON_CLIENT_REPOSITORY)
DEB_CACHE = Path("/var/cache/flotilla/debs")
NGINX_PACKAGES = ("nginx", "nginx-common")
NGINX_CONF = b"""# Flotilla's nginx image: the stock page on port 80, in the foreground, logs to the container's output.
user nobody nogroup;
worker_processes 1;
daemon off;
pid /run/nginx.pid;
error_log stderr;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    access_log /dev/stdout;
    server {
        listen 80 default_server;
        root /usr/share/nginx/html;
        index index.html;
    }
}
"""
STAND_IN_PAGE = b"""<!DOCTYPE html>
<html><head><title>Welcome to nginx!</title></head>
<body><h1>Welcome to nginx!</h1>
<p>Served by busybox httpd: Flotilla's offline stand-in (the nginx packages were not available).</p>
</body></html>
"""
log = logging.getLogger(__name__)


def _on_busybox(layer: Layer, *, cmd: list[str]) -> OCIImage:
    """busybox's layer with `layer` on top (the registry and the nodes store busybox's once)."""
    return make_image([busybox_layer(), layer.tar()], {"Cmd": cmd, "Env": DEFAULT_ENV})


def nginx_debs() -> list[Path]:
    """The nginx packages, downloaded once (through apt, the ordinary client) and cached."""
    found = [next(iter(sorted(DEB_CACHE.glob(f"{p}_*.deb"))), None) for p in NGINX_PACKAGES]
    if all(found):
        return [p for p in found if p is not None]
    DEB_CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *NGINX_PACKAGES], cwd=DEB_CACHE, capture_output=True, timeout=180)
    found = [next(iter(sorted(DEB_CACHE.glob(f"{p}_*.deb"))), None) for p in NGINX_PACKAGES]
    if not all(found):
        raise RuntimeError("apt-get download nginx nginx-common failed")
    return [p for p in found if p is not None]


def real_nginx_image() -> OCIImage:
    """Debian's nginx as a layer on busybox: binary, welcome page, mime types, our nginx.conf, its libraries."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for deb in nginx_debs():
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, capture_output=True)
        binary = root / "usr/sbin/nginx"
        ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
        libs = [line.split("=>")[1].split()[0] for line in ldd.splitlines() if "=>" in line and "/" in line]
        libs += [w for line in ldd.splitlines() for w in line.split() if w.startswith("/lib64/")]
        layer = Layer()
        layer.add_file("usr/sbin/nginx", binary.read_bytes(), 0o755)
        layer.add_file("etc/nginx/nginx.conf", NGINX_CONF, 0o644)
        for page in ("etc/nginx/mime.types", "usr/share/nginx/html/index.html"):
            layer.add_file(page, (root / page).read_bytes(), 0o644)
        # The host's copy of each library (same Debian release as the package), at the path ldd resolved.
        for lib in libs:
            layer.add_file(lib.lstrip("/"), Path(os.path.realpath(lib)).read_bytes(), 0o755)
    for d in ("var/lib/nginx", "var/log/nginx", "run"):
        layer.add_parents(d)
        layer.add_dir(d)
    return _on_busybox(layer, cmd=["/usr/sbin/nginx"])


def stand_in_nginx_image() -> OCIImage:
    layer = Layer()
    layer.add_file("usr/share/nginx/html/index.html", STAND_IN_PAGE, 0o644)
    return _on_busybox(layer, cmd=["httpd", "-f", "-p", "80", "-h", "/usr/share/nginx/html"])


def stand_in_nginx_archive() -> bytes:
    return stand_in_nginx_image().archive(NGINX_IMAGE)


def nginx_image() -> OCIImage:
    try:
        return real_nginx_image()
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        log.warning("building nginx from Debian packages failed (%s): using the busybox httpd stand-in", err)
        return stand_in_nginx_image()


# Debian bookworm's nginx is 1.22: the image is tagged with that version too, so manifests
# that pin a version (docs/examples) pull something true to its tag.
NGINX_VERSION_TAG = "1.22"


def node_images() -> dict[str, OCIImage]:
    """The base images by the name nodes pull them as (docker.io's paths, served by the cluster registry)."""
    nginx = nginx_image()
    images = {REGISTRY_PAUSE_IMAGE: pause_image(), "library/busybox:latest": busybox_image(),
              "library/nginx:latest": nginx, f"library/nginx:{NGINX_VERSION_TAG}": nginx}
    try:
        images.update(debian_images())
    except (OSError, subprocess.SubprocessError, StopIteration) as err:
        # Not a Debian machine (no dpkg): the cluster works without them, `FROM debian` does not.
        log.warning("debian:bookworm-slim and the python client image cannot be made here (%s)", err)
    return images


def push_node_images(registry: str, target: PushTarget | None = None, *,
                     storage: Path | None = None) -> list[PushResult]:
    """Build the base images and push them to the cluster registry (blobs it already has are skipped);
    `target`: the cluster's push side and credentials (a cluster's `registry` itself is read-only).
    `storage`: the registry's storage folder, when it is on this machine: it is filled from the seed
    (provision/images/seed.py) first, so the pushes find every blob there."""
    images = node_images()
    if storage is not None:
        seed_storage(images, storage, BASE_REPOSITORIES)
    results = []
    for name, image in images.items():
        repository, _, tag = name.partition(":")
        # nginx sits on busybox's layer, the python client on debian's, kopf on the client's: mounted, not sent
        # again.
        results.append(push(image, registry=registry, repository=repository, tag=tag, target=target,
                            mount_from=BASE_REPOSITORIES))
    return results
