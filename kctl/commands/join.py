"""`kctl join HOST:PORT --token ID.SECRET --discovery-token-ca-cert-hash sha256:HEX`: a new node's first step.

kubeadm's token discovery, over Flotilla's token port:

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

import click
import grpc
from cryptography import x509

from kctl.errors import CliError
from proto import bootstrap, core_pb2
from proto.client import Client
from proto.client.config import grpc_target
from proto.errors import ApiError
from provision import pki

DEFAULT_BOOTSTRAP_KUBECONFIG = "/etc/flotilla/bootstrap-kubeconfig"
BOOTSTRAP_USER = "tls-bootstrap-token-user"  # kubeadm's name for the token's user in the kubeconfig


def _split(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise CliError(f"{target!r} is not HOST:PORT")
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
        raise CliError(f"cannot fetch the certificates of {target}: {exc}") from None


def pinned_ca(chain: list[bytes], pins: tuple[str, ...], target: str) -> bytes:
    """The CA in `chain` matching one of `pins`; CliError naming what was presented if none does."""
    wanted = {p.lower() for p in pins}
    for pem in chain:
        cert = x509.load_pem_x509_certificate(pem)
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if is_ca and pki.ca_cert_hash(pem) in wanted:
            return pem
    presented = ", ".join(pki.ca_cert_hash(p) for p in chain) or "no certificates"
    raise CliError(f"the server at {target} presented no CA matching --discovery-token-ca-cert-hash "
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
        raise CliError(str(exc)) from None


def join_node(target: str, token_text: str, pins: tuple[str, ...], bootstrap_kubeconfig: Path) -> str:
    """Discover and pin the cluster, then write the bootstrap kubeconfig; returns the client-certificate server."""
    target = grpc_target(target)
    try:
        token = bootstrap.parse_token(token_text)
    except bootstrap.TokenFormatError as exc:
        raise CliError(str(exc)) from None
    bad = [p for p in pins if not p.lower().startswith("sha256:")]
    if bad:
        raise CliError(f"--discovery-token-ca-cert-hash must be sha256:<hex>, got {bad[0]!r}")
    ca_pem = pinned_ca(presented_chain(target), pins, target)
    try:
        server, info_ca = asyncio.run(read_cluster_info(target, str(token), ca_pem))
    except ApiError as exc:
        raise CliError(f"cannot read {bootstrap.CLUSTER_INFO_NAMESPACE}/{bootstrap.CLUSTER_INFO_NAME} from "
                       f"{target} with this token: {exc}") from None
    if pki.ca_cert_hash(info_ca) != pki.ca_cert_hash(ca_pem):
        raise CliError(f"{bootstrap.CLUSTER_INFO_NAMESPACE}/{bootstrap.CLUSTER_INFO_NAME} names a different CA "
                       "than the one pinned; refusing to join")
    pki.write_private(bootstrap_kubeconfig, pki.kubeconfig("flotilla", f"https://{target}", ca_pem, BOOTSTRAP_USER,
                                                           token=str(token)).encode())
    return server


@click.command("join")
@click.argument("target", metavar="HOST:PORT")
@click.option("--token", "token_text", required=True, metavar="ID.SECRET", help="the bootstrap token")
@click.option("--discovery-token-ca-cert-hash", "pins", multiple=True, required=True, metavar="sha256:HEX",
              help="the pin of the cluster CA's public key (from `kctl token create --print-join-command`)")
@click.option("--bootstrap-kubeconfig", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_BOOTSTRAP_KUBECONFIG, show_default=True, help="where to write the bootstrap kubeconfig")
def join(target: str, token_text: str, pins: tuple[str, ...], bootstrap_kubeconfig: Path) -> None:
    """Join this machine to a cluster: verify it by its CA pin and write the kubelet's bootstrap kubeconfig."""
    server = join_node(target, token_text, pins, bootstrap_kubeconfig)
    click.echo(f"This node has found the cluster at {target} (CA pinned) and wrote {bootstrap_kubeconfig}.\n"
               f"Start the kubelet with --bootstrap-kubeconfig {bootstrap_kubeconfig} --kubeconfig <path>: it "
               f"will ask for its client certificate and then talk to {server}.")
