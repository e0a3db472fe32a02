"""The shapes of node bootstrap, shared by the apiserver, the controllers, kctl and the kubelet.

A node joins with a bootstrap token `<token-id>.<token-secret>` (6 and 16
characters of [a-z0-9]). The token lives in a Secret exactly as Kubernetes keeps
it: `kube-system/bootstrap-token-<token-id>`, type `bootstrap.kubernetes.io/token`,
data keys token-id, token-secret, expiration (RFC 3339), usage-bootstrap-*,
auth-extra-groups and description. The apiserver authenticates such a token as
user `system:bootstrap:<token-id>` in group `system:bootstrappers`; the token
cleaner deletes the Secret once it expires.

Flotilla adds one optional key, `node-names` (comma-separated): the nodes the
token is meant for (`kctl token create --node NAME`; `kctl cluster up` names
its workers). The CSR approver then approves a node identity requested with
that token only for one of those names, so a token leaked from one new node
cannot mint the identity of another; without the key, any name, as kubeadm.

What a joining node may read about the cluster is the `kube-public/cluster-info`
ConfigMap (as kubeadm keeps it): a kubeconfig under the key `kubeconfig` naming
the apiserver's client-certificate address and the cluster CA.

This module holds only those formats; who enforces what is elsewhere
(controlplane/apiserver/auth.py, controlplane/controllers/tokencleaner.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import secrets
from dataclasses import dataclass

from proto import certificates_pb2, core_pb2

TOKEN_SECRET_TYPE = "bootstrap.kubernetes.io/token"
TOKEN_SECRET_PREFIX = "bootstrap-token-"
TOKEN_NAMESPACE = "kube-system"
BOOTSTRAP_USER_PREFIX = "system:bootstrap:"
BOOTSTRAPPERS_GROUP = "system:bootstrappers"
# kubeadm's default extra group for node-joining tokens.
DEFAULT_EXTRA_GROUP = "system:bootstrappers:kubeadm:default-node-token"
EXTRA_GROUP_PATTERN = re.compile(r"^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$")

# The Secret's data keys (k8s.io/cluster-bootstrap/token/api).
KEY_TOKEN_ID = "token-id"
KEY_TOKEN_SECRET = "token-secret"
KEY_EXPIRATION = "expiration"
KEY_DESCRIPTION = "description"
KEY_EXTRA_GROUPS = "auth-extra-groups"
KEY_NODE_NAMES = "node-names"  # Flotilla's: the nodes the token may obtain an identity for
USAGE_PREFIX = "usage-bootstrap-"
USAGES = ("authentication", "signing")

TOKEN_PATTERN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
# A Node's name: a DNS-1123 subdomain.
NODE_NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

CLUSTER_INFO_NAMESPACE = "kube-public"
CLUSTER_INFO_NAME = "cluster-info"
CLUSTER_INFO_KEY = "kubeconfig"
# Flotilla's addition: the apiserver's token address, where `kctl join` connects (Python gRPC
# takes bearer tokens and client certificates on separate ports; the kubeconfig names the latter).
CLUSTER_INFO_BOOTSTRAP_SERVER_KEY = "bootstrap-server"


class TokenFormatError(ValueError):
    """A string that is not `<6 chars>.<16 chars>` of [a-z0-9]."""


@dataclass(frozen=True)
class Token:
    id: str
    secret: str

    def __str__(self) -> str:
        return f"{self.id}.{self.secret}"

    @property
    def secret_name(self) -> str:
        return TOKEN_SECRET_PREFIX + self.id


def parse_token(text: str) -> Token:
    match = TOKEN_PATTERN.match(text)
    if match is None:
        raise TokenFormatError(f"the bootstrap token {text[:7]!r}... does not match the format "
                               r"[a-z0-9]{6}.[a-z0-9]{16}")
    return Token(match.group(1), match.group(2))


def generate_token() -> Token:
    return Token("".join(secrets.choice(_ALPHABET) for _ in range(6)),
                 "".join(secrets.choice(_ALPHABET) for _ in range(16)))


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def token_secret(token: Token, *, ttl: dt.timedelta | None, description: str = "",
                 extra_groups: tuple[str, ...] = (DEFAULT_EXTRA_GROUP,),
                 usages: tuple[str, ...] = USAGES, node_names: tuple[str, ...] = (),
                 now: dt.datetime | None = None) -> core_pb2.Secret:
    """The Secret that makes `token` valid; `ttl=None` (or zero) never expires.

    `node_names`, when given, are the only nodes whose identity the token may obtain.
    """
    for name in node_names:
        if len(name) > 253 or not NODE_NAME_PATTERN.match(name):
            raise ValueError(f"node name {name!r} must be a lowercase DNS subdomain (a-z, 0-9, '-', '.')")
    for group in extra_groups:
        if not EXTRA_GROUP_PATTERN.match(group):
            raise ValueError(f"extra group {group!r} must start with system:bootstrappers: and contain only "
                             "[a-z0-9:-]")
    unknown = [u for u in usages if u not in USAGES]
    if unknown:
        raise ValueError(f"unknown token usages {', '.join(unknown)} (known: {', '.join(USAGES)})")
    secret = core_pb2.Secret(api_version="v1", kind="Secret", type=TOKEN_SECRET_TYPE)
    secret.metadata.name, secret.metadata.namespace = token.secret_name, TOKEN_NAMESPACE
    data = {KEY_TOKEN_ID: token.id, KEY_TOKEN_SECRET: token.secret}
    if description:
        data[KEY_DESCRIPTION] = description
    if ttl:
        data[KEY_EXPIRATION] = rfc3339((now or dt.datetime.now(dt.UTC)) + ttl)
    for usage in usages:
        data[USAGE_PREFIX + usage] = "true"
    if extra_groups:
        data[KEY_EXTRA_GROUPS] = ",".join(extra_groups)
    if node_names:
        data[KEY_NODE_NAMES] = ",".join(node_names)
    for key, value in data.items():
        secret.data[key] = value.encode()
    return secret


def is_token_secret(secret: core_pb2.Secret) -> bool:
    return (secret.type == TOKEN_SECRET_TYPE and secret.metadata.namespace == TOKEN_NAMESPACE
            and secret.metadata.name.startswith(TOKEN_SECRET_PREFIX))


def data_text(secret: core_pb2.Secret, key: str) -> str:
    return secret.data[key].decode(errors="replace") if key in secret.data else ""


def expiration(secret: core_pb2.Secret) -> dt.datetime | None:
    """When the token expires; None if never. A malformed date counts as already expired."""
    text = data_text(secret, KEY_EXPIRATION)
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime.fromtimestamp(0, dt.UTC)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def is_expired(secret: core_pb2.Secret, now: dt.datetime | None = None) -> bool:
    when = expiration(secret)
    return when is not None and when <= (now or dt.datetime.now(dt.UTC))


def usages_of(secret: core_pb2.Secret) -> list[str]:
    return [u for u in USAGES if data_text(secret, USAGE_PREFIX + u) == "true"]


def extra_groups_of(secret: core_pb2.Secret) -> list[str]:
    return [g.strip() for g in data_text(secret, KEY_EXTRA_GROUPS).split(",") if g.strip()]


def node_names_of(secret: core_pb2.Secret) -> list[str]:
    """The nodes the token is meant for; empty when it names none (any node may use it)."""
    return [n.strip() for n in data_text(secret, KEY_NODE_NAMES).split(",") if n.strip()]


def token_id_of_user(user: str) -> str | None:
    """The token id a bootstrap user name (`system:bootstrap:<id>`) stands for; None for other users."""
    token_id = user.removeprefix(BOOTSTRAP_USER_PREFIX)
    return token_id if user.startswith(BOOTSTRAP_USER_PREFIX) and token_id else None


# ---------------------------------------------------------------- cluster-info


def cluster_info(server: str, ca_pem: bytes, bootstrap_server: str = "") -> core_pb2.ConfigMap:
    """kube-public/cluster-info: where the client-certificate port is, the CA that signs it, and
    where bootstrap tokens are taken."""
    import yaml  # here, not at the top: the apiserver imports this module for tokens and never needs YAML

    kubeconfig = yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "", "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "contexts": [], "users": [], "current-context": "",
    }, sort_keys=False)
    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    cm.metadata.name, cm.metadata.namespace = CLUSTER_INFO_NAME, CLUSTER_INFO_NAMESPACE
    cm.data[CLUSTER_INFO_KEY] = kubeconfig
    if bootstrap_server:
        cm.data[CLUSTER_INFO_BOOTSTRAP_SERVER_KEY] = bootstrap_server
    return cm


def read_cluster_info(cm: core_pb2.ConfigMap) -> tuple[str, bytes]:
    """(server, CA PEM) from a cluster-info ConfigMap; ValueError naming what is missing."""
    import yaml  # lazily, as in cluster_info

    try:
        doc = yaml.safe_load(cm.data.get(CLUSTER_INFO_KEY, ""))
        cluster = doc["clusters"][0]["cluster"]
        return str(cluster["server"]), base64.b64decode(cluster["certificate-authority-data"], validate=True)
    except (yaml.YAMLError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError(f"the {CLUSTER_INFO_NAMESPACE}/{CLUSTER_INFO_NAME} ConfigMap has no usable "
                         f"{CLUSTER_INFO_KEY!r} (a kubeconfig with one cluster's server and "
                         f"certificate-authority-data): {exc}") from exc


# ---------------------------------------------------------------- certificate signing requests

SIGNER_KUBE_APISERVER_CLIENT = "kubernetes.io/kube-apiserver-client"
SIGNER_KUBELET_CLIENT = "kubernetes.io/kube-apiserver-client-kubelet"
SIGNER_KUBELET_SERVING = "kubernetes.io/kubelet-serving"
SIGNER_LEGACY_UNKNOWN = "kubernetes.io/legacy-unknown"
# The kubernetes.io signers; any other domain may name its own (it will sign its own CSRs).
KUBERNETES_SIGNERS = (SIGNER_KUBE_APISERVER_CLIENT, SIGNER_KUBELET_CLIENT, SIGNER_KUBELET_SERVING,
                      SIGNER_LEGACY_UNKNOWN)
# certificates.k8s.io/v1 KeyUsage values Flotilla's signer understands.
KEY_USAGES = ("digital signature", "key encipherment", "key agreement")
EXTENDED_KEY_USAGES = ("client auth", "server auth")
NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"


def new_csr(request_pem: bytes, signer: str, usages: tuple[str, ...] = ("digital signature", "client auth"), *,
            name: str = "", generate_name: str = "") -> certificates_pb2.CertificateSigningRequest:
    """A CertificateSigningRequest for a PEM request (the apiserver fills in who asked)."""
    csr = certificates_pb2.CertificateSigningRequest(api_version="certificates.k8s.io/v1",
                                                     kind="CertificateSigningRequest")
    csr.metadata.name, csr.metadata.generate_name = name, generate_name
    csr.spec.request, csr.spec.signer_name = request_pem, signer
    csr.spec.usages.extend(usages)
    return csr


def csr_condition(csr: certificates_pb2.CertificateSigningRequest,
                  type_: str) -> certificates_pb2.CertificateSigningRequestCondition | None:
    """The request's condition of this type (Approved, Denied, Failed), if it has one."""
    return next((c for c in csr.status.conditions if c.type == type_), None)


def add_csr_condition(csr: certificates_pb2.CertificateSigningRequest, type_: str, reason: str,
                      message: str) -> None:
    now = dt.datetime.now(dt.UTC)
    cond = csr.status.conditions.add(type=type_, status="True", reason=reason, message=message)
    cond.last_update_time.FromDatetime(now)
    cond.last_transition_time.FromDatetime(now)
