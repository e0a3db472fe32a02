"""The `eviction` subresource: a pod deleted only if its PodDisruptionBudget allows it.

`POST /api/v1/namespaces/<ns>/pods/<name>/eviction` carries a policy/v1 (or, from older
clients, policy/v1beta1) Eviction naming the pod, with the DeleteOptions to delete it
with. `delete_options` checks the Eviction against the URL and returns those options;
`evict` then does what kube-apiserver's EvictionREST does (authorised by the request
core as `create pods/eviction`; the answer is 201 with a Success Status):

1. a pod that is finished, Pending or already terminating has disrupted nothing the
   budget counts: it is deleted at once;
2. otherwise the budgets covering it are found: none → delete; more than one → 500
   (the subresource cannot tell which to spend);
3. a not-Ready pod may go without spending the budget when the budget says
   AlwaysAllow, or when the application is healthy anyway (currentHealthy >=
   desiredHealthy > 0) — deleted with a resourceVersion precondition so it cannot
   have turned Ready in between (a lost race is a 429);
4. else check-and-decrement: a budget the controller has not yet counted for its
   generation, or with no disruptions left, is a 429 TooManyRequests (`Cannot evict
   pod as it would violate the pod's disruption budget.`, with a `DisruptionBudget`
   cause), which kubectl drain retries; otherwise disruptionsAllowed goes down by one
   and the pod is written into status.disruptedPods (so the controller does not count
   it healthy until it sees it deleted), guarded by the budget's resourceVersion and
   retried on Conflict;
5. the pod gets the `DisruptionTarget` condition (EvictionByEvictionAPI) and is deleted
   with the eviction's options.

The algorithm runs against an `EvictionStore` (get the pod, list and write budgets,
write the pod's status, delete it): `RegistryStore` is the apiserver's, over its own
registry with the caller's attributes for admission. Both transports reach it:
HTTP's `POST pods/<name>/eviction` and gRPC's `Evict` (which `kctl drain` calls).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from controlplane import disruptionbudget
from controlplane.apiserver.auth import Attributes
from proto import core_pb2, kinds, manifest, meta_pb2, policy_pb2
from proto.errors import ApiError, BadRequest, Conflict, Forbidden, Invalid, TooManyRequests
from proto.kinds import Kind

if TYPE_CHECKING:
    from controlplane.apiserver.registry import Registry

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


# ---------------------------------------------------------------- evicting, as EvictionREST.Create

PODS = kinds.resolve("pods")
PDBS = kinds.resolve("poddisruptionbudgets")
VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."
DISRUPTION_BUDGET_CAUSE = "DisruptionBudget"  # policyv1.DisruptionBudgetCause
MAX_DISRUPTED_POD_SIZE = 2000  # evictions the controller has not confirmed before a budget refuses more
# EvictionsRetry: conflicting writes are retried this often, about this far apart (jittered by a tenth).
EVICTION_RETRIES = 20
EVICTION_RETRY_DELAY = 0.5
DISRUPTION_TARGET = "DisruptionTarget"  # the pod condition saying why it is going away

Now = Callable[[], float]


class DeleteOptionsLike(Protocol):
    """The options an eviction deletes with (endpoints.DeleteOptions): a frozen dataclass."""

    @property
    def grace_period_seconds(self) -> int | None: ...
    @property
    def propagation_policy(self) -> str: ...
    @property
    def uid(self) -> str: ...
    @property
    def resource_version(self) -> str: ...
    @property
    def dry_run(self) -> bool: ...


class MultipleDisruptionBudgets(ApiError):
    """Kubernetes answers a pod covered by several budgets with a bare 500 Status (no reason)."""

    reason = ""
    http_code = 500


class EvictionStore(Protocol):
    """What an eviction reads and writes. Writes carry the object's resourceVersion: stale is Conflict."""

    async def get_pod(self, namespace: str, name: str) -> core_pb2.Pod: ...
    async def list_budgets(self, namespace: str) -> list[policy_pb2.PodDisruptionBudget]: ...
    async def get_budget(self, namespace: str, name: str) -> policy_pb2.PodDisruptionBudget: ...
    async def update_budget_status(self, pdb: policy_pb2.PodDisruptionBudget) -> policy_pb2.PodDisruptionBudget: ...
    async def update_pod_status(self, pod: core_pb2.Pod) -> core_pb2.Pod: ...
    async def delete_pod(self, namespace: str, name: str, options: DeleteOptionsLike) -> Message: ...


