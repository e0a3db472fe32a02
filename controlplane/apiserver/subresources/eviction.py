"""The `eviction` subresource: `kubectl drain` asks for each pod to be evicted.

`POST /api/v1/namespaces/<ns>/pods/<name>/eviction` carries a policy/v1 (or, from older
clients, policy/v1beta1) Eviction naming the pod, with the DeleteOptions to delete it
with. `delete_options` checks the Eviction against the URL and returns those options;
the request core then deletes the pod with them through the ordinary delete path
(authorised as `create pods/eviction`), and answers 201 with a Success Status, as
kube-apiserver does.

An eviction differs from a delete in that it respects PodDisruptionBudgets (a 429
when the budget would be broken, which kubectl retries); Flotilla has no
PodDisruptionBudgets yet (a later issue), so today every eviction that names its pod
is allowed.
"""

from __future__ import annotations

from typing import Any

from proto import manifest, meta_pb2, policy_pb2
from proto.errors import BadRequest, Invalid
from proto.kinds import Kind

# Codec entries for the bodies: not resources of their own, only what manifest.from_dict needs.
EVICTION = Kind("Eviction", "eviction", "eviction", "policy/v1", policy_pb2.Eviction, True, has_status=False)
DELETE_OPTIONS = Kind("DeleteOptions", "deleteoptions", "deleteoptions", "v1", meta_pb2.DeleteOptions, False,
                      has_status=False)
EVICTION_VERSIONS = ("policy/v1", "policy/v1beta1")  # the same shape in both
PROPAGATION_POLICIES = ("Orphan", "Background", "Foreground")


def validate_delete_options(options: Any, what: str = "DeleteOptions") -> dict[str, Any]:
    """DeleteOptions (an Eviction's, or a DELETE's body) checked, as Kubernetes JSON without TypeMeta.

    Raises Invalid naming each bad field, as kube-apiserver's ValidateDeleteOptions does.
    """
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise BadRequest(f"{what} must be a JSON object, not {type(options).__name__}")
    parsed = manifest.from_dict({k: v for k, v in options.items() if k not in ("apiVersion", "kind")},
                                DELETE_OPTIONS, what=what)
    assert isinstance(parsed, meta_pb2.DeleteOptions)
    causes: list[tuple[str, str]] = []
    if parsed.HasField("propagation_policy") and parsed.propagation_policy not in PROPAGATION_POLICIES:
        causes.append(("propagationPolicy", f'Unsupported value: "{parsed.propagation_policy}": supported values: '
                                            + ", ".join(f'"{p}"' for p in PROPAGATION_POLICIES)))
    if parsed.HasField("orphan_dependents") and parsed.HasField("propagation_policy"):
        causes.append(("propagationPolicy", "Invalid value: "
                       f'"{parsed.propagation_policy}": orphanDependents and deletionPropagation cannot be both set'))
    if parsed.HasField("grace_period_seconds") and parsed.grace_period_seconds < 0:
        causes.append(("gracePeriodSeconds", f"Invalid value: {parsed.grace_period_seconds}: "
                                             "must be greater than or equal to 0"))
    causes += [("dryRun", f'Unsupported value: "{d}": supported values: "All"') for d in parsed.dry_run if d != "All"]
    if causes:
        raise Invalid(what, causes)
    cleaned = manifest.to_dict(parsed)
    cleaned.pop("apiVersion", None)
    cleaned.pop("kind", None)
    return cleaned


def delete_options(body: dict[str, Any], *, name: str = "", namespace: str = "") -> dict[str, Any]:
    """The DeleteOptions of a policy/v1 Eviction, after checking it names the pod in the URL.

    `name` and `namespace` are the URL's; an Eviction without a namespace takes the URL's.
    Raises BadRequest (wrong kind, names that do not match) or Invalid (bad options).
    """
    if not isinstance(body, dict):
        raise BadRequest(f"an Eviction must be a JSON object, not {type(body).__name__}")
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if kind != "Eviction" or api_version not in EVICTION_VERSIONS:
        raise BadRequest(f"expected an Eviction of policy/v1, got {kind or 'no kind'} "
                         f"of {api_version or 'no apiVersion'}")
    parsed = manifest.from_dict({**body, "apiVersion": EVICTION.api_version}, EVICTION,
                                what=f'Eviction.policy "{name}"')
    assert isinstance(parsed, policy_pb2.Eviction)
    if name and parsed.metadata.name != name:
        raise BadRequest("name in URL does not match name in Eviction object")
    if namespace and parsed.metadata.namespace and parsed.metadata.namespace != namespace:
        raise BadRequest("the namespace of the provided object does not match the namespace sent on the request")
    return validate_delete_options(body.get("deleteOptions"), what=f'Eviction.policy "{name}"')
