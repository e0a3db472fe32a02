"""Describing a CertificateSigningRequest: requester, signer, status, and the subject the CSR asks for."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from controlplane.printers.certificates import csr_condition
from controlplane.printers.text import human_duration
from kctl.describe.section import Section, metadata
from proto import certificates_pb2, kinds


def describe_csr(csr: certificates_pb2.CertificateSigningRequest, kind: kinds.Kind) -> Section:
    """kubectl's CSR description: who asked, which signer, where it stands, and the subject asked for."""
    s = Section()
    metadata(s, csr, kind)
    s.kv(0, "Requesting User", csr.spec.username)
    s.kv(0, "Signer", csr.spec.signer_name)
    if csr.spec.HasField("expiration_seconds"):
        s.kv(0, "Requested Duration", human_duration(csr.spec.expiration_seconds))
    s.kv(0, "Status", csr_condition(csr))
    for cond in csr.status.conditions:
        if cond.message:
            s.kv(1, cond.type, f"{cond.reason}: {cond.message}" if cond.reason else cond.message)
    try:
        request = x509.load_pem_x509_csr(csr.spec.request)
    except ValueError:
        s.kv(0, "Subject", "<unparseable request>")
        return s
    s.header(0, "Subject:")
    for label, oid in (("Common Name", NameOID.COMMON_NAME), ("Serial Number", NameOID.SERIAL_NUMBER),
                       ("Organization", NameOID.ORGANIZATION_NAME)):
        values = [str(a.value) for a in request.subject.get_attributes_for_oid(oid)]
        s.kv(1, label, ", ".join(values))
    try:
        sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        s.header(0, "Subject Alternative Names:")
        for label, kind_ in (("DNS Names", x509.DNSName), ("IP Addresses", x509.IPAddress)):
            names = [str(v) for v in sans.get_values_for_type(kind_)]
            if names:
                s.kv(1, label, ", ".join(names))
    except x509.ExtensionNotFound:
        pass
    return s