def too_many_requests(cause: str) -> TooManyRequests:
    """The 429 kubectl drain retries on, with the budget's situation as a DisruptionBudget cause."""
    return TooManyRequests(VIOLATION, [(DISRUPTION_BUDGET_CAUSE, cause)])


def _timestamp(now: Now) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(now() * 1e9))
    return stamp


def can_ignore_budget(pod: core_pb2.Pod) -> bool:
    """A finished, Pending or terminating pod disrupts nothing a budget counts (canIgnorePDB)."""
    return pod.status.phase in ("Succeeded", "Failed", "Pending") or pod.metadata.HasField("deletion_timestamp")


def _enforces_resource_version(pod: core_pb2.Pod) -> bool:
    """Delete only this version of a pod that could still become Ready (shouldEnforceResourceVersion)."""
    return pod.status.phase not in ("Succeeded", "Failed") and not pod.metadata.HasField("deletion_timestamp")


def may_skip_budget(pod: core_pb2.Pod, pdb: policy_pb2.PodDisruptionBudget) -> bool:
    """A not-Ready pod may go without spending the budget: AlwaysAllow, or the application is healthy anyway."""
    if disruptionbudget.is_healthy(pod):
        return False
    if pdb.spec.HasField("unhealthy_pod_eviction_policy") and pdb.spec.unhealthy_pod_eviction_policy == "AlwaysAllow":
        return True
    status = pdb.status
    return status.current_healthy >= status.desired_healthy > 0


def check_and_decrement(pdb: policy_pb2.PodDisruptionBudget, pod_name: str, now: Timestamp
                        ) -> policy_pb2.PodDisruptionBudget:
    """The budget with one disruption spent on `pod_name`, or the error refusing it (checkAndDecrement)."""
    name, status = pdb.metadata.name, pdb.status
    if status.observed_generation < pdb.metadata.generation:
        raise too_many_requests(f"The disruption budget {name} is still being processed by the server.")
    if status.disruptions_allowed < 0:
        raise Forbidden(f'poddisruptionbudget.policy "{name}" is forbidden: pdb disruptions allowed is negative')
    if len(status.disrupted_pods) > MAX_DISRUPTED_POD_SIZE:
        raise Forbidden(f'poddisruptionbudget.policy "{name}" is forbidden: DisruptedPods map too big - too many '
                        "evictions not confirmed by PDB controller")
    if status.disruptions_allowed == 0:
        raise too_many_requests(f"The disruption budget {name} needs {status.desired_healthy} healthy pods and "
                                f"has {status.current_healthy} currently")
    spent = policy_pb2.PodDisruptionBudget()
    spent.CopyFrom(pdb)
    spent.status.disruptions_allowed -= 1
    if spent.status.disruptions_allowed == 0:
        disruptionbudget.update_disruption_allowed_condition(spent.status, now)
    # The controller must not count the pod healthy before it sees it deleted (or DELETION_TIMEOUT passes).
    spent.status.disrupted_pods[pod_name].CopyFrom(now)
    return spent


async def _retrying(attempt: Callable[[], Any], *, retry: bool = True) -> Any:
    """Run `attempt` again after a pause while it loses races (retry.OnError(EvictionsRetry, IsConflict))."""
    for tries_left in range(EVICTION_RETRIES - 1, -1, -1):
        try:
            return await attempt()
        except Conflict:
            if not retry or tries_left == 0:
                raise
        await asyncio.sleep(EVICTION_RETRY_DELAY * (1 + random.random() / 10))


