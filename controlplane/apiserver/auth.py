"""Authentication and authorisation seams of the apiserver.

Every request passes `authenticate` (who is calling?) and then `authorize`
(may they do this verb on this resource?), as in kube-apiserver:

- over TLS, a client certificate signed by the cluster CA names the user (CN)
  and groups (O); a bearer token from the static token file names them too,
  and so does a bootstrap token (a Secret in kube-system, client/bootstrap.py)
  for a joining node, and a service-account token (a JWT this apiserver's key
  signed, serviceaccount/); a request with none is refused with UNAUTHENTICATED.
  Python's gRPC can either require and verify client certificates or not ask
  for them at all, so certificates are taken on one TLS port (mTLS) and tokens
  on another;
- on the insecure loopback port (for daemons on the master until they carry
  credentials), the caller is on this host and counts as the local admin.

Both transports hand the authenticators the same `Credentials` (was the
connection TLS, which verified client certificate, which bearer token):
`credentials_of` reads them off a gRPC call, the HTTP app off its request, so
the rules above are written once.

Authorisers: AlwaysAllow, or RBAC (controlplane/apiserver/rbac.py).
"""

from __future__ import annotations

import csv
import hmac
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID
from google.protobuf.message import Message

from client import bootstrap
from proto import core_pb2
from proto.errors import Unauthorized

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Attributes:
    """What a request wants to do, in RBAC's words."""

    user: UserInfo
    verb: str  # get, list, watch, create, update, patch, delete
    resource: str
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    api_group: str = ""


@dataclass(frozen=True)
class Credentials:
    """What a request presented, whichever transport carried it."""

    secure: bool  # it came over TLS (else: the loopback plaintext port)
    certificate: UserInfo | None = None  # the identity of a client certificate the TLS layer verified
    bearer_token: str | None = None  # `Authorization: Bearer <token>`


class Authenticator(Protocol):
    def authenticate(self, credentials: Credentials) -> UserInfo:
        """The caller's identity; raise proto.errors.Unauthorized if there is none."""
        ...


class Authorizer(Protocol):
    def authorize(self, attributes: Attributes) -> None:
        """Return if allowed; raise proto.errors.Forbidden naming user, verb and resource if not."""
        ...


class LoopbackAuthenticator:
    """The insecure port binds loopback only, so a caller is someone on this host."""

    def authenticate(self, credentials: Credentials) -> UserInfo:
        return UserInfo("system:admin", (MASTERS, AUTHENTICATED))


@lru_cache(maxsize=1024)
def identity_of(cert_pem: bytes) -> UserInfo:
    """The user a client certificate names: CN is the user, each O a group."""
    return _identity(x509.load_pem_x509_certificate(cert_pem))


@lru_cache(maxsize=1024)
def identity_of_der(cert_der: bytes) -> UserInfo:
    """The same, for the DER bytes the HTTP listener's TLS layer hands over (a few certificates, many requests)."""
    return _identity(x509.load_der_x509_certificate(cert_der))


def _identity(cert: x509.Certificate) -> UserInfo:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    groups = tuple(str(o.value) for o in orgs)
    return UserInfo(str(cns[0].value) if cns else "", (*groups, AUTHENTICATED))


def parse_bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value.

    The scheme is case-insensitive (RFC 7235), as kube-apiserver reads it: the Python
    client's in-cluster config sends `bearer <token>`.
    """
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def bearer_token(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            return parse_bearer(value)
    return None


def credentials_of(context: grpc.aio.ServicerContext) -> Credentials:
    """A gRPC call's credentials (gRPC puts the peer certificate in the auth context only once verified)."""
    auth = context.auth_context() or {}
    secure = b"ssl" in (auth.get("transport_security_type") or ())
    pem = auth.get("x509_pem_cert")
    return Credentials(secure, identity_of(pem[0]) if pem else None, bearer_token(context))


class TokenFile:
    """Static tokens, kube-apiserver's --token-auth-file format: token,user,uid,"group1,group2"."""

    def __init__(self, path: Path) -> None:
        self.users: dict[str, UserInfo] = {}
        with open(path, newline="") as handle:
            for row in csv.reader(handle):
                if not row or row[0].startswith("#"):
                    continue
                if len(row) < 2:
                    raise ValueError(f"{path}: each line needs at least token,user")
                groups = tuple(g for g in (row[3].split(",") if len(row) > 3 else []) if g)
                self.users[row[0]] = UserInfo(row[1], (*groups, AUTHENTICATED))

    def lookup(self, token: str) -> UserInfo | None:
        return self.users.get(token)


