"""Authentication and authorisation seams of the apiserver.

Every request passes `authenticate` (who is calling?) and then `authorize`
(may they do this verb on this resource?), as in kube-apiserver:

- over TLS, a client certificate signed by the cluster CA names the user (CN)
  and groups (O); a bearer token from the static token file names them too;
  a request with neither is refused with UNAUTHENTICATED. Python's gRPC can
  either require and verify client certificates or not ask for them at all,
  so certificates are taken on one TLS port (mTLS) and tokens on another;
- on the insecure loopback port (for daemons on the master until they carry
  credentials), the caller is on this host and counts as the local admin.

Authorisers: AlwaysAllow, or RBAC (controlplane/apiserver/rbac.py).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

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


class Authenticator(Protocol):
    def authenticate(self, context: grpc.aio.ServicerContext) -> UserInfo:
        """The caller's identity; raise proto.errors.Unauthorized if there is none."""
        ...


class Authorizer(Protocol):
    def authorize(self, attributes: Attributes) -> None:
        """Return if allowed; raise proto.errors.Forbidden naming user, verb and resource if not."""
        ...


class LoopbackAuthenticator:
    """The insecure port binds loopback only, so a caller is someone on this host."""

    def authenticate(self, context: grpc.aio.ServicerContext) -> UserInfo:
        return UserInfo("system:admin", (MASTERS, AUTHENTICATED))


def identity_of(cert_pem: bytes) -> UserInfo:
    """The user a client certificate names: CN is the user, each O a group."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    groups = tuple(str(o.value) for o in orgs)
    return UserInfo(str(cns[0].value) if cns else "", (*groups, AUTHENTICATED))


def bearer_token(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer "):].strip()
    return None


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


class RequestAuthenticator:
    """TLS port: a verified client certificate, else a known bearer token, else refused."""

    def __init__(self, tokens: TokenFile | None = None) -> None:
        self.tokens = tokens

    def authenticate(self, context: grpc.aio.ServicerContext) -> UserInfo:
        auth = context.auth_context() or {}
        # gRPC puts the peer certificate here only when it verified it against the client CA.
        pem = auth.get("x509_pem_cert")
        if pem:
            user = identity_of(pem[0])
            if user.name:
                return user
        token = bearer_token(context)
        if token is not None:
            found = self.tokens.lookup(token) if self.tokens else None
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

    def authenticate(self, context: grpc.aio.ServicerContext) -> UserInfo:
        auth = context.auth_context() or {}
        if b"ssl" in (auth.get("transport_security_type") or ()):
            return self.secure.authenticate(context)
        if self.insecure is None:
            raise Unauthorized("Unauthorized: this apiserver has no insecure port")
        return self.insecure.authenticate(context)