async def _spend_budget(store: EvictionStore, pod: core_pb2.Pod, pdb: policy_pb2.PodDisruptionBudget,
                        dry_run: bool, now: Now) -> None:
    """Check-and-decrement, re-reading the budget after each lost race."""
    current = [pdb]

    async def attempt() -> None:
        try:
            spent = check_and_decrement(current[0], pod.metadata.name, _timestamp(now))
            if not dry_run:
                await store.update_budget_status(spent)
        except Conflict:
            current[0] = await store.get_budget(pdb.metadata.namespace, pdb.metadata.name)
            raise

    await _retrying(attempt)


def _mark_disruption_target(pod: core_pb2.Pod, now: Timestamp) -> None:
    """The DisruptionTarget condition a Job's podFailurePolicy (and `kubectl describe`) reads."""
    cond = next((c for c in pod.status.conditions if c.type == DISRUPTION_TARGET), None)
    if cond is None:
        cond = pod.status.conditions.add(type=DISRUPTION_TARGET)
    if cond.status != "True":
        cond.last_transition_time.CopyFrom(now)
    cond.status, cond.reason, cond.message = "True", "EvictionByEvictionAPI", "Eviction API: evicting"


def _check_preconditions(pod: core_pb2.Pod, options: DeleteOptionsLike) -> None:
    meta, what = pod.metadata, f'Operation cannot be fulfilled on Pod "{pod.metadata.name}": '
    if options.uid and options.uid != meta.uid:
        raise Conflict(f"{what}the UID in the precondition ({options.uid}) does not match the UID in record "
                       f"({meta.uid}). The object might have been deleted and then recreated")
    if options.resource_version and options.resource_version != meta.resource_version:
        raise Conflict(f"{what}the ResourceVersion in the precondition ({options.resource_version}) does not match "
                       f"the ResourceVersion in record ({meta.resource_version}). The object might have been modified")


async def _add_condition_and_delete(store: EvictionStore, namespace: str, name: str, options: DeleteOptionsLike,
                                    now: Now) -> Message:
    """Mark the pod a DisruptionTarget (on its latest version, within the preconditions), then delete it."""
    if not options.dry_run:
        async def mark() -> core_pb2.Pod:
            pod = await store.get_pod(namespace, name)
            _check_preconditions(pod, options)
            marked = core_pb2.Pod()
            marked.CopyFrom(pod)
            _mark_disruption_target(marked, _timestamp(now))
            return await store.update_pod_status(marked)

        # A precondition's own Conflict is the caller's; only races with other writers are retried.
        updated: core_pb2.Pod = await _retrying(mark, retry=not options.resource_version)
        if options.resource_version:  # our own write moved it on: the precondition follows
            options = replace(options, resource_version=updated.metadata.resource_version)  # type: ignore[type-var]
    return await store.delete_pod(namespace, name, options)


async def evict_pod(store: EvictionStore, namespace: str, name: str, options: DeleteOptionsLike, *,
                    now: Now = time.time) -> Message:
    """Evict one pod as EvictionREST.Create does; the pod as deleted (or marked terminating).

    Raises TooManyRequests when its budget allows no disruption now, MultipleDisruptionBudgets
    (500) when several budgets cover it, and whatever the reads and the delete raise.
    """
    retry_conflicts = not options.resource_version
    pods: list[core_pb2.Pod] = []

    async def delete_if_budget_ignorable() -> Message | None:
        pod = await store.get_pod(namespace, name)
        pods.append(pod)
        if not can_ignore_budget(pod):
            return None
        delete_with = options
        if _enforces_resource_version(pod) and not options.resource_version:
            delete_with = replace(options, resource_version=pod.metadata.resource_version)  # type: ignore[type-var]
        return await _add_condition_and_delete(store, namespace, name, delete_with, now)

    deleted = await _retrying(delete_if_budget_ignorable, retry=retry_conflicts)
    if deleted is not None:
        return deleted
    pod = pods[-1]
    budgets = disruptionbudget.budgets_for(pod, await store.list_budgets(namespace))
    if len(budgets) > 1:
        raise MultipleDisruptionBudgets("This pod has more than one PodDisruptionBudget, which the eviction "
                                        "subresource does not support.")
    delete_with, guarded_by = options, ""
    if budgets:
        pdb = budgets[0]
        if may_skip_budget(pod, pdb):
            # Not Ready now: it must not turn Ready (and count) between this check and the delete.
            delete_with = replace(options, resource_version=pod.metadata.resource_version)  # type: ignore[type-var]
            guarded_by = pdb.metadata.name
        else:
            await _spend_budget(store, pod, pdb, options.dry_run, now)
    try:
        return await _add_condition_and_delete(store, namespace, name, delete_with, now)
    except Conflict:
        if guarded_by and not options.resource_version:
            raise too_many_requests(f"The disruption budget {guarded_by} is still being processed by the "
                                    "server.") from None
        raise