class BootstrapTokens:
    """Bootstrap tokens (`<id>.<secret>`) from kube-system Secrets, as kube-apiserver's
    --enable-bootstrap-token-auth: user `system:bootstrap:<id>`, groups `system:bootstrappers`
    and the Secret's auth-extra-groups.

    The Secrets are read from an in-memory copy the apiserver keeps current by
    watching its own registry (`observe`/`forget`), never from etcd per request.
    """

    def __init__(self) -> None:
        self.secrets: dict[str, core_pb2.Secret] = {}  # token id -> Secret

    def observe(self, event_type: str, obj: Message) -> None:
        if not isinstance(obj, core_pb2.Secret) or not bootstrap.is_token_secret(obj):
            return
        token_id = obj.metadata.name[len(bootstrap.TOKEN_SECRET_PREFIX):]
        if event_type == "DELETED":
            self.secrets.pop(token_id, None)
        else:
            self.secrets[token_id] = obj

    def forget(self) -> None:
        self.secrets.clear()

    def lookup(self, token: str) -> UserInfo | None:
        """The token's user; None if it is not a bootstrap token we know; Unauthorized if it is no longer valid."""
        try:
            parsed = bootstrap.parse_token(token)
        except bootstrap.TokenFormatError:
            return None
        secret = self.secrets.get(parsed.id)
        if secret is None or bootstrap.data_text(secret, bootstrap.KEY_TOKEN_ID) != parsed.id:
            return None
        stored = bootstrap.data_text(secret, bootstrap.KEY_TOKEN_SECRET)
        if not hmac.compare_digest(stored.encode(), parsed.secret.encode()):
            return None
        if secret.metadata.HasField("deletion_timestamp"):
            raise Unauthorized(f"Unauthorized: bootstrap token {parsed.id} is being deleted")
        if bootstrap.is_expired(secret):
            raise Unauthorized(f"Unauthorized: bootstrap token {parsed.id} has expired")
        if "authentication" not in bootstrap.usages_of(secret):
            raise Unauthorized(f"Unauthorized: bootstrap token {parsed.id} may not be used for authentication")
        extra = [g for g in bootstrap.extra_groups_of(secret) if bootstrap.EXTRA_GROUP_PATTERN.match(g)]
        return UserInfo(bootstrap.BOOTSTRAP_USER_PREFIX + parsed.id,
                        (bootstrap.BOOTSTRAPPERS_GROUP, *extra, AUTHENTICATED))


class TokenAuthenticator(Protocol):
    def lookup(self, token: str) -> UserInfo | None:
        """The token's user; None if the token is not of this kind; Unauthorized if it is but is no longer valid."""
        ...


class RequestAuthenticator:
    """TLS port: a verified client certificate, else a known bearer token, else refused.

    Bearer tokens are tried in order: the static token file, bootstrap tokens, then
    service-account tokens (serviceaccount/authenticator.py: signed JWTs).
    """

    def __init__(self, tokens: TokenFile | None = None, bootstrap_tokens: BootstrapTokens | None = None,
                 service_account_tokens: TokenAuthenticator | None = None) -> None:
        self.tokens = tokens
        self.bootstrap_tokens = bootstrap_tokens
        self.service_account_tokens = service_account_tokens

    def authenticate(self, credentials: Credentials) -> UserInfo:
        user = credentials.certificate
        if user is not None and user.name:
            return user
        token = credentials.bearer_token
        if token is not None:
            found = self.tokens.lookup(token) if self.tokens else None
            if found is None and self.bootstrap_tokens is not None:
                found = self.bootstrap_tokens.lookup(token)
            if found is None and self.service_account_tokens is not None:
                found = self.service_account_tokens.lookup(token)
            if found is None:
                raise Unauthorized("Unauthorized: invalid bearer token")
            return found
        raise Unauthorized("Unauthorized: anonymous requests are refused; present a client certificate "
                           "or a bearer token")


class AlwaysAllow:
    def authorize(self, attributes: Attributes) -> None:
        return None


class ByTransport:
    """Pick the authenticator by the port a call came in on: TLS, or the loopback insecure port."""

    def __init__(self, secure: Authenticator, insecure: Authenticator | None) -> None:
        self.secure = secure
        self.insecure = insecure

    def authenticate(self, credentials: Credentials) -> UserInfo:
        if credentials.secure:
            return self.secure.authenticate(credentials)
        if self.insecure is None:
            raise Unauthorized("Unauthorized: this apiserver has no insecure port")
        return self.insecure.authenticate(credentials)
