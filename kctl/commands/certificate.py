"""`kctl certificate approve|deny NAME...`: a person's decision on CertificateSigningRequests.

Written through the approval subresource (controlplane/apiserver/strategies/certificates.py),
so the caller needs `approve` on the request's signer as well as update on
`certificatesigningrequests/approval`. Approving an approved request, or denying
a denied one, changes nothing; reversing a decision is refused, as in kubectl.
"""

from __future__ import annotations

import click

from client import Client, bootstrap
from kctl import context, resources
from kctl.errors import CliError
from proto import certificates_pb2

CSR = certificates_pb2.CertificateSigningRequest


@click.group("certificate")
def certificate() -> None:
    """Modify certificate resources."""


def _decide(names: tuple[str, ...], decision: str, reason: str, message: str) -> None:
    opposite = "Denied" if decision == "Approved" else "Approved"
    verb = "approved" if decision == "Approved" else "denied"

    async def body(client: Client) -> None:
        for name in names:
            csr = await client.get(CSR, name)
            if bootstrap.csr_condition(csr, opposite) is not None:
                raise CliError(f"certificatesigningrequest {name} is already {opposite.lower()}")
            if bootstrap.csr_condition(csr, decision) is None:
                bootstrap.add_csr_condition(csr, decision, reason, message)
                csr = await client.update_approval(csr)
            click.echo(f"{resources.ref_of(csr)} {verb}")

    context.run(body)


@certificate.command("approve")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@context.global_options
def approve(names: tuple[str, ...]) -> None:
    """Approve certificate signing requests: their signer may now issue the certificates."""
    _decide(names, "Approved", "KubectlApprove", "This CSR was approved by kctl certificate approve.")


@certificate.command("deny")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@context.global_options
def deny(names: tuple[str, ...]) -> None:
    """Deny certificate signing requests: they will never be signed."""
    _decide(names, "Denied", "KubectlDeny", "This CSR was denied by kctl certificate deny.")
