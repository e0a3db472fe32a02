"""Validation of certificates.k8s.io/v1: CertificateSigningRequest (signer, request, conditions)."""

from __future__ import annotations

from cryptography import x509

from client import bootstrap
from controlplane.apiserver.validation.field import Errors, duplicate, forbidden, invalid, one_of, required, unsupported
from controlplane.apiserver.validation.meta import is_dns1123_subdomain
from proto import certificates_pb2

# ---------------------------------------------------------------- CertificateSigningRequest

_CSR_CONDITIONS = ("Approved", "Denied", "Failed")


def _signer_name(name: str, path: str) -> Errors:
    if not name:
        return [required(path)]
    domain, _, rest = name.partition("/")
    if not rest or is_dns1123_subdomain(domain):
        return [invalid(path, name, "must be a fully qualified domain and path of the form 'example.com/signer-name'")]
    if domain == "kubernetes.io" and name not in bootstrap.KUBERNETES_SIGNERS:
        return [unsupported(path, name, bootstrap.KUBERNETES_SIGNERS)]
    return []


def validate_certificate_signing_request(csr: certificates_pb2.CertificateSigningRequest,
         old: certificates_pb2.CertificateSigningRequest | None) -> Errors:
    spec, status = csr.spec, csr.status
    errors: Errors = []
    if not spec.request:
        errors.append(required("spec.request"))
    else:
        try:
            x509.load_pem_x509_csr(spec.request)
        except ValueError:
            errors.append(invalid("spec.request", "<bytes>", "must be a PEM block of type CERTIFICATE REQUEST"))
    errors += _signer_name(spec.signer_name, "spec.signerName")
    if not spec.usages:
        errors.append(required("spec.usages"))
    known = (*bootstrap.KEY_USAGES, *bootstrap.EXTENDED_KEY_USAGES)
    for i, usage in enumerate(spec.usages):
        if usage not in known:
            errors.append(unsupported(f"spec.usages[{i}]", usage, known))
        elif usage in spec.usages[:i]:
            errors.append(duplicate(f"spec.usages[{i}]", usage))
    if spec.HasField("expiration_seconds") and spec.expiration_seconds < 600:
        errors.append(invalid("spec.expirationSeconds", spec.expiration_seconds, "may not specify a duration "
                              "less than 600 seconds (10 minutes)"))
    types = [c.type for c in status.conditions]
    for i, cond in enumerate(status.conditions):
        path = f"status.conditions[{i}]"
        errors += one_of(cond.type, f"{path}.type", _CSR_CONDITIONS)
        if cond.type in ("Approved", "Denied") and cond.status != "True":
            errors.append(unsupported(f"{path}.status", cond.status, ["True"]))
        elif cond.status not in ("True", "False", "Unknown"):
            errors.append(unsupported(f"{path}.status", cond.status, ["True", "False", "Unknown"]))
        if cond.type in types[:i]:
            errors.append(duplicate(f"{path}.type", cond.type))
    if "Approved" in types and "Denied" in types:
        errors.append(invalid("status.conditions", "Approved, Denied", "Approved and Denied conditions are "
                              "mutually exclusive"))
    if status.certificate:
        if "Approved" not in types:
            errors.append(invalid("status.certificate", "<certificate data>", "may not be set unless the "
                                  "request is Approved"))
        try:
            x509.load_pem_x509_certificates(status.certificate)
        except ValueError:
            errors.append(invalid("status.certificate", "<certificate data>", "must contain PEM CERTIFICATE "
                                  "blocks"))
    if old is not None:
        if csr.spec.SerializeToString(deterministic=True) != old.spec.SerializeToString(deterministic=True):
            errors.append(forbidden("spec", "field is immutable"))
        for cond in old.status.conditions:
            if cond.type in ("Approved", "Denied") and cond.type not in types:
                errors.append(forbidden("status.conditions", f"updates may not remove the {cond.type} "
                                        "condition"))
        if old.status.certificate and status.certificate != old.status.certificate:
            errors.append(forbidden("status.certificate", "updates may not modify existing certificate content"))
    return errors
