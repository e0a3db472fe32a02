"""Bound service-account tokens: the claims Kubernetes writes, issued and checked.

A token the apiserver issues (TokenRequest) carries, as kube-apiserver's:

    iss  the issuer (--service-account-issuer)       sub  system:serviceaccount:<ns>:<name>
    aud  its audiences                               exp, iat, nbf  seconds since the epoch
    jti  a unique id (audit logs name it)
    kubernetes.io: {namespace, serviceaccount: {name, uid}, pod: {name, uid}}   (pod: when bound to one)

`TokenIssuer.validate` accepts a token only if a configured key signed it, the
issuer is ours, it has not expired (nor is it early) and one of its audiences is
one the caller accepts (the apiserver's --api-audiences, or a TokenReview's). That
its service account and pod still exist is checked by the authenticator
(authenticator.py), which knows what is stored.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.apiserver.serviceaccount import jwt
from controlplane.apiserver.serviceaccount.keys import PublicKey, SigningKey

DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
USER_PREFIX = "system:serviceaccount:"
ALL_SERVICE_ACCOUNTS = "system:serviceaccounts"
CLAIMS_KEY = "kubernetes.io"
# Clock skew tolerated on nbf and exp, as go-jose's default leeway.
LEEWAY = 60


def username(namespace: str, name: str) -> str:
    return f"{USER_PREFIX}{namespace}:{name}"


def groups(namespace: str) -> tuple[str, str]:
    """The groups every token of an account in `namespace` carries (before system:authenticated)."""
    return ALL_SERVICE_ACCOUNTS, f"{ALL_SERVICE_ACCOUNTS}:{namespace}"


@dataclass(frozen=True)
class BoundObject:
    kind: str  # Pod or Secret
    name: str
    uid: str


@dataclass(frozen=True)
class ServiceAccountClaims:
    """What a valid token says about who holds it."""

    namespace: str
    name: str
    uid: str
    bound: BoundObject | None
    audiences: tuple[str, ...]
    expires: int
    token_id: str = ""


class TokenIssuer:
    """Signs tokens with one key; validates those signed by any of `public_keys`."""

    def __init__(self, key: SigningKey, *, issuer: str = DEFAULT_ISSUER, audiences: Sequence[str] = (),
                 public_keys: Sequence[PublicKey] = (), now: Callable[[], float] = time.time) -> None:
        self.key = key
        self.issuer = issuer
        self.audiences = tuple(audiences) or (issuer,)  # --api-audiences defaults to the issuer
        self.public_keys = [*public_keys] or [key.public]
        self.now = now

    def issue(self, claims: ServiceAccountClaims) -> str:
        now = int(self.now())
        private: dict[str, Any] = {"namespace": claims.namespace,
                                   "serviceaccount": {"name": claims.name, "uid": claims.uid}}
        if claims.bound is not None:
            private[claims.bound.kind.lower()] = {"name": claims.bound.name, "uid": claims.bound.uid}
        body = {"iss": self.issuer, "sub": username(claims.namespace, claims.name), "aud": list(claims.audiences),
                "exp": claims.expires, "iat": now, "nbf": now, "jti": claims.token_id or str(uuid.uuid4()),
                CLAIMS_KEY: private}
        return jwt.encode(body, self.key)

    def validate(self, token: str, audiences: Sequence[str] | None = None) -> ServiceAccountClaims | None:
        """The token's claims; None if it is no JWT of ours (another authenticator may know it).

        Raises jwt.InvalidToken when it looks like ours but fails: bad signature,
        expired, not yet valid, or for another audience.
        """
        try:
            parsed = jwt.parse(token)
        except jwt.MalformedToken:
            return None
        if parsed.claims.get("iss") != self.issuer:
            return None  # an OIDC token or another cluster's: not this authenticator's to judge
        claims = jwt.verify(parsed, self.public_keys)
        now = self.now()
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
        if not isinstance(exp, int) or now > exp + LEEWAY:
            raise jwt.InvalidToken("service account token has expired")
        if isinstance(nbf, int) and now < nbf - LEEWAY:
            raise jwt.InvalidToken("service account token is not valid yet")
        aud = claims.get("aud", [])
        token_audiences = (aud,) if isinstance(aud, str) else tuple(a for a in aud if isinstance(a, str))
        accepted = tuple(a for a in token_audiences if a in (audiences or self.audiences))
        if not accepted:
            raise jwt.InvalidToken("token audiences do not match the audiences this server accepts")
        private = claims.get(CLAIMS_KEY)
        if not isinstance(private, dict):
            raise jwt.InvalidToken("service account token has no kubernetes.io claims")
        account = private.get("serviceaccount") or {}
        namespace, name = str(private.get("namespace", "")), str(account.get("name", ""))
        if not namespace or not name or claims.get("sub") != username(namespace, name):
            raise jwt.InvalidToken("service account token names no service account")
        bound = None
        for kind in ("Pod", "Secret"):
            ref = private.get(kind.lower())
            if isinstance(ref, dict):
                bound = BoundObject(kind, str(ref.get("name", "")), str(ref.get("uid", "")))
                break
        return ServiceAccountClaims(namespace, name, str(account.get("uid", "")), bound, accepted, exp,
                                    str(claims.get("jti", "")))
