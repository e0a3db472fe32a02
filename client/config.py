"""Kubeconfig: where the apiserver is and who we are, for kctl, kubectl and the daemons.

One file serves both clients. It is kubectl's own format (`apiVersion: v1`,
`kind: Config`): named `clusters` (the Kubernetes API's HTTPS URL and the CA),
named `users` (client certificate or bearer token), named `contexts` pairing a
cluster with a user and a default namespace, and `current-context`. kctl speaks
gRPC, so a Flotilla cluster entry also carries kctl's addresses in an extension,
which kubectl keeps but ignores (as minikube's `cluster_info` extension):

    clusters:
    - name: flotilla-demo
      cluster:
        server: https://192.168.56.1:6443            # kubectl (HTTPS)
        certificate-authority-data: ...
        extensions:
        - name: flotilla.dev/grpc
          extension: {server: 192.168.56.1:6445,      # gRPC, client certificates
                      tokenServer: 192.168.56.1:6444} # gRPC, bearer tokens

Which file, as kubectl finds it: `--kubeconfig`, else `$KUBECONFIG` (a list,
merged: the first file to name a cluster, user or context wins, as does the
first current-context), else `~/.kube/config`; kctl then falls back to its
legacy `~/.kctl/config`, written by clusters made before the standard format.
`$KCTL_CONFIG`, when set, names kctl's file ahead of all of these (it keeps a
kctl — or a test suite — off the user's kubectl configuration). Files from the
legacy places may lack the extension: their `server` is the gRPC address.
An explicit server (`--server`), token or namespace overrides the context's.

`kubeconfig()` builds such a file for one identity; `merge()` and `remove()`
add and take out one cluster's entries in a shared file, leaving the rest as
it was (what `kctl cluster up` and `down` do to `~/.kube/config`, as kind does).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from client.api import Client

ENV_VAR = "KCTL_CONFIG"
KUBECONFIG_ENV = "KUBECONFIG"
DEFAULT_NAMESPACE = "default"
GRPC_EXTENSION = "flotilla.dev/grpc"
SECTIONS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))


class ConfigError(Exception):
    """The kubeconfig is missing, malformed, or names something it does not define."""


@dataclass(frozen=True)
class GrpcEndpoints:
    """kctl's way in to a Flotilla apiserver: the gRPC ports, kept in the cluster entry's extension.

    Python's gRPC server takes client certificates and bearer tokens on separate ports.
    """

    server: str  # HOST:PORT, TLS with client certificates
    token_server: str = ""  # HOST:PORT, TLS with bearer tokens

    def extension(self) -> dict[str, Any]:
        body = {"server": self.server, **({"tokenServer": self.token_server} if self.token_server else {})}
        return {"name": GRPC_EXTENSION, "extension": body}


@dataclass
class ClientConfig:
    """Everything needed to open a Client: the resolved cluster, user and namespace."""

    server: str  # the gRPC target, HOST:PORT
    namespace: str = DEFAULT_NAMESPACE
    token: str | None = None
    certificate_authority_data: bytes | None = None
    client_certificate_data: bytes | None = None
    client_key_data: bytes | None = None
    context: str = ""
    url: str = ""  # the cluster's Kubernetes API (HTTPS), what kubectl dials

    def credentials(self) -> grpc.ChannelCredentials | None:
        """SSL channel credentials when the cluster has a CA; None means plaintext."""
        if self.certificate_authority_data is None:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.certificate_authority_data,
            private_key=self.client_key_data,
            certificate_chain=self.client_certificate_data,
        )

    def client(self, *, timeout: float = 30.0) -> Client:
        return Client(self.server, credentials=self.credentials(), token=self.token, timeout=timeout)


# ---------------------------------------------------------------- which file

def legacy_path() -> Path:
    """kctl's own config before the standard kubeconfig: `~/.kctl/config`."""
    return Path.home() / ".kctl" / "config"


def kubectl_paths() -> list[Path]:
    """The files kubectl reads: `$KUBECONFIG`'s list, else `~/.kube/config`."""
    env = os.environ.get(KUBECONFIG_ENV, "")
    listed = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return listed or [Path.home() / ".kube" / "config"]


def search_paths() -> list[Path]:
    """The places kctl looks when no --kubeconfig is given, in order of precedence."""
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(env).expanduser()]
    return [*kubectl_paths(), legacy_path()]


