"""The cluster's image registry: Debian's `docker-registry` (CNCF distribution 2.8) on the master, twice.

Nodes pull every image from here over plain HTTP on the private network: the
provisioner pushes the base images (pause, busybox, nginx) at `cluster up`,
users push their own with `kctl image push`, and each node's containerd serves
docker.io names from it (provision/containerd.py), so `--image=nginx` works
with no internet. This module writes the daemons' configs and command lines,
the push credentials, and tells when each answers; the supervisor (or systemd)
runs them like any other daemon.

Anyone on the node network -- every node and every pod -- can reach the
registry, and every node runs what it serves, so "who may push" is "who may
run code on every node". distribution 2.8 cannot authorise per verb with
htpasswd (a user either may do everything or nothing), so the registry runs as
two processes over one storage folder:

- `registry`, `<master>:5000`, plain HTTP: pulls only. Read-only maintenance
  mode refuses every upload (405) and asks no credentials, so containerd pulls
  as before.
- `registry-push`, `<master>:5001`, HTTPS under the cluster CA: pushes, behind
  htpasswd basic auth (bcrypt) with one user whose password `cluster up` makes
  into the cluster's PKI folder (0600).

Deletes are off in both (`storage.delete.enabled: false`): nothing removes an
image a node may still pull. TLS on the push port is there so the password is
never sent in the clear; it is the cluster CA's serving certificate, so kctl
verifies it with the CA it already has. Both keep to the job otherwise:
filesystem storage inside the cluster folder, nothing that reaches out (no
pull-through proxy, no notification endpoints, no bugsnag/newrelic reporting).
"""

from __future__ import annotations

import secrets
import shutil
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import yaml

REGISTRY_PORT = 5000
PUSH_PORT = REGISTRY_PORT + 1  # the authenticated, TLS registry: what kctl image push uses
API_VERSION_HEADER = "Docker-Distribution-Api-Version"
PUSH_USER = "flotilla-admin"
REALM = "flotilla-registry"


def registry_address(master_address: str, port: int = REGISTRY_PORT) -> str:
    """host:port of a cluster's (pull) registry: the master's address on the nodes' network."""
    return f"{master_address}:{port}"


def push_address(pull_address: str) -> str:
    """host:port of the authenticated registry that writes the same storage: the pull port's next one."""
    host, _, port = pull_address.rpartition(":")
    return f"{host}:{int(port) + 1}"


@dataclass(frozen=True)
class Credentials:
    """Who may push: a user and password (basic auth over TLS), and the CA of the push port's certificate."""

    username: str
    password: str

    def to_yaml(self, registry: str) -> bytes:
        return yaml.safe_dump({"registry": registry, "username": self.username,
                               "password": self.password}).encode()

    @classmethod
    def read(cls, path: Path) -> Credentials:
        """The push credentials `cluster up` wrote (PermissionError: not root / not the owner)."""
        doc = yaml.safe_load(path.read_text()) or {}
        if not doc.get("username") or not doc.get("password"):
            raise ValueError(f"{path} has no registry username and password")
        return cls(str(doc["username"]), str(doc["password"]))


def new_credentials() -> Credentials:
    return Credentials(PUSH_USER, secrets.token_urlsafe(24))


# bcrypt's cost: the least it takes. The password is 24 random bytes (192 bits), which no cost factor makes
# any harder to guess, while the registry checks it on every request of a push: at the default cost (12)
# that was a second per request on a loaded machine, a minute for the base images at `cluster up`.
BCRYPT_ROUNDS = 4


def htpasswd(credentials: Credentials) -> bytes:
    """The htpasswd line docker-registry checks: bcrypt, the only hash distribution accepts."""
    hashed = bcrypt.hashpw(credentials.password.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS)).decode()
    return f"{credentials.username}:{hashed}\n".encode()


