"""Strategies of admissionregistration.k8s.io/v1: Validating and MutatingWebhookConfiguration.

Nothing about storing a webhook configuration is special (cluster-scoped, no
status); what is, is its defaults, Kubernetes' SetDefaults_ValidatingWebhook and
friends: failurePolicy Fail, matchPolicy Equivalent, empty (match-everything)
selectors, timeoutSeconds 10, a rule's scope `*`, a Service's port 443, and for
a mutating webhook reinvocationPolicy Never. sideEffects and
admissionReviewVersions have no default in v1: the author must say.
The admission plugins that call the webhooks are admission/webhook/.
"""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.apiserver.strategies.base import Strategy
from controlplane.apiserver.validation import admissionregistration as validation
from proto import admissionregistration_pb2

DEFAULT_TIMEOUT_SECONDS = 10
DEFAULT_SERVICE_PORT = 443


def _default_webhook(hook: validation.Webhook) -> None:
    if not hook.HasField("failure_policy"):
        hook.failure_policy = "Fail"
    if not hook.HasField("match_policy"):
        hook.match_policy = "Equivalent"
    if not hook.HasField("namespace_selector"):
        hook.namespace_selector.SetInParent()
    if not hook.HasField("object_selector"):
        hook.object_selector.SetInParent()
    if not hook.HasField("timeout_seconds"):
        hook.timeout_seconds = DEFAULT_TIMEOUT_SECONDS
    for rule in hook.rules:
        if not rule.scope:
            rule.scope = "*"
    service = hook.client_config.service
    if hook.client_config.HasField("service") and not service.HasField("port"):
        service.port = DEFAULT_SERVICE_PORT


def _default_all(hooks: Iterable[validation.Webhook]) -> None:
    for hook in hooks:
        _default_webhook(hook)


def default_validating_webhook_configuration(config: admissionregistration_pb2.ValidatingWebhookConfiguration) -> None:
    _default_all(config.webhooks)


def default_mutating_webhook_configuration(config: admissionregistration_pb2.MutatingWebhookConfiguration) -> None:
    _default_all(config.webhooks)
    for hook in config.webhooks:
        if not hook.HasField("reinvocation_policy"):
            hook.reinvocation_policy = "Never"


VALIDATING_WEBHOOK_CONFIGURATION = Strategy(defaulter=default_validating_webhook_configuration,
                                            validator=validation.validate_validating_webhook_configuration)
MUTATING_WEBHOOK_CONFIGURATION = Strategy(defaulter=default_mutating_webhook_configuration,
                                          validator=validation.validate_mutating_webhook_configuration)
