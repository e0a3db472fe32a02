"""The cluster's image registry: Debian's `docker-registry` (CNCF distribution 2.8) on the master.

Nodes pull every image from here over plain HTTP on the private network: the
provisioner pushes the base images (pause, busybox, nginx) at `cluster up`,
users push their own with `kctl image push`, and each node's containerd serves
docker.io names from it (provision/containerd.py), so `--image=nginx` works
with no internet. This module writes the daemon's config and command line and
tells when it answers; the supervisor runs it like any other daemon.

The config keeps it to the job: filesystem storage inside the cluster folder
(removed with the cluster), HTTP on the master's bridge address, no auth (the
bridge is private to this machine), deletes enabled (so an image can be
replaced and garbage-collected), and nothing that reaches out: no pull-through
proxy, no notification endpoints, no bugsnag/newrelic reporting.
"""

from __future__ import annotations

import secrets
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REGISTRY_PORT = 5000
API_VERSION_HEADER = "Docker-Distribution-Api-Version"


def registry_address(master_address: str, port: int = REGISTRY_PORT) -> str:
    """host:port of a cluster's registry: the master's address on the nodes' network."""
    return f"{master_address}:{port}"


def config_text(*, storage: Path, address: str, secret: str) -> str:
    """docker-registry's config.yml for `address` (host:port), storing blobs under `storage`.

    `secret` signs upload state; a fixed one lets an upload survive the supervisor restarting the daemon.
    """
    return yaml.safe_dump({
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        # The same header Debian's stock config sets; no `auth`, `proxy` or `notifications` sections.
        "http": {"addr": address, "secret": secret, "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }, sort_keys=False)


def registry_binary() -> str:
    found = shutil.which("docker-registry")
    if found is None:
        raise RuntimeError("docker-registry is not installed: apt-get install docker-registry")
    return found


def argv(config_path: Path) -> list[str]:
    return [registry_binary(), "serve", str(config_path)]


def write_config(folder: Path, address: str) -> Path:
    """Write `folder`/config.yml (storage in `folder`/storage) and return its path."""
    (folder / "storage").mkdir(parents=True, exist_ok=True)
    path = folder / "config.yml"
    path.write_text(config_text(storage=folder / "storage", address=address, secret=secrets.token_hex(16)))
    path.chmod(0o600)
    return path


def ready(address: str, timeout: float = 1.0) -> bool:
    """True when GET /v2/ answers 200 with the distribution API header (the API's own version check)."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=timeout) as reply:
            return bool(reply.status == 200 and reply.headers.get(API_VERSION_HEADER) == "registry/2.0")
    except (OSError, urllib.error.URLError):
        return False