def config_text(*, storage: Path, address: str, secret: str, readonly: bool = False,
                htpasswd_file: Path | None = None, tls: tuple[Path, Path] | None = None) -> str:
    """docker-registry's config.yml for `address` (host:port), storing blobs under `storage`.

    `readonly`: the pull side (uploads refused); `htpasswd_file` and `tls` (certificate, key): the push side.
    `secret` signs upload state; a fixed one lets an upload survive the supervisor restarting the daemon.
    """
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            # Nothing removes an image a node may still pull.
            "delete": {"enabled": False},
            "cache": {"blobdescriptor": "inmemory"},
            # The read-only side leaves upload housekeeping to the side that uploads.
            "maintenance": ({"readonly": {"enabled": True}, "uploadpurging": {"enabled": False}}
                            if readonly else {"readonly": {"enabled": False}}),
        },
        # The same header Debian's stock config sets; no `proxy` or `notifications` sections.
        "http": {"addr": address, "secret": secret, "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    if tls is not None:
        config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}  # type: ignore[index]
    if htpasswd_file is not None:
        config["auth"] = {"htpasswd": {"realm": REALM, "path": str(htpasswd_file)}}
    return yaml.safe_dump(config, sort_keys=False)


def registry_binary() -> str:
    found = shutil.which("docker-registry")
    if found is None:
        raise RuntimeError("docker-registry is not installed: apt-get install docker-registry")
    return found


def argv(config_path: Path) -> list[str]:
    return [registry_binary(), "serve", str(config_path)]


def _write(path: Path, text: str) -> Path:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)
    return path


def write_config(folder: Path, address: str) -> Path:
    """An open registry (tests): `folder`/config.yml, storage in `folder`/storage; returns its path."""
    (folder / "storage").mkdir(parents=True, exist_ok=True)
    return _write(folder / "config.yml", config_text(storage=folder / "storage", address=address,
                                                     secret=secrets.token_hex(16)))


def write_cluster_configs(folder: Path, address: str, *, htpasswd_file: Path, tls: tuple[Path, Path],
                          secret: str = "") -> tuple[Path, Path]:
    """A cluster's two registries over `folder`/storage: (pull config, push config) paths."""
    (folder / "storage").mkdir(parents=True, exist_ok=True)
    secret = secret or secrets.token_hex(16)
    pull = _write(folder / "config.yml", config_text(storage=folder / "storage", address=address, secret=secret,
                                                     readonly=True))
    push = _write(folder / "push.yml", config_text(storage=folder / "storage", address=push_address(address),
                                                   secret=secret, htpasswd_file=htpasswd_file, tls=tls))
    return pull, push


def ready(address: str, timeout: float = 1.0, *, ca_file: Path | None = None) -> bool:
    """True when GET /v2/ answers with the distribution API header: 200 on the pull side, 401 (asking for
    credentials) on the push side, which is HTTPS under the cluster CA (`ca_file`)."""
    url = f"{'https' if ca_file else 'http'}://{address}/v2/"
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as reply:
            return bool(reply.status == 200 and reply.headers.get(API_VERSION_HEADER) == "registry/2.0")
    except urllib.error.HTTPError as err:
        return bool(ca_file and err.code == 401 and err.headers.get(API_VERSION_HEADER) == "registry/2.0")
    except (OSError, urllib.error.URLError):
        return False


# The push side's files in a cluster's config folder (provision/components.py makes them with the PKI).
CREDENTIALS_FILE = "pki/registry-push.yaml"  # username, password (0600)
HTPASSWD_FILE = "pki/registry.htpasswd"  # what docker-registry checks them against (0600)
SERVING_CERT = "pki/registry"  # .crt/.key: the push port's TLS, signed by the cluster CA
CA_FILE = "pki/ca.crt"


@dataclass(frozen=True)
class PushTarget:
    """Where and how to push to a cluster's registry: the push port, its credentials, the CA of its TLS."""

    address: str
    credentials: Credentials
    ca_file: Path


def cluster_push_target(config_dir: Path, pull_address: str) -> PushTarget:
    """The push side of the cluster whose config folder (PKI) is `config_dir`; PermissionError when this
    user may not read the credentials (they are the cluster admin's: root's on a local cluster)."""
    return PushTarget(push_address(pull_address), Credentials.read(config_dir / CREDENTIALS_FILE),
                      config_dir / CA_FILE)


def cluster_ready(pull_address: str, ca_file: Path) -> bool:
    """Both registries answer: pulls on `pull_address`, pushes (asking for credentials) on the next port."""
    return ready(pull_address) and ready(push_address(pull_address), ca_file=ca_file)