class RegistryStore:
    """The apiserver's EvictionStore: its registry, each write admitted with the evicting caller's attributes.

    The budget's status is written for the caller without asking RBAC about it, as
    kube-apiserver writes it through its loopback client: `create pods/eviction` is the right asked for.
    """

    def __init__(self, registry: Registry, caller: Attributes | None) -> None:
        self.registry = registry
        self.caller = caller

    def _as(self, verb: str, kind: Kind, name: str, subresource: str = "") -> Attributes | None:
        if self.caller is None:
            return None
        return replace(self.caller, verb=verb, resource=kind.resource, name=name, subresource=subresource,
                       api_group=kind.group)

    async def get_pod(self, namespace: str, name: str) -> core_pb2.Pod:
        pod = await self.registry.get(PODS, namespace, name)
        assert isinstance(pod, core_pb2.Pod)
        return pod

    async def list_budgets(self, namespace: str) -> list[policy_pb2.PodDisruptionBudget]:
        items, _, _, _ = await self.registry.list(PDBS, namespace)
        budgets = []
        for raw in items:
            pdb = policy_pb2.PodDisruptionBudget()
            pdb.ParseFromString(raw)
            budgets.append(pdb)
        return budgets

    async def get_budget(self, namespace: str, name: str) -> policy_pb2.PodDisruptionBudget:
        pdb = await self.registry.get(PDBS, namespace, name)
        assert isinstance(pdb, policy_pb2.PodDisruptionBudget)
        return pdb

    async def update_budget_status(self, pdb: policy_pb2.PodDisruptionBudget) -> policy_pb2.PodDisruptionBudget:
        caller = self._as("update", PDBS, pdb.metadata.name, "status")
        updated = await self.registry.update(PDBS, pdb.metadata.namespace, pdb, subresource="status", caller=caller)
        assert isinstance(updated, policy_pb2.PodDisruptionBudget)
        return updated

    async def update_pod_status(self, pod: core_pb2.Pod) -> core_pb2.Pod:
        caller = self._as("update", PODS, pod.metadata.name, "status")
        updated = await self.registry.update(PODS, pod.metadata.namespace, pod, subresource="status", caller=caller)
        assert isinstance(updated, core_pb2.Pod)
        return updated

    async def delete_pod(self, namespace: str, name: str, options: DeleteOptionsLike) -> Message:
        return await self.registry.delete(
            PODS, namespace, name, grace_period=options.grace_period_seconds,
            propagation_policy=options.propagation_policy, uid=options.uid,
            resource_version=options.resource_version, dry_run=options.dry_run,
            caller=self._as("delete", PODS, name))


async def evict(registry: Registry, namespace: str, name: str, options: DeleteOptionsLike,
                caller: Attributes | None) -> Message:
    """`create pods/<name>/eviction`, already authorised: evict the pod through the apiserver's registry."""
    return await evict_pod(RegistryStore(registry, caller), namespace, name, options)
