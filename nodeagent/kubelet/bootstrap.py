"""Kubelet TLS bootstrap: turn a bootstrap token into the node's own client certificate.

`flotilla-kubelet --bootstrap-kubeconfig B --kubeconfig K`, as the real kubelet:
when K exists it is the node's identity and is used as is; otherwise the
kubelet, speaking as the token in B (written by `kctl join`),

1. makes a new P-256 key and a certificate request for
   `CN=system:node:<node-name>, O=system:nodes`;
2. creates a CertificateSigningRequest for the signer
   `kubernetes.io/kube-apiserver-client-kubelet` (the csrapproving controller
   approves such requests from bootstrappers, csrsigning signs them);
3. waits for status.certificate, failing with a clear error if the request is
   denied or fails, or on a timeout (naming the CSR: it may need
   `kctl certificate approve`);
4. reads `kube-public/cluster-info` for the apiserver's client-certificate
   address and writes K (0600): that server, the CA, the certificate and key.

The key never leaves this process until it is written into K.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from client import Client, bootstrap, certificates
from client import config as clientconfig
from proto import certificates_pb2, core_pb2

log = logging.getLogger(__name__)

CSR = certificates_pb2.CertificateSigningRequest
# What the kubelet asks for with an EC key (key encipherment is for RSA keys only).
CLIENT_USAGES = ("digital signature", "client auth")
POLL_INTERVAL = 0.5


class BootstrapError(Exception):
    """The node could not obtain its client certificate."""


def node_user(node_name: str) -> str:
    return f"{bootstrap.NODE_USER_PREFIX}{node_name}"


async def request_certificate(client: Client, node_name: str, timeout: float) -> tuple[bytes, bytes]:
    """Create the node's CSR and wait until it is signed: (certificate PEM, key PEM)."""
    csr_pem, key_pem = certificates.create_csr(node_user(node_name), (bootstrap.NODES_GROUP,))
    created = await client.create(bootstrap.new_csr(csr_pem, bootstrap.SIGNER_KUBELET_CLIENT, CLIENT_USAGES,
                                                    generate_name="node-csr-"))
    name = created.metadata.name
    log.info("asked for a client certificate for %s: certificatesigningrequest %s", node_user(node_name), name)
    deadline = time.monotonic() + timeout
    while True:
        current = await client.get(CSR, name)
        for refused in ("Denied", "Failed"):
            cond = bootstrap.csr_condition(current, refused)
            if cond is not None:
                raise BootstrapError(f"certificatesigningrequest {name} was {refused.lower()}: "
                                     f"{cond.reason}: {cond.message}")
        if current.status.certificate:
            return bytes(current.status.certificate), key_pem
        if time.monotonic() >= deadline:
            approved = bootstrap.csr_condition(current, "Approved") is not None
            why = ("it is approved but no signer issued it (is the controller manager running with "
                   "--cluster-signing-cert-file?)") if approved else \
                f"it may need `kctl certificate approve {name}`"
            raise BootstrapError(f"timed out after {timeout:.0f}s waiting for certificatesigningrequest "
                                 f"{name} to be signed: {why}")
        await asyncio.sleep(POLL_INTERVAL)


def have_kubeconfig(kubeconfig: Path, bootstrap_path: Path) -> bool:
    """True when the node already has its kubeconfig; BootstrapError when it has nothing to start from."""
    if kubeconfig.exists():
        return True
    if not bootstrap_path.exists():
        raise BootstrapError(f"neither the kubeconfig {kubeconfig} nor the bootstrap kubeconfig {bootstrap_path} "
                             "exists (run `kctl join` first)")
    return False


async def bootstrap_kubeconfig(bootstrap_path: Path, kubeconfig: Path, node_name: str, *,
                               timeout: float = 900.0) -> Path:
    """Make sure `kubeconfig` holds this node's client credentials, obtaining them with `bootstrap_path`."""
    if have_kubeconfig(kubeconfig, bootstrap_path):
        return kubeconfig
    config = clientconfig.load(kubeconfig=bootstrap_path)
    async with config.client(timeout=30) as client:
        await client.wait_ready(timeout=60)
        try:
            info = await client.get(core_pb2.ConfigMap, bootstrap.CLUSTER_INFO_NAME, bootstrap.CLUSTER_INFO_NAMESPACE)
            server, info_ca = bootstrap.read_cluster_info(info)
        except ValueError as exc:
            raise BootstrapError(str(exc)) from None
        # The CA `kctl join` pinned is the one to keep trusting.
        ca_pem = config.certificate_authority_data or info_ca
        cert_pem, key_pem = await request_certificate(client, node_name, timeout)
    user, _ = certificates.identity_of(cert_pem)
    if user != node_user(node_name):
        raise BootstrapError(f"the signed certificate names {user!r}, not {node_user(node_name)!r}")
    certificates.write_private(kubeconfig, certificates.kubeconfig("flotilla", server, ca_pem, user,
                                                 credentials=certificates.KeyPair(cert_pem, key_pem)).encode())
    log.info("wrote %s: %s at %s", kubeconfig, user, server)
    return kubeconfig
