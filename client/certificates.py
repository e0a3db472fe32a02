"""The cluster's PKI: a CA, the apiserver's serving certificate, and client certificates.

Kubernetes identifies components by the certificates they present: the
subject's CN is the user name and each O is a group (`system:masters` for
admins, `system:nodes` for kubelets). The provisioner creates these with the
`cryptography` library (no openssl shell-outs) and writes them as PEM files
that the apiserver flags and kubeconfigs point at.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from client import bootstrap
from client import config as clientconfig

CA_DAYS = 3650
CERT_DAYS = 365


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, folder: Path, name: str) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = folder / f"{name}.crt", folder / f"{name}.key"
        cert.write_bytes(self.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(self.key_pem)
        return cert, key

    @classmethod
    def read(cls, folder: Path, name: str) -> KeyPair:
        return cls((folder / f"{name}.crt").read_bytes(), (folder / f"{name}.key").read_bytes())


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: small, fast handshakes, and supported by every gRPC TLS stack.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate small clock skew between nodes


def create_ca(common_name: str = "flotilla-ca") -> KeyPair:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now()).not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _issue(ca: KeyPair, subject: x509.Name, *, server_names: list[str] | None = None,
           client: bool = False, peer: bool = False, days: int = CERT_DAYS) -> KeyPair:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _new_key()
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
    if peer:  # both ends of a connection between equals (etcd members) show the same certificate
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now()).not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server_names:
        sans: list[x509.GeneralName] = []
        for entry in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(entry)))
            except ValueError:
                sans.append(x509.DNSName(entry))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def create_serving_cert(ca: KeyPair, common_name: str, names: list[str]) -> KeyPair:
    """A server certificate valid for every name and address in `names` (its SANs)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return _issue(ca, subject, server_names=names)


def create_peer_cert(ca: KeyPair, common_name: str, names: list[str]) -> KeyPair:
    """A certificate a peer both serves with and dials with (etcd's peer URL, as kubeadm's etcd/peer)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return _issue(ca, subject, server_names=names, peer=True)


def create_client_cert(ca: KeyPair, user: str, groups: tuple[str, ...] = ()) -> KeyPair:
    """A client certificate naming a user (CN) and their groups (one O each)."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
    return _issue(ca, x509.Name(attrs), client=True)


def write_private(path: Path, data: bytes) -> None:
    """Write credentials readable by their owner only: created 0600, never briefly wider."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    path.chmod(0o600)  # an existing file keeps its old mode through O_CREAT


def with_chain(serving: KeyPair, ca: KeyPair) -> KeyPair:
    """The serving certificate followed by its CA: what the apiserver should present, so a
    joining node can see the CA (and check its pin) before it trusts anything."""
    return KeyPair(serving.cert_pem + ca.cert_pem, serving.key_pem)


def ca_cert_hash(ca_pem: bytes) -> str:
    """kubeadm's --discovery-token-ca-cert-hash: sha256 of the CA's SubjectPublicKeyInfo (DER)."""
    cert = x509.load_pem_x509_certificate(ca_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def create_csr(user: str, groups: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """A new P-256 key and a PEM certificate request for it naming `user` (CN) and `groups` (O): (csr, key)."""
    key = _new_key()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs)).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM), _key_pem(key)


class SigningError(ValueError):
    """A certificate request the signer cannot honour (bad PEM, bad signature, unknown usage)."""


def load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise SigningError(f"not a PEM certificate request: {exc}") from exc
    if not csr.is_signature_valid:
        raise SigningError("the certificate request's signature does not verify")
    return csr


_EXTENDED = {"client auth": ExtendedKeyUsageOID.CLIENT_AUTH, "server auth": ExtendedKeyUsageOID.SERVER_AUTH}


def _key_usage(usages: Sequence[str]) -> x509.KeyUsage | None:
    """The KeyUsage extension for certificates.k8s.io usages; None when none is a key usage.

    RFC 5280 requires at least one bit in a KeyUsage extension, so a request for
    `[client auth]` alone gets no KeyUsage at all (as Go's x509, and so Kubernetes'
    signer, leave it out when no key usage is set), not an empty critical one that
    TLS stacks reject.
    """
    wanted = {u for u in usages if u in bootstrap.KEY_USAGES}
    if not wanted:
        return None
    return x509.KeyUsage(
        digital_signature="digital signature" in wanted, key_encipherment="key encipherment" in wanted,
        key_agreement="key agreement" in wanted, content_commitment=False, data_encipherment=False,
        key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)


def sign_csr(ca: KeyPair, csr_pem: bytes, usages: Sequence[str], duration: dt.timedelta) -> bytes:
    """Issue a certificate for a request, as Kubernetes' csrsigning controller does.

    The subject and subject alternative names come from the request; key usages
    from `usages` (certificates.k8s.io names); validity is `duration`, never past
    the CA's own expiry.
    """
    csr = load_csr(csr_pem)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise SigningError("the signing key must be an EC or RSA private key")
    unknown = [u for u in usages if u not in _EXTENDED and u not in bootstrap.KEY_USAGES]
    if unknown:
        raise SigningError(f"unsupported usages: {', '.join(unknown)}")
    start = _now()
    end = min(start + duration, ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject).issuer_name(ca_cert.subject).public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    key_usage = _key_usage(usages)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    extended = [_EXTENDED[u] for u in usages if u in _EXTENDED]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        builder = builder.add_extension(sans.value, critical=False)
    except x509.ExtensionNotFound:
        pass
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def identity_of(cert_pem: bytes) -> tuple[str, tuple[str, ...]]:
    """(user, groups) a client certificate asserts: CN and the O attributes."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return (str(cns[0].value) if cns else "", tuple(str(o.value) for o in orgs))


def kubeconfig(cluster: str, server: str, ca: bytes, user: str, credentials: KeyPair | None = None,
               token: str | None = None, namespace: str = "default", *,
               grpc_endpoints: clientconfig.GrpcEndpoints | None = None) -> str:
    """A standard kubeconfig (YAML) carrying the CA and one identity: a client certificate or a token.

    `server` is the Kubernetes API's URL; kctl's gRPC addresses go in the cluster's extension. Without
    `grpc_endpoints`, `server` is itself the gRPC address (a node's kubeconfig, written from what
    cluster-info names, which only Flotilla's kubelet reads). `user` names the user entry.
    """
    endpoints = grpc_endpoints or clientconfig.GrpcEndpoints(clientconfig.grpc_target(server))
    doc = clientconfig.kubeconfig(
        cluster, server, ca, endpoints, client_certificate=credentials.cert_pem if credentials else None,
        client_key=credentials.key_pem if credentials else None, token=token, namespace=namespace, user=user)
    return clientconfig.dump(doc)
