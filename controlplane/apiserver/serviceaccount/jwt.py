"""Compact JSON Web Tokens (RFC 7519) signed RS256 or ES256, with `cryptography` alone.

A token is `base64url(header).base64url(claims).base64url(signature)`; the header
names the algorithm and the key id. ES256 signatures are the raw 64 bytes r||s
(RFC 7518 §3.4), not the DER `cryptography` speaks, so they are converted both
ways. `decode` only checks the signature against the keys it is given; what the
claims must say is tokens.py's business.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from controlplane.apiserver.serviceaccount.keys import PublicKey, SigningKey, algorithm_of, key_id

_P256_BYTES = 32


class MalformedToken(ValueError):
    """Not a JWT at all: some other kind of bearer token."""


class InvalidToken(ValueError):
    """A JWT whose signature no known key verifies, or whose header is not one we issue."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MalformedToken("not base64url") from None


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def encode(claims: dict[str, Any], key: SigningKey) -> str:
    header = {"alg": key.algorithm, "kid": key.kid}
    signing_input = f"{_b64encode(_json(header))}.{_b64encode(_json(claims))}".encode()
    if isinstance(key.private, rsa.RSAPrivateKey):
        signature = key.private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")
    return f"{signing_input.decode()}.{_b64encode(signature)}"


@dataclass(frozen=True)
class Parsed:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def parse(token: str) -> Parsed:
    """Split and decode a token without trusting it; MalformedToken if it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedToken("a JWT has three dot-separated parts")
    try:
        header = json.loads(_b64decode(parts[0]))
        claims = json.loads(_b64decode(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise MalformedToken("header or claims are not JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict) or "alg" not in header:
        raise MalformedToken("not a JWT header")
    return Parsed(header, claims, f"{parts[0]}.{parts[1]}".encode(), _b64decode(parts[2]))


def _verifies(parsed: Parsed, public: PublicKey) -> bool:
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(parsed.signature, parsed.signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            if len(parsed.signature) != 2 * _P256_BYTES:
                return False
            r = int.from_bytes(parsed.signature[:_P256_BYTES], "big")
            s = int.from_bytes(parsed.signature[_P256_BYTES:], "big")
            public.verify(encode_dss_signature(r, s), parsed.signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def verify(parsed: Parsed, keys: list[PublicKey]) -> dict[str, Any]:
    """The claims, once a key of the header's algorithm (the `kid` one first) verifies the signature."""
    alg, kid = parsed.header.get("alg"), parsed.header.get("kid")
    candidates = [k for k in keys if algorithm_of(k) == alg]
    candidates.sort(key=lambda k: key_id(k) != kid)  # the named key first; a missing kid tries them all
    if not candidates:
        raise InvalidToken(f"unsupported signing algorithm {alg!r}")
    if not any(_verifies(parsed, k) for k in candidates):
        raise InvalidToken("invalid signature")
    return parsed.claims
