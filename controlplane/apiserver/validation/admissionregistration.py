"""Validation of admissionregistration.k8s.io/v1: Validating and MutatingWebhookConfiguration.

A configuration is a list of webhooks, unique by name; each names, in rules
Kubernetes spells out, which writes it wants (operations, groups, versions,
resources with their subresource wildcards, scope), where it lives (exactly one
of an https URL or an in-cluster Service, with a PEM CA bundle), and how it is
called (sideEffects None or NoneOnDryRun, timeoutSeconds 1-30, failurePolicy,
matchPolicy, admissionReviewVersions including v1, the only version this
apiserver speaks). A webhook the apiserver could not call is refused here,
naming the field, rather than failing every write later.

Messages are those of Kubernetes' pkg/apis/admissionregistration/validation and
k8s.io/apiserver/pkg/util/webhook, so what kubectl prints can be searched for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from cryptography import x509

from controlplane.apiserver.validation.field import (
    Errors,
    duplicate,
    forbidden,
    invalid,
    required,
    unsupported,
)
from controlplane.apiserver.validation.meta import (
    is_dns1035_label,
    is_dns1123_subdomain,
    is_port_num,
    validate_label_selector,
)
from proto import admissionregistration_pb2

OPERATIONS = ("*", "CONNECT", "CREATE", "DELETE", "UPDATE")
SCOPES = ("*", "Cluster", "Namespaced")
FAILURE_POLICIES = ("Fail", "Ignore")
MATCH_POLICIES = ("Equivalent", "Exact")
SIDE_EFFECTS = ("None", "NoneOnDryRun")  # v1 allows no others: Some/Unknown cannot be called on dry runs
REINVOCATION_POLICIES = ("IfNeeded", "Never")
# The AdmissionReview versions this apiserver sends (Kubernetes also speaks v1beta1).
ADMISSION_REVIEW_VERSIONS = ("v1",)
MAX_TIMEOUT_SECONDS = 30
_URL_FORM = "; desired format: https://host[/path]"


# What ValidatingWebhook and MutatingWebhook share: everything but reinvocationPolicy.
Webhook = admissionregistration_pb2.ValidatingWebhook | admissionregistration_pb2.MutatingWebhook


def validate_validating_webhook_configuration(
        config: admissionregistration_pb2.ValidatingWebhookConfiguration,
        old: admissionregistration_pb2.ValidatingWebhookConfiguration | None) -> Errors:
    return _webhooks(config.webhooks)


def validate_mutating_webhook_configuration(
        config: admissionregistration_pb2.MutatingWebhookConfiguration,
        old: admissionregistration_pb2.MutatingWebhookConfiguration | None) -> Errors:
    errors = _webhooks(config.webhooks)
    for i, hook in enumerate(config.webhooks):
        if hook.HasField("reinvocation_policy") and hook.reinvocation_policy not in REINVOCATION_POLICIES:
            errors.append(unsupported(f"webhooks[{i}].reinvocationPolicy", hook.reinvocation_policy,
                                      REINVOCATION_POLICIES))
    return errors


def _webhooks(hooks: Iterable[Webhook]) -> Errors:
    errors: Errors = []
    seen: set[str] = set()
    for i, hook in enumerate(hooks):
        path = f"webhooks[{i}]"
        errors += _webhook(hook, path)
        if hook.name in seen:
            errors.append(duplicate(f"{path}.name", hook.name))
        seen.add(hook.name)
    return errors


def _webhook(hook: Webhook, path: str) -> Errors:
    errors = fully_qualified_name(hook.name, f"{path}.name")
    errors += client_config(hook.client_config, f"{path}.clientConfig") if hook.HasField("client_config") else [
        required(f"{path}.clientConfig", "exactly one of url or service is required")]
    for j, rule in enumerate(hook.rules):
        errors += rule_with_operations(rule, f"{path}.rules[{j}]")
    if hook.HasField("failure_policy") and hook.failure_policy not in FAILURE_POLICIES:
        errors.append(unsupported(f"{path}.failurePolicy", hook.failure_policy, FAILURE_POLICIES))
    if hook.HasField("match_policy") and hook.match_policy not in MATCH_POLICIES:
        errors.append(unsupported(f"{path}.matchPolicy", hook.match_policy, MATCH_POLICIES))
    if not hook.HasField("side_effects") or not hook.side_effects:
        errors.append(required(f"{path}.sideEffects", "must specify one of " + ", ".join(SIDE_EFFECTS)))
    elif hook.side_effects not in SIDE_EFFECTS:
        errors.append(unsupported(f"{path}.sideEffects", hook.side_effects, SIDE_EFFECTS))
    if hook.HasField("timeout_seconds") and not 1 <= hook.timeout_seconds <= MAX_TIMEOUT_SECONDS:
        errors.append(invalid(f"{path}.timeoutSeconds", hook.timeout_seconds,
                              "the timeout value must be between 1 and 30 seconds"))
    errors += admission_review_versions(hook.admission_review_versions, f"{path}.admissionReviewVersions")
    errors += validate_label_selector(hook.namespace_selector, f"{path}.namespaceSelector")
    errors += validate_label_selector(hook.object_selector, f"{path}.objectSelector")
    if hook.match_conditions:
        # Kubernetes evaluates these with CEL; an apiserver that cannot must not skip them silently.
        errors.append(forbidden(f"{path}.matchConditions", "CEL match conditions are not supported by this "
                                                          "apiserver; select requests with rules and selectors"))
    return errors


def fully_qualified_name(name: str, path: str) -> Errors:
    """A webhook's name: a DNS subdomain of at least three segments (`deny.example.com`)."""
    if not name:
        return [required(path)]
    trimmed = name.removesuffix(".")
    problems = is_dns1123_subdomain(trimmed)
    if problems:
        return [invalid(path, trimmed, ",".join(problems))]
    if len(trimmed.split(".")) < 3:
        return [invalid(path, trimmed, "should be a domain with at least three segments separated by dots")]
    return []