def files_to_read() -> list[Path]:
    """The existing files kctl reads when no --kubeconfig is given: `$KCTL_CONFIG`; else every existing file
    of `$KUBECONFIG` (merged) or `~/.kube/config`; else the legacy `~/.kctl/config`."""
    if os.environ.get(ENV_VAR):
        return [p for p in search_paths() if p.exists()]
    found = [p for p in kubectl_paths() if p.exists()]
    return found or [p for p in (legacy_path(),) if p.exists()]


def default_path() -> Path:
    """The file that decides kctl's current context: the first it reads, else where `cluster up` writes."""
    return next(iter(files_to_read()), write_path())


def write_path() -> Path:
    """Where `kctl cluster up` merges its context: `$KCTL_CONFIG`, else `$KUBECONFIG`'s first file
    (as kind does), else `~/.kube/config`."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else kubectl_paths()[0]


def _is_legacy(path: Path) -> bool:
    env = os.environ.get(ENV_VAR)
    return path == legacy_path() or (bool(env) and path == Path(str(env)).expanduser())


def grpc_target(server: str) -> str:
    """`https://10.0.0.1:6443` as gRPC wants it: `10.0.0.1:6443` (no scheme, no path)."""
    for scheme in ("https://", "http://", "grpc://", "grpcs://"):
        if server.startswith(scheme):
            server = server[len(scheme):]
            break
    return server.rstrip("/")


# ---------------------------------------------------------------- reading

def load(
    *,
    server: str | None = None,
    kubeconfig: str | os.PathLike[str] | None = None,
    token: str | None = None,
    namespace: str | None = None,
    context: str | None = None,
) -> ClientConfig:
    """Resolve the config from flags, the kubeconfig file(s) and defaults.

    A missing file is an error only when it was named explicitly or when no
    `server` was given (then there is nowhere to connect).
    """
    if kubeconfig is not None:
        paths = [Path(kubeconfig).expanduser()]
        if not paths[0].exists():
            raise ConfigError(f"kubeconfig {paths[0]} does not exist")
    else:
        paths = files_to_read()
    if paths:
        resolved = _resolve(_merge_files(paths), context, server_given=bool(server))
    elif server is None:
        where = " or ".join(str(p) for p in search_paths())
        raise ConfigError(f"no server to talk to: pass --server HOST:PORT, or write a kubeconfig at {where} "
                          f"(`kctl cluster up` writes one; or name one with --kubeconfig or ${KUBECONFIG_ENV})")
    else:
        resolved = ClientConfig(server="")
    if server:
        resolved.server = server
    if token:
        resolved.token = token
    if namespace:
        resolved.namespace = namespace
    resolved.server = grpc_target(resolved.server)
    if not resolved.server:
        raise ConfigError(f"the cluster of context {resolved.context!r} in {', '.join(map(str, paths))} "
                          "has no server")
    return resolved


def for_component(*, server: str | None = None, kubeconfig: str | os.PathLike[str] | None = None) -> ClientConfig:
    """A daemon's connection: its own kubeconfig (TLS), or plaintext to `server`.

    Unlike kctl, a daemon never falls back to the user's kubeconfig ($KUBECONFIG,
    ~/.kube/config, ~/.kctl/config): a scheduler started with only --server must not
    borrow the credentials of whoever last ran `kctl cluster up`. With a kubeconfig,
    an explicit `server` still overrides the file's (as kube-scheduler's --master does).
    """
    if kubeconfig:
        return load(server=server, kubeconfig=kubeconfig)
    if not server:
        raise ConfigError("no apiserver to talk to: pass --kubeconfig FILE (TLS, the component's credentials) "
                          "or --server HOST:PORT (plaintext, loopback only)")
    return ClientConfig(server=grpc_target(server))


@dataclass
class _Entry:
    """A named cluster, user or context, and the file it came from (its relative paths are relative to it)."""

    body: dict[str, Any]
    path: Path


@dataclass
class _Merged:
    current_context: str = ""
    sections: dict[str, dict[str, _Entry]] = field(default_factory=lambda: {s: {} for s, _ in SECTIONS})
    paths: list[Path] = field(default_factory=list)


def _merge_files(paths: list[Path]) -> _Merged:
    """kubectl's merge: the first file to set a name (or current-context) wins."""
    merged = _Merged(paths=paths)
    for path in paths:
        doc = read(path)
        merged.current_context = merged.current_context or str(doc.get("current-context") or "")
        for section, item in SECTIONS:
            for name, body in _named(doc, section, item, path).items():
                merged.sections[section].setdefault(name, _Entry(body, path))
    return merged


