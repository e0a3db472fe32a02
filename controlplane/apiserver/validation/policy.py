"""Validation of policy/v1: PodDisruptionBudget, with Kubernetes' paths and messages.

A budget names one bound, never both: minAvailable (how many pods must stay) or
maxUnavailable (how many may go), each a non-negative number or a percent of at
most 100. Its selector is an ordinary label selector, and its
unhealthyPodEvictionPolicy one of the two policies the eviction subresource knows.
Unlike most specs the budget may be changed after creation (policy/v1 lifted that
restriction), so an update is checked as a create is.

The status is the disruption controller's (and the eviction subresource's) to
write; a status update checks its counts are not negative and its conditions are
well formed, as ValidatePodDisruptionBudgetStatusUpdate does.
"""

from __future__ import annotations

import re

from controlplane.apiserver.validation.field import (
    Errors,
    duplicate,
    invalid,
    nonnegative,
    required,
    too_long,
    unsupported,
)
from controlplane.apiserver.validation.meta import (
    PERCENT,
    is_qualified_name,
    regex_error,
    validate_label_selector,
)
from proto import manifest, meta_pb2, policy_pb2

# Sorted, as Kubernetes lists its sets.
UNHEALTHY_POD_EVICTION_POLICIES = ("AlwaysAllow", "IfHealthyBudget")
CONDITION_STATUSES = ("False", "True", "Unknown")
MAX_CONDITION_REASON = 1024
MAX_CONDITION_MESSAGE = 32 * 1024
_CONDITION_REASON = r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?"
_INTEGER = re.compile(r"-?[0-9]+")


def _shown(value: str) -> int | str:
    """An IntOrString as an error shows it: a number bare, a string quoted."""
    return int(value) if _INTEGER.fullmatch(value) else value


def _int_or_percent(value: str, path: str) -> Errors:
    """ValidatePositiveIntOrPercent and IsNotMoreThan100Percent: `n >= 0` or `"0%"`..`"100%"`."""
    if _INTEGER.fullmatch(value):
        return nonnegative(int(value), path)
    if not re.fullmatch(PERCENT, value):
        return [invalid(path, value, regex_error(
            "a valid percent string must be a numeric string followed by an ending '%'", PERCENT, "1%", "93%"))]
    if int(value[:-1]) > 100:
        return [invalid(path, _shown(value), "must not be greater than 100%")]
    return []


def validate_pod_disruption_budget_spec(spec: policy_pb2.PodDisruptionBudgetSpec, path: str = "spec") -> Errors:
    errors: Errors = []
    if spec.min_available and spec.max_unavailable:
        errors.append(invalid(path, manifest.to_dict(spec), "minAvailable and maxUnavailable cannot be both set"))
    if spec.min_available:
        errors += _int_or_percent(spec.min_available, f"{path}.minAvailable")
    if spec.max_unavailable:
        errors += _int_or_percent(spec.max_unavailable, f"{path}.maxUnavailable")
    errors += validate_label_selector(spec.selector, f"{path}.selector")
    if spec.HasField("unhealthy_pod_eviction_policy") and \
            spec.unhealthy_pod_eviction_policy not in UNHEALTHY_POD_EVICTION_POLICIES:
        errors.append(unsupported(f"{path}.unhealthyPodEvictionPolicy", spec.unhealthy_pod_eviction_policy,
                                  UNHEALTHY_POD_EVICTION_POLICIES))
    return errors


def validate_pod_disruption_budget(pdb: policy_pb2.PodDisruptionBudget,
                                   old: policy_pb2.PodDisruptionBudget | None) -> Errors:
    """The spec, on create and on update alike (policy/v1 budgets may be edited)."""
    return validate_pod_disruption_budget_spec(pdb.spec)


def validate_conditions(conditions: list[meta_pb2.Condition], path: str) -> Errors:
    """metav1.Condition lists (ValidateConditions): unique types, known statuses, reasons set."""
    errors: Errors = []
    seen: set[str] = set()
    for i, cond in enumerate(conditions):
        p = f"{path}[{i}]"
        errors += [invalid(f"{p}.type", cond.type, msg) for msg in is_qualified_name(cond.type)]
        if cond.type in seen:
            errors.append(duplicate(f"{p}.type", cond.type))
        seen.add(cond.type)
        if cond.status not in CONDITION_STATUSES:
            errors.append(unsupported(f"{p}.status", cond.status, CONDITION_STATUSES))
        if cond.observed_generation < 0:
            errors.append(invalid(f"{p}.observedGeneration", cond.observed_generation,
                                  "must be greater than or equal to zero"))
        if not cond.HasField("last_transition_time"):
            errors.append(required(f"{p}.lastTransitionTime", "must be set"))
        if not cond.reason:
            errors.append(required(f"{p}.reason", "must be set"))
        elif not re.fullmatch(_CONDITION_REASON, cond.reason):
            errors.append(invalid(f"{p}.reason", cond.reason, regex_error(
                "a condition reason must start with alphabetic character, optionally followed by a string of "
                "alphanumeric characters or '_,:', and must end with an alphanumeric character or '_'",
                _CONDITION_REASON, "my_name", "MY_NAME", "MyName", "ReasonA,ReasonB", "ReasonA:ReasonB")))
        if len(cond.reason) > MAX_CONDITION_REASON:
            errors.append(too_long(f"{p}.reason", MAX_CONDITION_REASON))
        if len(cond.message) > MAX_CONDITION_MESSAGE:
            errors.append(too_long(f"{p}.message", MAX_CONDITION_MESSAGE))
    return errors


def validate_pod_disruption_budget_status(status: policy_pb2.PodDisruptionBudgetStatus,
                                          path: str = "status") -> Errors:
    """ValidatePodDisruptionBudgetStatusUpdate (policy/v1): conditions and non-negative counts."""
    errors = validate_conditions(list(status.conditions), f"{path}.conditions")
    errors += nonnegative(status.disruptions_allowed, f"{path}.disruptionsAllowed")
    errors += nonnegative(status.current_healthy, f"{path}.currentHealthy")
    errors += nonnegative(status.desired_healthy, f"{path}.desiredHealthy")
    errors += nonnegative(status.expected_pods, f"{path}.expectedPods")
    return errors
