"""Authentication and authorisation seams of the apiserver.

Every request passes `authenticate` (who is calling?) and then `authorize`
(may they do this verb on this resource?). Until the security work lands (TLS,
client certificates, tokens, RBAC), the apiserver only listens on loopback
and these default implementations treat every caller as the local admin;
replacing them is the whole change needed to harden the API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import grpc


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


class Authenticator(Protocol):
    def authenticate(self, context: grpc.aio.ServicerContext) -> UserInfo:
        """The caller's identity; raise proto.errors.Unauthorized if there is none."""
        ...


class Authorizer(Protocol):
    def authorize(self, attributes: Attributes) -> None:
        """Return if allowed; raise proto.errors.Forbidden naming user, verb and resource if not."""
        ...


class LoopbackAuthenticator:
    """Without TLS the server binds loopback only, so a caller is someone on this host."""

    def authenticate(self, context: grpc.aio.ServicerContext) -> UserInfo:
        return UserInfo("system:admin", ("system:masters", "system:authenticated"))


class AlwaysAllow:
    def authorize(self, attributes: Attributes) -> None:
        return None
