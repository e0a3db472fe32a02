"""Which webhooks a write goes to: rules, scope, namespaceSelector and objectSelector.

Kubernetes' webhook/rules, webhook/namespace and webhook/object matchers, as
plain functions over one `Attributes` (what is written, by which operation,
to which resource and subresource) so they are testable without a server:

- a rule matches when its operations (or `*`), apiGroups, apiVersions and
  resources all do; `pods` is the resource alone, `pods/*` any subresource of
  pods, `*` every resource without a subresource, `*/*` everything; its scope
  (`Namespaced`, `Cluster`, `*`) compares with where the object lives, a
  Namespace counting as cluster-scoped;
- the namespaceSelector reads the labels of the object's namespace (of the
  object itself for a Namespace; cluster-scoped objects always match);
- the objectSelector matches if the old or the new object's labels do (an
  absent object never matches, an empty selector always does).

Every kind here has one served version, so matchPolicy Exact and Equivalent
pick the same requests. The webhook configurations themselves are never sent
to webhooks, so a broken webhook can always be removed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import Message

from proto import admissionregistration_pb2, selectors
from proto.kinds import Kind

ADMISSION_REGISTRATION = "admissionregistration.k8s.io"
# Kubernetes' IsExemptAdmissionConfigurationResource: what webhooks never see.
EXEMPT_RESOURCES = frozenset({"validatingwebhookconfigurations", "mutatingwebhookconfigurations",
                              "validatingadmissionpolicies", "validatingadmissionpolicybindings"})


@dataclass(frozen=True)
class Attributes:
    """One write as the matchers see it (Kubernetes' admission.Attributes, the parts they read)."""

    operation: str  # CREATE, UPDATE, DELETE
    kind: Kind
    namespace: str  # "" for cluster-scoped objects; a Namespace's own name for a Namespace
    subresource: str = ""
    obj: Message | None = None  # the new object (None on DELETE)
    old: Message | None = None  # the stored object (None on CREATE)
    # The labels of the object's namespace, for namespaceSelector; None when not looked up.
    namespace_labels: Mapping[str, str] | None = field(default=None, compare=False)


def exempt(kind: Kind) -> bool:
    """The admission configurations: a webhook must not be able to block its own removal."""
    return kind.group == ADMISSION_REGISTRATION and kind.resource in EXEMPT_RESOURCES


def rule_matches(rule: admissionregistration_pb2.RuleWithOperations, attrs: Attributes) -> bool:
    return (_scope(rule.scope, attrs) and _one_of(rule.operations, attrs.operation)
            and _one_of(rule.api_groups, attrs.kind.group) and _one_of(rule.api_versions, attrs.kind.version)
            and _resource(rule.resources, attrs.kind.resource, attrs.subresource))


def rules_match(rules: Sequence[admissionregistration_pb2.RuleWithOperations], attrs: Attributes) -> bool:
    """A webhook cares about a write if any of its rules matches it."""
    return any(rule_matches(rule, attrs) for rule in rules)


def _one_of(allowed: Sequence[str], value: str) -> bool:
    return "*" in allowed or value in allowed


def _scope(scope: str, attrs: Attributes) -> bool:
    is_namespace = attrs.kind.group == "" and attrs.kind.resource == "namespaces"
    if scope == "Namespaced":
        return not is_namespace and attrs.kind.namespaced
    if scope == "Cluster":
        return is_namespace or not attrs.kind.namespaced
    return True  # "*", or unset on an object stored before defaulting


def _resource(resources: Sequence[str], resource: str, subresource: str) -> bool:
    for entry in resources:
        want, _, want_sub = entry.partition("/")
        # `pods` is pods alone; `pods/*` pods and each subresource of them (as Kubernetes' splitResource).
        if want in ("*", resource) and want_sub in ("*", subresource):
            return True
    return False


def namespace_selector_matches(selector: selectors.LabelSelector, attrs: Attributes) -> bool:
    """Whether the write's namespace (or the Namespace written) is one the webhook selects."""
    if selector.empty():
        return True
    if attrs.kind.group == "" and attrs.kind.resource == "namespaces":
        obj = attrs.obj if attrs.obj is not None else attrs.old
        return obj is not None and selector.matches(_labels(obj))
    if not attrs.kind.namespaced:
        return True  # other cluster-scoped objects never skip the webhook
    return selector.matches(attrs.namespace_labels or {})


def object_selector_matches(selector: selectors.LabelSelector, attrs: Attributes) -> bool:
    if selector.empty():
        return True
    return any(obj is not None and selector.matches(_labels(obj)) for obj in (attrs.obj, attrs.old))


def _labels(obj: Message) -> Mapping[str, str]:
    meta = getattr(obj, "metadata", None)
    return meta.labels if meta is not None else {}
