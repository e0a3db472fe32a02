"""CustomResourceDefinitions and the custom resources they add to the API (apiextensions-apiserver's part).

- definitions.py: the CRD kind's defaults and validation (names, group, versions, structural schemas);
- schema.py: a version's OpenAPI v3 schema at work: structural checks, pruning, defaulting, validation;
- served.py: the custom kinds served now, and the strategy their objects are written through;
- codec.py: custom objects between JSON and the `CustomResource` envelope the registry stores;
- handlers.py: the HTTP verbs for custom resources, over the same request core as built-ins;
- printing.py: Tables from additionalPrinterColumns;
- openapi.py: the OpenAPI v2/v3 of served custom kinds, from their schemas;
- controller.py: the apiserver's own loop: names, Established, cleanup on delete.

Nothing is imported here, so strategies/ may import definitions.py without a cycle.
"""
