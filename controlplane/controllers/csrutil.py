"""What the CSR controllers agree on: a request's state, and what each kubernetes.io signer accepts.

The approver (csrapproving.py) and the signer (csrsigning.py) read the same
facts from a CertificateSigningRequest: is it Approved, Denied or Failed yet,
does it carry a certificate, and does its PKCS#10 request fit the signer it
names. The per-signer rules are Kubernetes' (pkg/apis/certificates/helpers.go):
a kubelet's client certificate is exactly `CN=system:node:<name>, O=system:nodes`
for client auth, with no subject alternative names.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from client import bootstrap, certificates
from proto import certificates_pb2

CSR = certificates_pb2.CertificateSigningRequest

KUBELET_CLIENT_USAGES = {"client auth", "digital signature", "key encipherment"}
KUBELET_SERVING_USAGES = {"server auth", "digital signature", "key encipherment"}


condition = bootstrap.csr_condition
add_condition = bootstrap.add_csr_condition


def is_approved(csr: CSR) -> bool:
    return condition(csr, "Approved") is not None


def is_finished(csr: CSR) -> bool:
    """Denied, Failed or issued: nothing left for a controller to do."""
    return bool(csr.status.certificate) or any(condition(csr, t) for t in ("Denied", "Failed"))


def _subject(request: x509.CertificateSigningRequest) -> tuple[list[str], list[str]]:
    cns = [str(a.value) for a in request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [str(a.value) for a in request.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return cns, orgs


def _has_sans(request: x509.CertificateSigningRequest) -> bool:
    try:
        request.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return True
    except x509.ExtensionNotFound:
        return False


def node_client_problem(csr: CSR) -> str | None:
    """Why this is not a valid kubelet client certificate request; None when it is."""
    try:
        request = certificates.load_csr(csr.spec.request)
    except certificates.SigningError as exc:
        return str(exc)
    cns, orgs = _subject(request)
    if orgs != [bootstrap.NODES_GROUP]:
        return f"subject organization must be exactly {bootstrap.NODES_GROUP}"
    if len(cns) != 1 or not cns[0].startswith(bootstrap.NODE_USER_PREFIX) \
            or cns[0] == bootstrap.NODE_USER_PREFIX:
        return f"subject common name must be {bootstrap.NODE_USER_PREFIX}<node name>"
    if _has_sans(request):
        return "a kubelet client certificate may not carry subject alternative names"
    usages = set(csr.spec.usages)
    if "client auth" not in usages or not usages <= KUBELET_CLIENT_USAGES:
        return f"usages must include client auth and be among {', '.join(sorted(KUBELET_CLIENT_USAGES))}"
    return None


def requested_node(csr: CSR) -> str:
    """The CN the request asks for (for messages and self-renewal checks)."""
    try:
        cns, _ = _subject(certificates.load_csr(csr.spec.request))
    except certificates.SigningError:
        return ""
    return cns[0] if cns else ""


def signer_problem(csr: CSR) -> str | None:
    """Why the named kubernetes.io signer must refuse this request; None when it may sign."""
    usages = set(csr.spec.usages)
    signer = csr.spec.signer_name
    if signer == bootstrap.SIGNER_KUBELET_CLIENT:
        return node_client_problem(csr)
    if signer == bootstrap.SIGNER_KUBE_APISERVER_CLIENT:
        if "client auth" not in usages or "server auth" in usages:
            return "usages must include client auth and not server auth"
        return None
    if signer == bootstrap.SIGNER_KUBELET_SERVING:
        try:
            cns, orgs = _subject(certificates.load_csr(csr.spec.request))
        except certificates.SigningError as exc:
            return str(exc)
        if orgs != [bootstrap.NODES_GROUP] or len(cns) != 1 or not cns[0].startswith(bootstrap.NODE_USER_PREFIX):
            return f"subject must be CN={bootstrap.NODE_USER_PREFIX}<node name>, O={bootstrap.NODES_GROUP}"
        if "server auth" not in usages or not usages <= KUBELET_SERVING_USAGES:
            return f"usages must include server auth and be among {', '.join(sorted(KUBELET_SERVING_USAGES))}"
        return None
    return f"signer {signer} is not served by this controller manager"
