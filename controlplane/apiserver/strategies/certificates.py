"""Strategy of certificates.k8s.io/v1: CertificateSigningRequest — who asked, approval and status.

Kubernetes' CSR strategy, in three rules:

- on create the requester's identity (user, groups) is written into the spec by
  the apiserver, whatever the client sent, and status starts empty — so the
  approver can trust `spec.username` when it decides;
- the `approval` subresource changes only the Approved/Denied conditions: that
  is what `kctl certificate approve|deny` and the csrapproving controller write;
- the `status` subresource is the signer's: it writes the certificate (and
  Failed), and cannot add or drop an approval.

Who may write either subresource (`approve` or `sign` on the CSR's signer) is
admission's business (admission/certificates.py).
"""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.apiserver.admission.certificates import APPROVAL
from controlplane.apiserver.auth import UserInfo
from controlplane.apiserver.strategies.base import Strategy
from controlplane.apiserver.validation import certificates as validation
from controlplane.apiserver.validation.field import Errors
from proto import certificates_pb2
from proto.errors import BadRequest
from proto.kinds import Kind

_APPROVAL_TYPES = ("Approved", "Denied")


class CertificateSigningRequestStrategy(Strategy):
    subresources = (APPROVAL,)

    def prepare_for_create(self, obj: Message, user: UserInfo | None) -> None:
        """Stamp the requester into the spec and start with an empty status."""
        if user is None:  # written by the apiserver itself: nobody to stamp
            return
        assert isinstance(obj, certificates_pb2.CertificateSigningRequest)
        obj.spec.username = user.name
        obj.spec.uid = ""  # Flotilla's identities carry no uid
        del obj.spec.groups[:]
        obj.spec.groups.extend(user.groups)
        obj.ClearField("status")

    def prepare_for_subresource_update(self, kind: Kind, old: Message, incoming: Message,
                                       subresource: str) -> Message:
        assert isinstance(old, certificates_pb2.CertificateSigningRequest)
        assert isinstance(incoming, certificates_pb2.CertificateSigningRequest)
        return merge_subresource(old, incoming, subresource)

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        return validation.validate_certificate_signing_request(obj, old)  # type: ignore[arg-type]


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
