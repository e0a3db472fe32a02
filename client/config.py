"""Kubeconfig: where the apiserver is and who we are, for kctl and the daemons.

The file has kubectl's shape (`apiVersion: v1`, `kind: Config`): named
`clusters` (server address and CA), named `users` (bearer token or client
certificate) and named `contexts` that pair a cluster with a user and a default
namespace; `current-context` picks one. Certificates may be given inline
(`*-data`, base64) or as paths relative to the file.

Precedence, as in kubectl: an explicit server (`--server`) wins; the file is
`--kubeconfig`, else `$KCTL_CONFIG`, else `~/.kctl/config`. An explicit token or
namespace overrides the context's.

TLS is the seam left for later: when CA data is present, `credentials()` builds
gRPC SSL channel credentials and `client()` passes them to the Client, which then
opens a secure channel. Until the apiserver serves TLS, configs carry no CA.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from client.api import Client

ENV_VAR = "KCTL_CONFIG"
DEFAULT_NAMESPACE = "default"


class ConfigError(Exception):
    """The kubeconfig is missing, malformed, or names something it does not define."""


@dataclass
class ClientConfig:
    """Everything needed to open a Client: the resolved cluster, user and namespace."""

    server: str
    namespace: str = DEFAULT_NAMESPACE
    token: str | None = None
    certificate_authority_data: bytes | None = None
    client_certificate_data: bytes | None = None
    client_key_data: bytes | None = None
    context: str = ""

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


def default_path() -> Path:
    """`$KCTL_CONFIG`, else `~/.kctl/config`."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".kctl" / "config"


def grpc_target(server: str) -> str:
    """`https://10.0.0.1:6443` as gRPC wants it: `10.0.0.1:6443` (no scheme, no path)."""
    for scheme in ("https://", "http://", "grpc://", "grpcs://"):
        if server.startswith(scheme):
            server = server[len(scheme):]
            break
    return server.rstrip("/")


def load(
    *,
    server: str | None = None,
    kubeconfig: str | os.PathLike[str] | None = None,
    token: str | None = None,
    namespace: str | None = None,
    context: str | None = None,
) -> ClientConfig:
    """Resolve the config from flags, the kubeconfig file and defaults.

    A missing file is an error only when it was named explicitly or when no
    `server` was given (then there is nowhere to connect).
    """
    path = Path(kubeconfig).expanduser() if kubeconfig else default_path()
    explicit = kubeconfig is not None
    if path.exists():
        resolved = _from_file(path, context)
    elif explicit:
        raise ConfigError(f"kubeconfig {path} does not exist")
    elif server is None:
        raise ConfigError(
            f"no server to talk to: pass --server HOST:PORT, or write a kubeconfig at {path} "
            f"(or name one with --kubeconfig or ${ENV_VAR})")
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
        raise ConfigError(f"the cluster of context {resolved.context!r} in {path} has no server")
    return resolved


def for_component(*, server: str | None = None, kubeconfig: str | os.PathLike[str] | None = None) -> ClientConfig:
    """A daemon's connection: its own kubeconfig (TLS), or plaintext to `server`.

    Unlike kctl, a daemon never falls back to the user's kubeconfig ($KCTL_CONFIG,
    ~/.kctl/config): a scheduler started with only --server must not borrow the
    credentials of whoever last ran `kctl cluster up`. With a kubeconfig, an explicit
    `server` still overrides the file's (as kube-scheduler's --master does).
    """
    if kubeconfig:
        return load(server=server, kubeconfig=kubeconfig)
    if not server:
        raise ConfigError("no apiserver to talk to: pass --kubeconfig FILE (TLS, the component's credentials) "
                          "or --server HOST:PORT (plaintext, loopback only)")
    return ClientConfig(server=grpc_target(server))


def _from_file(path: Path, context_name: str | None) -> ClientConfig:
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

    name = context_name or doc.get("current-context") or ""
    contexts = _named(doc, "contexts", "context", path)
    if not name:
        if len(contexts) == 1:
            name = next(iter(contexts))
        else:
            raise ConfigError(f"kubeconfig {path}: current-context is not set")
    if name not in contexts:
        raise ConfigError(f'kubeconfig {path}: context "{name}" does not exist')
    ctx = contexts[name]

    clusters = _named(doc, "clusters", "cluster", path)
    cluster_name = ctx.get("cluster", "")
    if cluster_name not in clusters:
        raise ConfigError(f'kubeconfig {path}: cluster "{cluster_name}" (context "{name}") does not exist')
    cluster = clusters[cluster_name]

    users = _named(doc, "users", "user", path)
    user_name = ctx.get("user", "")
    if user_name and user_name not in users:
        raise ConfigError(f'kubeconfig {path}: user "{user_name}" (context "{name}") does not exist')
    user = users.get(user_name, {})

    base = path.parent
    return ClientConfig(
        server=str(cluster.get("server") or ""),
        namespace=str(ctx.get("namespace") or DEFAULT_NAMESPACE),
        token=_token(user, base),
        certificate_authority_data=_material(cluster, "certificate-authority", base, path),
        client_certificate_data=_material(user, "client-certificate", base, path),
        client_key_data=_material(user, "client-key", base, path),
        context=name,
    )


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


def _token(user: dict[str, Any], base: Path) -> str | None:
    if user.get("token"):
        return str(user["token"])
    if user.get("tokenFile"):
        return (base / str(user["tokenFile"])).expanduser().read_text().strip()
    return None


def _material(section: dict[str, Any], key: str, base: Path, path: Path) -> bytes | None:
    """PEM bytes from `KEY-data` (base64) or from the file `KEY` names."""
    inline = section.get(f"{key}-data")
    if inline:
        try:
            return base64.b64decode(str(inline), validate=True)
        except binascii.Error as exc:
            raise ConfigError(f"kubeconfig {path}: {key}-data is not valid base64") from exc
    file = section.get(key)
    if file:
        target = (base / str(file)).expanduser()
        try:
            return target.read_bytes()
        except OSError as exc:
            raise ConfigError(f"kubeconfig {path}: cannot read {key} {target}: {exc.strerror}") from exc
    return None
