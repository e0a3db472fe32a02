"""Table columns of certificates.k8s.io/v1 CertificateSigningRequests.

CONDITION is what `kctl certificate approve` and the signer leave behind:
Pending, Approved, Approved,Issued, Denied, as Kubernetes' printer shows it.
"""

from __future__ import annotations

from controlplane.printers.table import AGE, NAME, Cell, GenerateOptions, TableColumnDefinition, TableConvertor
from controlplane.printers.text import NONE, age, human_duration
from proto import certificates_pb2


def csr_condition(csr: certificates_pb2.CertificateSigningRequest) -> str:
    """kubectl's CONDITION of a CSR: its condition types, "Pending" if none, plus "Issued" once signed."""
    types = [c.type for c in csr.status.conditions]
    if not types:
        types = ["Pending"]
    if csr.status.certificate:
        types.append("Issued")
    return ",".join(types)


def _csr_cells(csr: certificates_pb2.CertificateSigningRequest, o: GenerateOptions) -> list[Cell]:
    spec = csr.spec
    duration = human_duration(spec.expiration_seconds) if spec.HasField("expiration_seconds") else NONE
    return [csr.metadata.name, age(csr, o.now), spec.signer_name, spec.username, duration, csr_condition(csr)]


CERTIFICATE_SIGNING_REQUEST = TableConvertor[certificates_pb2.CertificateSigningRequest]((
    NAME,
    AGE,
    TableColumnDefinition("SignerName", description="The requested signer."),
    TableColumnDefinition("Requestor", description="The user that created the request."),
    TableColumnDefinition("RequestedDuration", description="The requested duration of validity of the "
                          "issued certificate (spec.expirationSeconds)."),
    TableColumnDefinition("Condition", description="Approved or Denied, and Issued once signed; "
                          "Pending before either."),
), _csr_cells)
