"""Admission webhooks: the apiserver asks HTTPS services whether (and how) a write may happen.

admissionregistration.k8s.io/v1 Mutating- and ValidatingWebhookConfigurations
list webhooks; these two plugins call them, in Kubernetes' places in the chain:

    built-in mutation → strategy validation → MutatingAdmissionWebhook (in order,
    JSON patches, then defaults and validation again) → built-in validation and
    ValidatingAdmissionWebhook (in parallel) → ResourceQuota → storage

- `generic`: the configurations as the registry's watch reports them, which
  webhooks a write goes to, calling one, and what a failure means;
- `matching`: rules, scope, namespaceSelector and objectSelector;
- `review`: the AdmissionReview v1 request and the checks on its response;
- `client`: HTTPS with the caBundle as trust root, Service endpoints, the deadline;
- `mutating`, `validating`: the two plugins.
"""

from __future__ import annotations

from controlplane.apiserver.admission.webhook.mutating import MutatingAdmissionWebhook
from controlplane.apiserver.admission.webhook.validating import ValidatingAdmissionWebhook

__all__ = ["MutatingAdmissionWebhook", "ValidatingAdmissionWebhook"]
