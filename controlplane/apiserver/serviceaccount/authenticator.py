"""Authenticating service-account tokens: a valid JWT of ours names a service account, while it exists.

As kube-apiserver's service-account authenticator with its bound-token checks, a
token authenticates as `system:serviceaccount:<ns>:<name>` in the groups
`system:serviceaccounts`, `system:serviceaccounts:<ns>` and `system:authenticated`
only while

- the service account it names exists with the uid it was issued for, and
- the pod it is bound to (if any) exists with that uid — so a pod's token dies with the pod.

Which accounts and pods exist is read from copies the apiserver keeps current by
watching its own registry (`observe_*`/`forget_*`), never from etcd per request:
the watch delivers a deletion within milliseconds, the same freshness Kubernetes'
cached lookups have.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message

from controlplane.apiserver.auth import AUTHENTICATED, UserInfo
from controlplane.apiserver.serviceaccount import jwt
from controlplane.apiserver.serviceaccount.tokens import ServiceAccountClaims, TokenIssuer, groups, username
from proto import core_pb2
from proto.errors import Unauthorized


class ServiceAccountTokens:
    """Bearer tokens the TokenIssuer signed, checked against what is stored now."""

    def __init__(self, issuer: TokenIssuer) -> None:
        self.issuer = issuer
        self.accounts: dict[tuple[str, str], str] = {}  # (namespace, name) -> uid
        self.pods: dict[tuple[str, str], tuple[str, str]] = {}  # (namespace, name) -> (uid, nodeName)

    # ------------------------------------------------------------------ the apiserver's copies

    def observe_account(self, event_type: str, obj: Message) -> None:
        if isinstance(obj, core_pb2.ServiceAccount):
            key = (obj.metadata.namespace, obj.metadata.name)
            if event_type == "DELETED":
                self.accounts.pop(key, None)
            else:
                self.accounts[key] = obj.metadata.uid

    def forget_accounts(self) -> None:
        self.accounts.clear()

    def observe_pod(self, event_type: str, obj: Message) -> None:
        if isinstance(obj, core_pb2.Pod):
            key = (obj.metadata.namespace, obj.metadata.name)
            if event_type == "DELETED":
                self.pods.pop(key, None)
            else:
                self.pods[key] = (obj.metadata.uid, obj.spec.node_name)

    def forget_pods(self) -> None:
        self.pods.clear()

    # ------------------------------------------------------------------ authentication

    def lookup(self, token: str, audiences: Sequence[str] | None = None) -> UserInfo | None:
        """The account a token names; None if it is not one of ours; Unauthorized if it is no longer valid."""
        try:
            claims = self.issuer.validate(token, audiences)
        except jwt.InvalidToken as exc:
            raise Unauthorized(f"Unauthorized: {exc}") from None
        if claims is None:
            return None
        self.check_live(claims)
        return UserInfo(username(claims.namespace, claims.name), (*groups(claims.namespace), AUTHENTICATED))

    def check_live(self, claims: ServiceAccountClaims) -> None:
        """Refuse a token whose account or bound pod is gone (or was replaced by a namesake)."""
        uid = self.accounts.get((claims.namespace, claims.name))
        if uid is None:
            raise Unauthorized(f'Unauthorized: service account "{claims.namespace}/{claims.name}" has been deleted')
        if claims.uid and uid != claims.uid:
            raise Unauthorized(f"Unauthorized: service account UID ({claims.uid}) does not match claim ({uid})")
        bound = claims.bound
        if bound is not None and bound.kind == "Pod":
            pod = self.pods.get((claims.namespace, bound.name))
            if pod is None:
                raise Unauthorized(f'Unauthorized: pod "{claims.namespace}/{bound.name}" the token is bound to '
                                   "has been deleted")
            if bound.uid and pod[0] != bound.uid:
                raise Unauthorized(f"Unauthorized: pod UID ({pod[0]}) does not match claim ({bound.uid})")
