"""CertificateSigningRequests in the apiserver: who asked, and the approval and status subresources.

Kubernetes' CSR strategy, in three rules:

- on create the requester's identity (user, groups) is written into the spec by
  the apiserver, whatever the client sent, and status starts empty — so the
  approver can trust `spec.username` when it decides;
- the `approval` subresource changes only the Approved/Denied conditions: that
  is what `kctl certificate approve|deny` and the csrapproving controller write.
  Besides RBAC's `update` on `certificatesigningrequests/approval`, the caller
  needs the `approve` verb on the `signers` resource named by the CSR's signer
  (certificates.k8s.io), checked against the stored object, not the request;
- the `status` subresource is the signer's: it writes the certificate (and
  Failed), needs `sign` on the signer, and cannot add or drop an approval.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import Message

from controlplane.apiserver.auth import Attributes, Authorizer, UserInfo
from proto import certificates_pb2
from proto.errors import BadRequest, Forbidden

KIND = "CertificateSigningRequest"
APPROVAL = "approval"
SIGNERS_GROUP = "certificates.k8s.io"
_APPROVAL_TYPES = ("Approved", "Denied")


def prepare_for_create(csr: Message, user: UserInfo) -> None:
    """Stamp the requester into the spec and start with an empty status."""
    if not isinstance(csr, certificates_pb2.CertificateSigningRequest):
        return
    csr.spec.username = user.name
    csr.spec.uid = ""  # Flotilla's identities carry no uid
    del csr.spec.groups[:]
    csr.spec.groups.extend(user.groups)
    csr.ClearField("status")


def merge_subresource(old: certificates_pb2.CertificateSigningRequest,
                      incoming: certificates_pb2.CertificateSigningRequest,
                      subresource: str) -> certificates_pb2.CertificateSigningRequest:
    """The stored object with what `subresource` may change taken from `incoming`."""
    new = certificates_pb2.CertificateSigningRequest()
    new.CopyFrom(old)
    del new.status.conditions[:]
    if subresource == APPROVAL:
        # Approval conditions from the caller; the signer's conditions stay as stored.
        new.status.conditions.extend(c for c in incoming.status.conditions if c.type in _APPROVAL_TYPES)
        new.status.conditions.extend(c for c in old.status.conditions if c.type not in _APPROVAL_TYPES)
    elif subresource == "status":
        new.status.conditions.extend(c for c in old.status.conditions if c.type in _APPROVAL_TYPES)
        new.status.conditions.extend(c for c in incoming.status.conditions if c.type not in _APPROVAL_TYPES)
        new.status.certificate = incoming.status.certificate
    else:
        raise BadRequest(f'unknown subresource "{subresource}" of certificatesigningrequests')
    return new


def signer_check(authorizer: Authorizer, attrs: Attributes, subresource: str) -> Callable[[Message], None]:
    """The check of the stored CSR for an approval (verb `approve`) or status (verb `sign`) write."""
    verb = "approve" if subresource == APPROVAL else "sign"

    def check(stored: Message) -> None:
        assert isinstance(stored, certificates_pb2.CertificateSigningRequest)
        signer = stored.spec.signer_name
        domain = signer.partition("/")[0]
        for name in (signer, f"{domain}/*"):
            try:
                authorizer.authorize(Attributes(attrs.user, verb, "signers", name=name, api_group=SIGNERS_GROUP))
                return
            except Forbidden:
                continue
        raise Forbidden(f'certificatesigningrequests "{stored.metadata.name}" is forbidden: User '
                        f'"{attrs.user.name}" cannot {verb} resource "signers" in API group "{SIGNERS_GROUP}" '
                        f'for signer "{signer}"')

    return check