def admission_review_versions(versions: Sequence[str], path: str) -> Errors:
    if not versions:
        return [required(path, "must specify one of " + ", ".join(ADMISSION_REVIEW_VERSIONS))]
    errors: Errors = []
    seen: set[str] = set()
    for i, version in enumerate(versions):
        if version in seen:
            errors.append(invalid(f"{path}[{i}]", version, "duplicate version"))
            continue
        seen.add(version)
        errors += [invalid(f"{path}[{i}]", version, problem) for problem in is_dns1035_label(version)]
    if not seen & set(ADMISSION_REVIEW_VERSIONS):
        errors.append(invalid(path, list(versions),
                              "must include at least one of " + ", ".join(ADMISSION_REVIEW_VERSIONS)))
    return errors


# ---------------------------------------------------------------- clientConfig


def client_config(config: admissionregistration_pb2.AdmissionWebhookClientConfig, path: str) -> Errors:
    has_url, has_service = config.HasField("url"), config.HasField("service")
    if has_url == has_service:
        return [required(path, "exactly one of url or service is required")]
    errors = webhook_url(config.url, f"{path}.url") if has_url else webhook_service(config.service,
                                                                                      f"{path}.service")
    return errors + ca_bundle(config.ca_bundle, f"{path}.caBundle")