def read(path: Path) -> dict[str, Any]:
    """One kubeconfig file as a mapping (an empty file is an empty Config)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"kubeconfig {path}{where}: {getattr(exc, 'problem', None) or exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from exc
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"kubeconfig {path}: expected a mapping at the top level")
    if doc.get("kind", "Config") != "Config":
        raise ConfigError(f"kubeconfig {path}: kind is {doc.get('kind')!r}, expected Config")
    return doc


def _resolve(merged: _Merged, context_name: str | None, *, server_given: bool = False) -> ClientConfig:
    where = ", ".join(str(p) for p in merged.paths)
    contexts, clusters, users = (merged.sections[s] for s in ("contexts", "clusters", "users"))
    name = context_name or merged.current_context
    if not name:
        if len(contexts) == 1:
            name = next(iter(contexts))
        else:
            raise ConfigError(f"kubeconfig {where}: current-context is not set (pass --context)")
    if name not in contexts:
        raise ConfigError(f'kubeconfig {where}: context "{name}" does not exist')
    ctx = contexts[name].body

    cluster_name = str(ctx.get("cluster", ""))
    if cluster_name not in clusters:
        raise ConfigError(f'kubeconfig {where}: cluster "{cluster_name}" (context "{name}") does not exist')
    cluster = clusters[cluster_name]

    user_name = str(ctx.get("user", ""))
    if user_name and user_name not in users:
        raise ConfigError(f'kubeconfig {where}: user "{user_name}" (context "{name}") does not exist')
    user = users.get(user_name, _Entry({}, cluster.path))

    certificate = _material(user.body, "client-certificate", user.path)
    token = _token(user.body, user.path)
    # With --server the file lends only credentials, CA and namespace: its gRPC address does not matter.
    endpoints = GrpcEndpoints("") if server_given else grpc_endpoints(cluster.body, cluster.path, cluster_name)
    # A token-only identity (a joining node's bootstrap kubeconfig) dials the port that takes tokens.
    target = endpoints.token_server if token and certificate is None and endpoints.token_server else endpoints.server
    return ClientConfig(
        server=target,
        namespace=str(ctx.get("namespace") or DEFAULT_NAMESPACE),
        token=token,
        certificate_authority_data=_material(cluster.body, "certificate-authority", cluster.path),
        client_certificate_data=certificate,
        client_key_data=_material(user.body, "client-key", user.path),
        context=name,
        url=str(cluster.body.get("server") or ""),
    )


def grpc_endpoints(cluster: Mapping[str, Any], path: Path, name: str) -> GrpcEndpoints:
    """kctl's gRPC addresses from a cluster entry's `flotilla.dev/grpc` extension.

    Without it, `server` is the gRPC address when it says so (a bare HOST:PORT or grpc[s]://, as kctl-only
    kubeconfigs name it) or when the file is from kctl's legacy places (written before this format, with
    https://); an https:// server in any other file is the Kubernetes API of a cluster kctl cannot talk to.
    """
    for i, extension in enumerate(cluster.get("extensions") or []):
        if isinstance(extension, dict) and extension.get("name") == GRPC_EXTENSION:
            body = extension.get("extension")
            if not isinstance(body, dict) or not body.get("server"):
                raise ConfigError(f'kubeconfig {path}: cluster "{name}" extensions[{i}] ({GRPC_EXTENSION}) '
                                  "has no server (HOST:PORT of the apiserver's gRPC port)")
            return GrpcEndpoints(grpc_target(str(body["server"])), grpc_target(str(body.get("tokenServer") or "")))
    server = str(cluster.get("server") or "")
    if "://" not in server or server.startswith(("grpc://", "grpcs://")) or _is_legacy(path):
        return GrpcEndpoints(grpc_target(server))
    legacy = legacy_path()
    hint = f"; a cluster made before this format is in {legacy} (--kubeconfig {legacy})" if legacy.exists() else ""
    raise ConfigError(f'kubeconfig {path}: cluster "{name}" ({server}) has no {GRPC_EXTENSION} extension: '
                      "kctl needs a Flotilla cluster's kubeconfig (the one `kctl cluster up` writes), "
                      f"or --server HOST:PORT{hint}")


def _named(doc: dict[str, Any], section: str, item: str, path: Path) -> dict[str, dict[str, Any]]:
    """`clusters: [{name: a, cluster: {...}}]` as {"a": {...}}."""
    entries = doc.get(section) or []
    if not isinstance(entries, list):
        raise ConfigError(f"kubeconfig {path}: {section} must be a list")
    out: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get(item, {}), dict):
            raise ConfigError(f"kubeconfig {path}: {section}[{i}] must be a mapping with a {item!r} mapping")
        out[str(entry.get("name", ""))] = entry.get(item) or {}
    return out


def _token(user: dict[str, Any], path: Path) -> str | None:
    if user.get("token"):
        return str(user["token"])
    if user.get("tokenFile"):
        return (path.parent / str(user["tokenFile"])).expanduser().read_text().strip()
    return None


def _material(section: dict[str, Any], key: str, path: Path) -> bytes | None:
    """PEM bytes from `KEY-data` (base64) or from the file `KEY` names (relative to the kubeconfig)."""
    inline = section.get(f"{key}-data")
    if inline:
        try:
            return base64.b64decode(str(inline), validate=True)
        except binascii.Error as exc:
            raise ConfigError(f"kubeconfig {path}: {key}-data is not valid base64") from exc
    file = section.get(key)
    if file:
        target = (path.parent / str(file)).expanduser()
        try:
            return target.read_bytes()
        except OSError as exc:
            raise ConfigError(f"kubeconfig {path}: cannot read {key} {target}: {exc.strerror}") from exc
    return None


# ---------------------------------------------------------------- writing

def kubeconfig(name: str, server: str, ca_pem: bytes, grpc_endpoints: GrpcEndpoints, *,
               client_certificate: bytes | None = None, client_key: bytes | None = None,
               token: str | None = None, namespace: str = DEFAULT_NAMESPACE,
               user: str | None = None) -> dict[str, Any]:
    """A self-contained kubeconfig for one identity (CA and credentials inline, so it can be copied as it is):
    cluster and context called `name`, the user entry `user` (default: `name` too), the context current."""
    user_name = user or name
    identity: dict[str, str] = {}
    if client_certificate is not None and client_key is not None:
        identity["client-certificate-data"] = base64.b64encode(client_certificate).decode()
        identity["client-key-data"] = base64.b64encode(client_key).decode()
    if token:
        identity["token"] = token
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": name, "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode(),
            "extensions": [grpc_endpoints.extension()]}}],
        "users": [{"name": user_name, "user": identity}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user_name, "namespace": namespace}}],
        "current-context": name,
    }


def dump(doc: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(doc), sort_keys=False)


def merge(path: Path, entries: Mapping[str, Any], *, set_current: bool = True) -> None:
    """Add (or replace, by name) `entries`' clusters, users and contexts in the kubeconfig at `path` and make
    its current context current; every other entry and setting of the file stays. Written 0600."""
    with _locked(path):
        doc = read(path) if path.exists() else {"apiVersion": "v1", "kind": "Config", "preferences": {}}
        for section, item in SECTIONS:
            _named(dict(entries), section, item, path)  # refuse a malformed source before touching the file
            ours = [e for e in entries.get(section) or []]
            names = {e.get("name") for e in ours}
            kept = [e for e in doc.get(section) or [] if not (isinstance(e, dict) and e.get("name") in names)]
            doc[section] = kept + ours
        if set_current and entries.get("current-context"):
            doc["current-context"] = entries["current-context"]
        _write_private(path, dump(doc).encode())


def remove(path: Path, name: str) -> bool:
    """Take the cluster, user and context called `name` out of the kubeconfig at `path` (and current-context,
    if it was that context); everything else stays. False when the file named none of them."""
    if not path.exists():
        return False
    with _locked(path):
        doc = read(path)
        removed = False
        for section, _ in SECTIONS:
            entries = doc.get(section) or []
            kept = [e for e in entries if not (isinstance(e, dict) and e.get("name") == name)]
            removed = removed or len(kept) != len(entries)
            doc[section] = kept
        if doc.get("current-context") == name:
            doc["current-context"] = ""
            removed = True
        if removed:
            _write_private(path, dump(doc).encode())
        return removed


def _write_private(path: Path, data: bytes) -> None:
    """Replace the file at once (a reader never sees half of it), readable by its owner only."""
    path = path.resolve()  # a symlinked ~/.kube/config stays a symlink: its target is rewritten
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


@contextlib.contextmanager
def _locked(path: Path, timeout: float = 10.0) -> Iterator[None]:
    """kubectl's lock on a kubeconfig it rewrites: `<file>.lock`, created exclusively, removed after."""
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                raise ConfigError(f"kubeconfig {path} is locked by {lock} (another kubectl or kctl is writing it; "
                                  "remove the lock file if none is)") from None
            time.sleep(0.05)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
