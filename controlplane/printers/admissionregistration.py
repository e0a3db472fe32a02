"""Table columns of admissionregistration.k8s.io/v1 webhook configurations: how many webhooks each holds."""

from __future__ import annotations

from controlplane.printers.table import AGE, NAME, TableColumnDefinition, TableConvertor
from controlplane.printers.text import age
from proto import admissionregistration_pb2

_WEBHOOKS = TableColumnDefinition("Webhooks", type="integer",
                                  description="Webhooks indicates the number of webhooks in the configuration.")

VALIDATING_WEBHOOK_CONFIGURATION = TableConvertor[admissionregistration_pb2.ValidatingWebhookConfiguration]((
    NAME, _WEBHOOKS, AGE,
), lambda config, o: [config.metadata.name, len(config.webhooks), age(config, o.now)])

MUTATING_WEBHOOK_CONFIGURATION = TableConvertor[admissionregistration_pb2.MutatingWebhookConfiguration]((
    NAME, _WEBHOOKS, AGE,
), lambda config, o: [config.metadata.name, len(config.webhooks), age(config, o.now)])
