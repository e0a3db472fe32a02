"""What an object counts against a namespace's ResourceQuotas (Kubernetes' pkg/quota/v1).

Both ends of quota read this one module, so they can never disagree on a number:
ResourceQuota admission (apiserver/admission/resourcequota.py) refuses a write
that would take a namespace past `spec.hard`, and the resourcequota controller
(controllers/resourcequota.py) keeps `status.used` equal to what is stored.

An `Evaluator` per counted kind says which quota resource names it answers for
and what one object uses:

- every kind: its object count `count/<resource>[.<group>]` (all objects stored);
- pods: `pods` and the compute resources `requests.cpu`, `requests.memory`,
  `limits.cpu`, `limits.memory` (`cpu`, `memory` are requests), ephemeral
  storage and `requests.<extended resource>`, but only while the pod is not
  terminal (Succeeded/Failed) nor terminating past its grace period;
- services: `services`, `services.loadbalancers`, `services.nodeports`;
- configmaps, secrets, resourcequotas: their legacy short names;
- persistentvolumeclaims: `persistentvolumeclaims` and `requests.storage` (the
  larger of the request and what a resize has allocated), and both per class as
  `<class>.storageclass.storage.k8s.io/{persistentvolumeclaims,requests.storage}`.

Quota `scopes` and `scopeSelector` (Terminating, NotTerminating, BestEffort,
NotBestEffort, PriorityClass) narrow a quota to the pods they match; a scoped
quota tracks nothing but pods, as in Kubernetes.

Amounts keep Kubernetes' Quantity format so `status.used` reads as Kubernetes
writes it: a sum takes the format of its first non-zero term ("512Mi", "1500m"),
counts are plain integers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from google.protobuf.message import Message

from proto import core_pb2, kinds, selectors
from proto.quantity import DECIMAL_SI, format_quantity, parse_quantity, quantity_format


class Amount(NamedTuple):
    """A quantity with the format it is written back in."""

    value: Decimal
    fmt: str = DECIMAL_SI

    @classmethod
    def parse(cls, text: str) -> Amount:
        return cls(parse_quantity(text), quantity_format(text))

    def plus(self, other: Amount) -> Amount:
        # Kubernetes' Quantity.Add: a zero takes the format of what is added to it.
        return Amount(self.value + other.value, other.fmt if self.value == 0 else self.fmt)

    def __str__(self) -> str:
        return format_quantity(self.value, self.fmt)


ZERO = Amount(Decimal(0))
ONE = Amount(Decimal(1))

Usage = dict[str, Amount]


def add(a: Mapping[str, Amount], b: Mapping[str, Amount]) -> Usage:
    out = dict(a)
    for name, amount in b.items():
        out[name] = out.get(name, ZERO).plus(amount)
    return out


def subtract_non_negative(a: Mapping[str, Amount], b: Mapping[str, Amount]) -> Usage:
    """`a - b` per resource, never below zero (an update is charged only for what it adds)."""
    return {name: Amount(max(amount.value - b.get(name, ZERO).value, Decimal(0)), amount.fmt)
            for name, amount in a.items()}


def count_name(kind: kinds.Kind) -> str:
    """The object-count resource name: `count/pods`, `count/deployments.apps`."""
    return f"count/{kind.qualified_resource}"


# ---------------------------------------------------------------- pods

# Compute resources counted as `<name>` (meaning requests), `requests.<name>` and `limits.<name>`.
STANDARD_COMPUTE = ("cpu", "memory", "ephemeral-storage")
# A quota on one of these makes every container state it (Kubernetes' backward-compatible rule).
MUST_SPECIFY = frozenset({"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"})


def _container_resources(container: core_pb2.Container) -> tuple[Usage, Usage]:
    """(requests, limits) of one container; a limit stands in for an unset request, as defaulting does."""
    limits = {name: Amount.parse(text) for name, text in container.resources.limits.items()}
    requests = dict(limits)
    requests.update({name: Amount.parse(text) for name, text in container.resources.requests.items()})
    return requests, limits


def _pod_resources(pod: core_pb2.Pod) -> tuple[Usage, Usage]:
    """The pod's requests and limits: its containers' sum, or its largest init container if larger."""
    requests: Usage = {}
    limits: Usage = {}
    for container in pod.spec.containers:
        r, lim = _container_resources(container)
        requests, limits = add(requests, r), add(limits, lim)
    for container in pod.spec.init_containers:
        r, lim = _container_resources(container)
        for total, init in ((requests, r), (limits, lim)):
            for name, amount in init.items():
                if amount.value > total.get(name, ZERO).value:
                    total[name] = amount
    return requests, limits


def _compute_usage(requests: Mapping[str, Amount], limits: Mapping[str, Amount]) -> Usage:
    usage: Usage = {}
    for name, amount in requests.items():
        if name in STANDARD_COMPUTE:
            usage[name] = amount
        usage[f"requests.{name}"] = amount  # hugepages-* and extended resources are quota'd as requests only
    for name in STANDARD_COMPUTE:
        if name in limits:
            usage[f"limits.{name}"] = limits[name]
    return usage


def pod_counts(pod: core_pb2.Pod, now: float) -> bool:
    """Whether the pod still holds its compute quota (Kubernetes' QuotaV1Pod).

    Terminal pods do not; nor do pods still terminating a grace period after
    their deletion time (a lost node must not hold a namespace's quota forever).
    """
    if pod.status.phase in ("Succeeded", "Failed"):
        return False
    expiry = terminating_expiry(pod)
    return expiry is None or now <= expiry


def terminating_expiry(pod: core_pb2.Pod) -> float | None:
    """When a terminating pod stops counting (deletionTimestamp + grace period), if it is terminating."""
    if not pod.metadata.HasField("deletion_timestamp") or not pod.metadata.HasField("deletion_grace_period_seconds"):
        return None
    return pod.metadata.deletion_timestamp.seconds + pod.metadata.deletion_grace_period_seconds


def pod_usage(obj: Message, now: float) -> Usage:
    pod: Any = obj
    usage: Usage = {"count/pods": ONE}  # the object count tracks every stored pod, terminal or not
    if pod_counts(pod, now):
        usage["pods"] = ONE
        usage.update(_compute_usage(*_pod_resources(pod)))
    return usage


_POD_RESOURCES = frozenset({"pods", "count/pods", *STANDARD_COMPUTE, *(f"requests.{n}" for n in STANDARD_COMPUTE),
                            *(f"limits.{n}" for n in STANDARD_COMPUTE)})


def _matches_pod_resource(name: str) -> bool:
    """Pods' names: the standard ones, requests.hugepages-<size> and requests.<domain>/<extended resource>."""
    if name in _POD_RESOURCES:
        return True
    requested = name.removeprefix("requests.")
    if requested == name:
        return False
    domain = requested.partition("/")[0] if "/" in requested else ""
    return requested.startswith("hugepages-") or (bool(domain) and not domain.endswith("kubernetes.io"))


def missing_requirements(pod: core_pb2.Pod, required: Iterable[str]) -> str:
    """Kubernetes' pod Constraints: '' or 'requests.cpu for: app,sidecar; limits.memory for: app'."""
    wanted = MUST_SPECIFY.intersection(required)
    missing: dict[str, list[str]] = {}
    for container in (*pod.spec.init_containers, *pod.spec.containers):
        has = _compute_usage(*_container_resources(container))
        for name in sorted(wanted - set(has)):
            missing.setdefault(name, []).append(container.name)
    return "; ".join(f"{name} for: {','.join(sorted(names))}" for name, names in sorted(missing.items()))


def is_best_effort(pod: core_pb2.Pod) -> bool:
    """QoS class BestEffort: no container requests or limits cpu or memory."""
    return not any(name in ("cpu", "memory")
                   for c in (*pod.spec.init_containers, *pod.spec.containers)
                   for name in (*c.resources.requests, *c.resources.limits))


# ---------------------------------------------------------------- services

def service_usage(obj: Message, now: float) -> Usage:
    svc: Any = obj
    usage: Usage = {"services": ONE, "count/services": ONE, "services.loadbalancers": ZERO,
                    "services.nodeports": ZERO}
    ports = len(svc.spec.ports)
    if svc.spec.type == "NodePort":
        usage["services.nodeports"] = Amount(Decimal(ports))
    elif svc.spec.type == "LoadBalancer":
        usage["services.loadbalancers"] = ONE
        if svc.spec.HasField("allocate_load_balancer_node_ports") and not svc.spec.allocate_load_balancer_node_ports:
            # Node ports suppressed: only those asked for explicitly are taken.
            ports = sum(1 for p in svc.spec.ports if p.node_port)
        usage["services.nodeports"] = Amount(Decimal(ports))
    return usage


# ---------------------------------------------------------------- persistent volume claims

STORAGE_CLASS_SUFFIX = ".storageclass.storage.k8s.io/"
_CLAIM_RESOURCES = ("persistentvolumeclaims", "requests.storage")


def _matches_claim_resource(name: str) -> bool:
    """`<class>.storageclass.storage.k8s.io/persistentvolumeclaims` or `.../requests.storage`."""
    prefix, found, resource = name.partition(STORAGE_CLASS_SUFFIX)
    return bool(found and prefix) and resource in _CLAIM_RESOURCES


def claim_usage(obj: Message, now: float) -> Usage:
    pvc: Any = obj
    requested = pvc.spec.resources.requests.get("storage")
    allocated = pvc.status.allocated_resources.get("storage")
    sizes = [Amount.parse(q) for q in (requested, allocated) if q]
    # A claim being resized counts at its larger size, as Kubernetes' pvc evaluator does.
    storage = max(sizes, key=lambda a: a.value) if sizes else ZERO
    usage: Usage = {"persistentvolumeclaims": ONE, "count/persistentvolumeclaims": ONE, "requests.storage": storage}
    if pvc.spec.storage_class_name:
        prefix = pvc.spec.storage_class_name + STORAGE_CLASS_SUFFIX
        usage[prefix + "persistentvolumeclaims"] = ONE
        usage[prefix + "requests.storage"] = storage
    return usage


# ---------------------------------------------------------------- evaluators

@dataclass(frozen=True)
class Evaluator:
    """How one kind counts against quotas (Kubernetes' quota.Evaluator)."""

    kind: kinds.Kind
    names: frozenset[str] = frozenset()  # resource names besides count/<resource>
    usage_of: Callable[[Message, float], Usage] | None = None  # None: one object, counted
    matches_name: Callable[[str], bool] | None = None  # open-ended names (pods' requests.<extended>)
    handles_update: bool = False  # an update can use more (a Service turned NodePort)
    scoped: bool = False  # scopes and scopeSelector apply (pods only)
    count: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "count", count_name(self.kind))

    def matches(self, name: str) -> bool:
        """Whether this kind counts towards resource `name`."""
        if name == self.count or name in self.names:
            return True
        return self.matches_name is not None and self.matches_name(name)

    def matching(self, names: Iterable[str]) -> list[str]:
        return sorted(n for n in names if self.matches(n))

    def usage(self, obj: Message, now: float | None = None) -> Usage:
        if self.usage_of is None:
            return dict.fromkeys((self.count, *self.names), ONE)
        return self.usage_of(obj, time.time() if now is None else now)


def _object_count(resource: str, *short: str) -> Evaluator:
    return Evaluator(kinds.resolve(resource), frozenset(short))


EVALUATORS: tuple[Evaluator, ...] = (
    Evaluator(kinds.resolve("pods"), frozenset({"pods"}), pod_usage, _matches_pod_resource, scoped=True),
    Evaluator(kinds.resolve("services"), frozenset({"services", "services.loadbalancers", "services.nodeports"}),
              service_usage, handles_update=True),
    Evaluator(kinds.resolve("persistentvolumeclaims"), frozenset(_CLAIM_RESOURCES), claim_usage,
              _matches_claim_resource, handles_update=True),
    _object_count("configmaps", "configmaps"),
    _object_count("secrets", "secrets"),
    _object_count("resourcequotas", "resourcequotas"),
    _object_count("replicasets"),
    _object_count("deployments"),
    _object_count("jobs"),
    _object_count("cronjobs"),
)

_BY_RESOURCE = {e.kind.resource: e for e in EVALUATORS}


def evaluator_for(kind: kinds.Kind) -> Evaluator | None:
    """The evaluator of a kind quota counts (resources are unique across Flotilla's groups)."""
    found = _BY_RESOURCE.get(kind.resource)
    return found if found is not None and found.kind.group == kind.group else None


# ---------------------------------------------------------------- scopes

def scope_requirements(quota: core_pb2.ResourceQuota) -> list[core_pb2.ScopedResourceSelectorRequirement]:
    """`spec.scopes` (each an Exists) and `spec.scopeSelector`, ANDed."""
    found = [core_pb2.ScopedResourceSelectorRequirement(scope_name=s, operator="Exists") for s in quota.spec.scopes]
    found.extend(quota.spec.scope_selector.match_expressions)
    return found


_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def _scope_matches(req: core_pb2.ScopedResourceSelectorRequirement, pod: core_pb2.Pod) -> bool:
    name = req.scope_name
    if name == "Terminating":
        return pod.spec.HasField("active_deadline_seconds") and pod.spec.active_deadline_seconds >= 0
    if name == "NotTerminating":
        return not pod.spec.HasField("active_deadline_seconds")
    if name == "BestEffort":
        return is_best_effort(pod)
    if name == "NotBestEffort":
        return not is_best_effort(pod)
    if name == "PriorityClass" and req.operator in _OPERATORS:
        labels = {name: pod.spec.priority_class_name} if pod.spec.priority_class_name else {}
        return selectors.Requirement(name, _OPERATORS[req.operator], tuple(req.values)).matches(labels)
    return False  # CrossNamespacePodAffinity and unknown scopes match nothing here


def matches(evaluator: Evaluator, quota: core_pb2.ResourceQuota, obj: Message) -> bool:
    """Whether `quota` tracks `obj`: it limits something the object uses, and every scope matches."""
    if not evaluator.matching(quota.spec.hard):
        return False
    requirements = scope_requirements(quota)
    if not requirements:
        return True
    pod: Any = obj
    return evaluator.scoped and all(_scope_matches(r, pod) for r in requirements)


# ---------------------------------------------------------------- usage of a namespace

def tracked_usage(evaluator: Evaluator, quota: core_pb2.ResourceQuota, objects: Iterable[Message],
                  now: float | None = None) -> Usage:
    """What `objects` (one namespace's, of the evaluator's kind) use of each resource `quota` limits."""
    now = time.time() if now is None else now
    names = evaluator.matching(quota.spec.hard)
    used = dict.fromkeys(names, ZERO)
    if not names or (scope_requirements(quota) and not evaluator.scoped):
        return used  # a scoped quota tracks pods only
    for obj in objects:
        if matches(evaluator, quota, obj):
            counted = evaluator.usage(obj, now)
            for name in names:
                if name in counted:
                    used[name] = used[name].plus(counted[name])
    return used


def usage(quota: core_pb2.ResourceQuota, objects: Callable[[kinds.Kind], Iterable[Message]],
          now: float | None = None) -> Usage:
    """What one namespace's objects (`objects(kind)`) use of each resource `quota` limits.

    Only the kinds the quota limits are asked for. Resources no evaluator knows
    are left out (their usage is unknown, not zero).
    """
    used: Usage = {}
    for evaluator in EVALUATORS:
        if evaluator.matching(quota.spec.hard):
            used.update(tracked_usage(evaluator, quota, objects(evaluator.kind), now))
    return used


def status(quota: core_pb2.ResourceQuota, used: Mapping[str, Amount]) -> core_pb2.ResourceQuotaStatus:
    """`status.hard` = `spec.hard`; `status.used` for each hard resource, newly counted or as it was.

    A resource counted in `used` replaces the old figure; one not counted keeps
    what status said (Kubernetes preserves past observations it cannot redo).
    """
    new = core_pb2.ResourceQuotaStatus()
    new.hard.update(quota.spec.hard)
    for name in quota.spec.hard:
        if name in used:
            new.used[name] = str(used[name])
        elif name in quota.status.used:
            new.used[name] = quota.status.used[name]
    return new


def pretty(usage: Mapping[str, Amount]) -> str:
    """`requests.cpu=500m,services=1`: resources sorted by name, as Kubernetes' messages list them."""
    return ",".join(f"{name}={usage[name]}" for name in sorted(usage))
