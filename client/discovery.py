"""Bootstrap-token discovery: how a new node finds, and decides to trust, the cluster it joins.

kubeadm's token discovery, over Flotilla's token port (`kctl join` and the
providers call `join_node`):

1. fetch the certificates the apiserver presents *without trusting them*
   (the serving certificate and its CA: the apiserver serves the chain), and
   keep the CA whose SubjectPublicKeyInfo hashes to a given pin — on a mismatch
   stop, having written nothing;
2. with that CA now trusted and the token as credentials, read
   `kube-public/cluster-info` (the only thing a bootstrap token may read besides
   its CSRs), which must name the same CA;
3. write the bootstrap kubeconfig (0600): the token address, the CA, the token.

The kubelet then starts with `--bootstrap-kubeconfig` and obtains its own
client certificate (nodeagent/kubelet/bootstrap.py).
"""

from __future__ import annotations

import _ssl  # the chain's Certificate objects encode with _ssl's constants
import asyncio
import socket
import ssl
from pathlib import Path

import grpc
from cryptography import x509

from client import Client, bootstrap, certificates
from client.config import grpc_target
from proto import core_pb2
from proto.errors import ApiError

DEFAULT_BOOTSTRAP_KUBECONFIG = "/etc/flotilla/bootstrap-kubeconfig"
BOOTSTRAP_USER = "tls-bootstrap-token-user"  # kubeadm's name for the token's user in the kubeconfig


class DiscoveryError(Exception):
    """The cluster could not be found or trusted; the message says what to fix."""


def _split(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise DiscoveryError(f"{target!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def presented_chain(target: str, timeout: float = 10.0) -> list[bytes]:
    """The certificates (PEM) the server at `target` presents, unverified — nothing is trusted yet."""
    host, port = _split(target)
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE  # the pin, not a CA store, decides what to trust
    unverified.set_alpn_protocols(["h2"])  # gRPC servers expect HTTP/2
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                unverified.wrap_socket(raw, server_hostname=host) as tls:
            # Python 3.11 only exposes the whole presented chain through the private _sslobj.
            chain = tls._sslobj.get_unverified_chain() or []  # type: ignore[attr-defined]
            return [ssl.DER_cert_to_PEM_cert(cert.public_bytes(_ssl.ENCODING_DER)).encode() for cert in chain]
    except OSError as exc:
        raise DiscoveryError(f"cannot fetch the certificates of {target}: {exc}") from None


def pinned_ca(chain: list[bytes], pins: tuple[str, ...], target: str) -> bytes:
    """The CA in `chain` matching one of `pins`; DiscoveryError naming what was presented if none does."""
    wanted = {p.lower() for p in pins}
    for pem in chain:
        cert = x509.load_pem_x509_certificate(pem)
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if is_ca and certificates.ca_cert_hash(pem) in wanted:
            return pem
    presented = ", ".join(certificates.ca_cert_hash(p) for p in chain) or "no certificates"
    raise DiscoveryError(f"the server at {target} presented no CA matching --discovery-token-ca-cert-hash "
                   f"{', '.join(pins)} (it presented {presented}); refusing to trust it. If only the serving "
                   "certificate is listed, configure the apiserver's --tls-cert-file with the chain "
                   "(serving certificate, then CA)")


async def read_cluster_info(target: str, token: str, ca_pem: bytes) -> tuple[str, bytes]:
    """(client-certificate server, CA) from kube-public/cluster-info, read with the token over verified TLS."""
    async with Client(target, credentials=grpc.ssl_channel_credentials(ca_pem), token=token, timeout=10) as client:
        info = await client.get(core_pb2.ConfigMap, bootstrap.CLUSTER_INFO_NAME, bootstrap.CLUSTER_INFO_NAMESPACE)
    try:
        return bootstrap.read_cluster_info(info)
    except ValueError as exc:
        raise DiscoveryError(str(exc)) from None


def join_node(target: str, token_text: str, pins: tuple[str, ...], bootstrap_kubeconfig: Path) -> str:
    """Discover and pin the cluster, then write the bootstrap kubeconfig; returns the client-certificate server."""
    target = grpc_target(target)
    try:
        token = bootstrap.parse_token(token_text)
    except bootstrap.TokenFormatError as exc:
        raise DiscoveryError(str(exc)) from None
    bad = [p for p in pins if not p.lower().startswith("sha256:")]
    if bad:
        raise DiscoveryError(f"--discovery-token-ca-cert-hash must be sha256:<hex>, got {bad[0]!r}")
    ca_pem = pinned_ca(presented_chain(target), pins, target)
    try:
        server, info_ca = asyncio.run(read_cluster_info(target, str(token), ca_pem))
    except ApiError as exc:
        raise DiscoveryError(f"cannot read {bootstrap.CLUSTER_INFO_NAMESPACE}/{bootstrap.CLUSTER_INFO_NAME} from "
                       f"{target} with this token: {exc}") from None
    if certificates.ca_cert_hash(info_ca) != certificates.ca_cert_hash(ca_pem):
        raise DiscoveryError(f"{bootstrap.CLUSTER_INFO_NAMESPACE}/{bootstrap.CLUSTER_INFO_NAME} names a different CA "
                       "than the one pinned; refusing to join")
    config = certificates.kubeconfig("flotilla", f"https://{target}", ca_pem, BOOTSTRAP_USER, token=str(token))
    certificates.write_private(bootstrap_kubeconfig, config.encode())
    return server
