"""The images a local cluster's nodes start with: pause, busybox and nginx, built from Debian packages.

There is no registry and no internet here, so every worker's containerd gets
the images imported at `cluster up` (nodeagent/images.py builds pause and
busybox). `localhost/nginx:latest` is the busybox image plus Debian's nginx:
the binary and stock welcome page from the `nginx` and `nginx-common` .debs
(fetched once with `apt-get download` into /var/cache/flotilla/debs and
unpacked with `dpkg -x`, never installed on the host), the shared libraries
`ldd` names copied from the host, and a short nginx.conf serving port 80 in the
foreground. When the packages cannot be had, the image falls back to an
honest stand-in: busybox `httpd` serving a page that says it is not nginx.
The kubelet resolves the short name `nginx` to `localhost/nginx` (its
`cluster_registry` setting).
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nodeagent.images import BUSYBOX_IMAGE, busybox_archive, import_image, oci_archive, pause_archive

NGINX_IMAGE = "localhost/nginx:latest"
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

Entry = tuple[tarfile.TarInfo, bytes | None]


def _dir(path: str) -> Entry:
    info = tarfile.TarInfo(path)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


def _file(path: str, data: bytes, mode: int = 0o644) -> Entry:
    info = tarfile.TarInfo(path)
    info.size, info.mode = len(data), mode
    return info, data


def _parents(paths: list[str]) -> list[Entry]:
    dirs = sorted({str(p) for path in paths for p in Path(path).parents if str(p) != "."}, key=len)
    return [_dir(d) for d in dirs]


def _busybox_plus(extra: list[Entry], *, cmd: list[str]) -> bytes:
    """The busybox image's one layer with `extra` appended, as NGINX_IMAGE."""
    with tarfile.open(fileobj=io.BytesIO(busybox_archive(BUSYBOX_IMAGE))) as archive:
        blobs = [m for m in archive.getmembers() if m.name.startswith("blobs/")]
        extracted = archive.extractfile(max(blobs, key=lambda m: m.size))  # the layer is the big blob
        assert extracted is not None
        base_layer = extracted.read()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as layer:
        with tarfile.open(fileobj=io.BytesIO(base_layer)) as base:
            present = set()
            for member in base.getmembers():
                present.add(member.name)
                layer.addfile(member, base.extractfile(member) if member.isfile() else None)
        for info, data in extra:
            if info.isdir() and info.name in present:
                continue
            present.add(info.name)
            layer.addfile(info, io.BytesIO(data) if data is not None else None)
    return oci_archive(NGINX_IMAGE, out.getvalue(), cmd=cmd)


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


def real_nginx_archive() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for deb in nginx_debs():
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, capture_output=True)
        binary = root / "usr/sbin/nginx"
        ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
        libs = [line.split("=>")[1].split()[0] for line in ldd.splitlines() if "=>" in line and "/" in line]
        libs += [w for line in ldd.splitlines() for w in line.split() if w.startswith("/lib64/")]
        files = [_file("usr/sbin/nginx", binary.read_bytes(), 0o755),
                 _file("etc/nginx/nginx.conf", NGINX_CONF),
                 _file("etc/nginx/mime.types", (root / "etc/nginx/mime.types").read_bytes()),
                 _file("usr/share/nginx/html/index.html", (root / "usr/share/nginx/html/index.html").read_bytes())]
        # The host's copy of each library (same Debian release as the package), at the path ldd resolved.
        files += [_file(lib.lstrip("/"), Path(os.path.realpath(lib)).read_bytes(), 0o755) for lib in libs]
    dirs = ["var/lib/nginx", "var/log/nginx", "run"]
    entries = _parents([info.name for info, _ in files] + [f"{d}/x" for d in dirs]) + [_dir(d) for d in dirs] + files
    return _busybox_plus(entries, cmd=["/usr/sbin/nginx"])


def stand_in_nginx_archive() -> bytes:
    page = "usr/share/nginx/html/index.html"
    return _busybox_plus([*_parents([page]), _file(page, STAND_IN_PAGE)],
                         cmd=["httpd", "-f", "-p", "80", "-h", "/usr/share/nginx/html"])


def nginx_archive() -> bytes:
    try:
        return real_nginx_archive()
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        log.warning("building nginx from Debian packages failed (%s): using the busybox httpd stand-in", err)
        return stand_in_nginx_archive()


def import_node_images(sockets: list[str]) -> None:
    """Build the three images once and import them into every node's containerd, nodes in parallel."""
    archives = [pause_archive(), busybox_archive(), nginx_archive()]

    def load(address: str) -> None:
        for archive in archives:
            import_image(archive, address=address)

    with ThreadPoolExecutor(max_workers=max(1, len(sockets))) as pool:
        list(pool.map(load, sockets))
