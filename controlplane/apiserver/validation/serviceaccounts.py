"""Validation of core/v1 ServiceAccounts (Kubernetes' ValidateServiceAccount).

The name is a DNS subdomain (it becomes part of `system:serviceaccount:<ns>:<name>`),
and every Secret and image pull Secret it lists is named.
"""

from __future__ import annotations

from controlplane.apiserver.validation.field import Errors, check_format, required
from controlplane.apiserver.validation.meta import is_dns1123_subdomain
from proto import core_pb2


def validate_service_account(sa: core_pb2.ServiceAccount, old: core_pb2.ServiceAccount | None) -> Errors:
    errors: Errors = []
    for i, secret in enumerate(sa.secrets):
        if not secret.name:
            errors.append(required(f"secrets[{i}].name"))
        else:
            errors += check_format(is_dns1123_subdomain, secret.name, f"secrets[{i}].name")
    for i, pull in enumerate(sa.image_pull_secrets):
        if not pull.name:
            errors.append(required(f"imagePullSecrets[{i}].name"))
        else:
            errors += check_format(is_dns1123_subdomain, pull.name, f"imagePullSecrets[{i}].name")
    return errors