def webhook_url(url: str, path: str) -> Errors:
    """An https URL with a host and no user info, query or fragment (k8s.io/apiserver's ValidateWebhookURL)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a bad port raises only when read)
    except ValueError as exc:
        return [required(path, f"url must be a valid URL: {exc}{_URL_FORM}")]
    errors: Errors = []
    if parts.scheme != "https":
        errors.append(invalid(path, parts.scheme, "'https' is the only allowed URL scheme" + _URL_FORM))
    if not parts.hostname:
        errors.append(invalid(path, parts.netloc, "host must be specified" + _URL_FORM))
    if parts.username is not None:
        errors.append(invalid(path, parts.netloc.rpartition("@")[0], "user information is not permitted in the URL"))
    if parts.fragment:
        errors.append(invalid(path, parts.fragment, "fragments are not permitted in the URL"))
    if parts.query:
        errors.append(invalid(path, parts.query, "query parameters are not permitted in the URL"))
    return errors


def webhook_service(service: admissionregistration_pb2.AdmissionServiceReference, path: str) -> Errors:
    errors: Errors = []
    if not service.name:
        errors.append(required(f"{path}.name", "service name is required"))
    if not service.namespace:
        errors.append(required(f"{path}.namespace", "service namespace is required"))
    port = service.port if service.HasField("port") else 443
    problems = is_port_num(port)
    if problems:
        errors.append(invalid(f"{path}.port", port, "port is not valid: " + ", ".join(problems)))
    if service.HasField("path"):
        errors += _service_path(service.path, f"{path}.path")
    return errors


def _service_path(url_path: str, path: str) -> Errors:
    """`/validate`, `/a/b`: segments that are DNS subdomains, as Kubernetes requires."""
    if url_path in ("", "/"):
        return []
    if url_path == "//":
        return [invalid(path, url_path, "segment[0] may not be empty")]
    if not url_path.startswith("/"):
        return [invalid(path, url_path, "must start with a '/'")]
    errors: Errors = []
    for i, step in enumerate(url_path[1:].removesuffix("/").split("/")):
        if not step:
            errors.append(invalid(path, url_path, f"segment[{i}] may not be empty"))
            continue
        errors += [invalid(path, url_path, f"segment[{i}]: {p}") for p in is_dns1123_subdomain(step)]
    return errors


def ca_bundle(pem: bytes, path: str) -> Errors:
    """Empty (the system's roots) or PEM certificates: a bundle no call could use is refused now."""
    if not pem:
        return []
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError:
        return [invalid(path, "<bytes>", "must hold PEM-encoded certificates")]
    return []


# ---------------------------------------------------------------- rules


def rule_with_operations(rule: admissionregistration_pb2.RuleWithOperations, path: str) -> Errors:
    errors: Errors = []
    if not rule.operations:
        errors.append(required(f"{path}.operations"))
    elif len(rule.operations) > 1 and "*" in rule.operations:
        errors.append(invalid(f"{path}.operations", list(rule.operations),
                              "if '*' is present, must not specify other operations"))
    for i, op in enumerate(rule.operations):
        if op not in OPERATIONS:
            errors.append(unsupported(f"{path}.operations[{i}]", op, OPERATIONS))
    errors += _wildcard_list(rule.api_groups, f"{path}.apiGroups", "API groups", empty_ok=True)
    errors += _wildcard_list(rule.api_versions, f"{path}.apiVersions", "API versions", empty_ok=False)
    if not rule.resources:
        errors.append(required(f"{path}.resources"))
    errors += _resources(rule.resources, f"{path}.resources")
    if rule.scope and rule.scope not in SCOPES:
        errors.append(unsupported(f"{path}.scope", rule.scope, SCOPES))
    return errors


def _wildcard_list(values: Sequence[str], path: str, what: str, *, empty_ok: bool) -> Errors:
    """apiGroups ("" is the core group) and apiVersions: required; '*' only alone."""
    if not values:
        return [required(path)]
    errors: Errors = []
    if len(values) > 1 and "*" in values:
        errors.append(invalid(path, list(values), f"if '*' is present, must not specify other {what}"))
    if not empty_ok:
        errors += [required(f"{path}[{i}]") for i, v in enumerate(values) if not v]
    return errors


def _resources(resources: Sequence[str], path: str) -> Errors:
    """`x`, `x/y`, `x/*`, `*/y`, `*`, `*/*`, with no wildcard overlapping another entry."""
    errors: Errors = []
    wildcard_subresources: set[str] = set()  # x/*
    wildcard_resources: set[str] = set()  # */y
    plain = False  # x, without a subresource
    for i, entry in enumerate(resources):
        if not entry:
            errors.append(required(f"{path}[{i}]"))
            continue
        resource, slash, sub = entry.partition("/")
        if not slash:
            plain = plain or entry != "*"
            continue
        if resource in wildcard_subresources:
            errors.append(invalid(f"{path}[{i}]", entry, f"if '{resource}/*' is present, must not specify {entry}"))
        if sub in wildcard_resources:
            errors.append(invalid(f"{path}[{i}]", entry, f"if '*/{sub}' is present, must not specify {entry}"))
        if sub == "*":
            wildcard_subresources.add(resource)
        if resource == "*":
            wildcard_resources.add(sub)
    if len(resources) > 1 and "*/*" in resources:
        errors.append(invalid(path, list(resources), "if '*/*' is present, must not specify other resources"))
    if "*" in resources and plain:
        errors.append(invalid(path, list(resources),
                              "if '*' is present, must not specify other resources without subresources"))
    return errors
