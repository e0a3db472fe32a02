"""The keys service-account tokens are signed and verified with.

kube-apiserver signs with `--service-account-signing-key-file` (a PEM private key:
kubeadm's sa.key is RSA) and accepts tokens signed by any key of
`--service-account-key-file` (public or private PEM files; by default the signing
key), so several apiservers sharing one key — or a rotation that keeps the old
public key listed — all accept each other's tokens. The key id (`kid` in the JWT
header) is Kubernetes' own: the unpadded base64url of the SHA-256 of the public
key's DER SubjectPublicKeyInfo.

Without a signing key file the apiserver makes a P-256 key of its own at start
(logged): enough for a single apiserver, whose tokens then die with it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class ServiceAccountKeyError(ValueError):
    """A key file that is missing, unreadable or of a kind tokens cannot use."""


def key_id(public: PublicKey) -> str:
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def algorithm_of(key: PrivateKey | PublicKey) -> str:
    """RS256 for RSA keys, ES256 for P-256 keys (the two Kubernetes' signers use most)."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ServiceAccountKeyError(f"unsupported elliptic curve {key.curve.name}: service-account keys must be "
                                 "RSA or P-256")


@dataclass(frozen=True)
class SigningKey:
    private: PrivateKey

    @property
    def public(self) -> PublicKey:
        return self.private.public_key()

    @property
    def kid(self) -> str:
        return key_id(self.public)

    @property
    def algorithm(self) -> str:
        return algorithm_of(self.private)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ServiceAccountKeyError(f"--service-account-signing-key-file {path}: {exc}") from None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ServiceAccountKeyError(f"--service-account-signing-key-file {path}: not an RSA or ECDSA private key")
        algorithm_of(key)
        return cls(key)


def load_public_keys(path: Path) -> list[PublicKey]:
    """Every key in a --service-account-key-file: PEM public keys, private keys (their public half) or
    certificates, as Kubernetes' keyutil.PublicKeysFromFile."""
    from cryptography import x509
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ServiceAccountKeyError(f"--service-account-key-file {path}: {exc}") from None
    keys: list[PublicKey] = []
    for block in data.split(b"-----END ")[:-1]:
        start = block.find(b"-----BEGIN ")
        label = block[start + len(b"-----BEGIN "):].split(b"-----", 1)[0]
        pem = block[start:] + b"-----END " + label + b"-----\n"
        try:
            if b"PRIVATE KEY" in label:
                found: object = serialization.load_pem_private_key(pem, password=None).public_key()
            elif b"CERTIFICATE" in label:
                found = x509.load_pem_x509_certificate(pem).public_key()
            else:
                found = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise ServiceAccountKeyError(f"--service-account-key-file {path}: {exc}") from None
        if isinstance(found, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            algorithm_of(found)
            keys.append(found)
    if not keys:
        raise ServiceAccountKeyError(f"--service-account-key-file {path}: no RSA or ECDSA public key found")
    return keys


def new_signing_key_pem() -> bytes:
    """A new RSA 2048 key in PEM, as kubeadm's sa.key, for clusters Flotilla provisions."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def write_signing_key(path: Path) -> None:
    """new_signing_key_pem() written to `path` (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(new_signing_key_pem())
