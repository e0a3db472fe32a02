"""CertificateApproval and CertificateSigning: who may approve or sign a CertificateSigningRequest.

Besides RBAC's `update` on `certificatesigningrequests/approval` (or `/status`),
the caller needs the `approve` (or `sign`) verb on the `signers` resource named
by the CSR's signer (certificates.k8s.io), checked against the stored object,
not the request, so a caller cannot name a signer it may use and then approve
a request for another.
"""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.apiserver.auth import Attributes, Authorizer
from proto import certificates_pb2
from proto.errors import Forbidden

NAME = "CertificateApproval"
APPROVAL = "approval"
SIGNERS_GROUP = "certificates.k8s.io"
_RESOURCE = "certificatesigningrequests"


class CertificateSubresources:
    """A stored-object validator for writes of a CSR's approval (verb `approve`) and status (verb `sign`)."""

    NAME = NAME

    def __init__(self) -> None:
        self._authorizer: Authorizer | None = None

    def set_authorizer(self, authorizer: Authorizer) -> None:
        self._authorizer = authorizer

    def validate_stored(self, attrs: Attributes, stored: Message) -> None:
        if attrs.resource != _RESOURCE or attrs.verb != "update" or attrs.subresource not in (APPROVAL, "status"):
            return
        assert isinstance(stored, certificates_pb2.CertificateSigningRequest)
        if self._authorizer is None:  # no apiserver front end: nobody to authorize
            return
        verb = "approve" if attrs.subresource == APPROVAL else "sign"
        signer = stored.spec.signer_name
        domain = signer.partition("/")[0]
        for name in (signer, f"{domain}/*"):
            try:
                self._authorizer.authorize(Attributes(attrs.user, verb, "signers", name=name,
                                                      api_group=SIGNERS_GROUP))
                return
            except Forbidden:
                continue
        raise Forbidden(f'certificatesigningrequests "{stored.metadata.name}" is forbidden: User '
                        f'"{attrs.user.name}" cannot {verb} resource "signers" in API group "{SIGNERS_GROUP}" '
                        f'for signer "{signer}"')
