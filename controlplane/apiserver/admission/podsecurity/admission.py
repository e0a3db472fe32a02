"""PodSecurity admission: a namespace's Pod Security Standard, enforced on its pods.

The plugin (Kubernetes' PodSecurity, built into kube-apiserver since 1.25)
reads the pod's namespace labels (policy.py) and evaluates the pod against
three levels at once:

- enforce: a violating pod is refused —
  `pods "evil" is forbidden: violates PodSecurity "baseline:latest": hostPath volumes (volume "root")`;
- audit: violations are recorded on the request's audit record
  (`pod-security.kubernetes.io/audit-violations`);
- warn: violations are returned to the client as a warning
  (`would violate PodSecurity "restricted:latest": ...`), unless the request
  is refused anyway.

Workloads with a pod template (Deployments, ReplicaSets) are audited and warned
about, never refused: their pods are refused when the controller creates them,
and the warning tells the author now. Pod updates that change nothing the
standards look at (labels, status, binding) are not evaluated, so tightening a
namespace never strands its running pods; instead the namespace update itself
warns which existing pods would now be refused. Namespace labels that do not
parse are refused when a namespace is created or its labels change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from google.protobuf.message import Message

from controlplane.apiserver.admission import warnings
from controlplane.apiserver.admission.interface import CREATE, UPDATE, Request
from controlplane.apiserver.admission.podsecurity import checks
from controlplane.apiserver.admission.podsecurity.policy import (
    PRIVILEGED,
    Defaults,
    LevelVersion,
    Policy,
    policy_for,
    stricter,
)
from proto import core_pb2, meta_pb2
from proto.errors import Forbidden, Invalid

NAME = "PodSecurity"
ENFORCE_POLICY_ANNOTATION = "pod-security.kubernetes.io/enforce-policy"
AUDIT_VIOLATIONS_ANNOTATION = "pod-security.kubernetes.io/audit-violations"

# Pod subresources that cannot change what the standards look at (Kubernetes' ignoredPodSubresources);
# any other subresource is evaluated, so an unknown one fails safe.
_IGNORED_POD_SUBRESOURCES = frozenset({"status", "binding", "exec", "attach", "eviction", "log", "portforward",
                                       "proxy"})
# On a namespace relabel, how many existing pods to check (Kubernetes' default limit).
MAX_PODS_TO_CHECK = 3000

GetNamespace = Callable[[str], Awaitable[Message | None]]
ListPods = Callable[[str], Awaitable[Sequence[core_pb2.Pod]]]


def pod_template(obj: Message) -> core_pb2.PodTemplateSpec | None:
    """The pod template of a workload (Deployment, ReplicaSet, ...), or None for kinds without one."""
    spec_field = obj.DESCRIPTOR.fields_by_name.get("spec")
    if spec_field is None or spec_field.message_type is None:
        return None
    template_field = spec_field.message_type.fields_by_name.get("template")
    if template_field is None or template_field.message_type is not core_pb2.PodTemplateSpec.DESCRIPTOR:
        return None
    return obj.spec.template  # type: ignore[attr-defined]


def _significant_pod_update(new: core_pb2.Pod, old: core_pb2.Pod) -> bool:
    """Whether an update changes anything a check reads: the spec, or the AppArmor annotations."""
    if new.spec.SerializeToString(deterministic=True) != old.spec.SerializeToString(deterministic=True):
        return True

    def apparmor(pod: core_pb2.Pod) -> dict[str, str]:
        return {k: v for k, v in pod.metadata.annotations.items() if k.startswith("container.apparmor.")}
    return apparmor(new) != apparmor(old)


class PodSecurity:
    """A validating plugin; `get_namespace` reads a Namespace (None: absent), `list_pods` a namespace's pods."""

    NAME = NAME

    def __init__(self, get_namespace: GetNamespace, list_pods: ListPods, defaults: Defaults | None = None) -> None:
        self._get_namespace = get_namespace
        self._list_pods = list_pods
        self.defaults = defaults or Defaults()

    @asynccontextmanager
    async def validate(self, request: Request) -> AsyncIterator[None]:
        if request.operation in (CREATE, UPDATE):
            if isinstance(request.obj, core_pb2.Namespace):
                await self._validate_namespace(request)
            elif isinstance(request.obj, core_pb2.Pod):
                await self._validate_pod(request)
            elif (template := pod_template(request.obj)) is not None and not request.subresource:
                await self._validate_template(request, template)
        yield

    # ------------------------------------------------------------ policy

    async def policy(self, namespace: str) -> tuple[Policy, bool]:
        """The namespace's policy, and whether its labels parsed."""
        defaults = self.defaults.for_namespace(namespace)
        ns = await self._get_namespace(namespace)
        labels = dict(ns.metadata.labels) if ns is not None else {}  # type: ignore[attr-defined]
        policy, errors = policy_for(labels, defaults)
        return policy, not errors

    # ------------------------------------------------------------ pods and templates

    async def _validate_pod(self, request: Request) -> None:
        if request.subresource in _IGNORED_POD_SUBRESOURCES:
            return
        pod: core_pb2.Pod = request.obj  # type: ignore[assignment]
        policy, parsed = await self.policy(request.namespace)
        if parsed and policy.all_privileged():
            return
        if request.operation == UPDATE and isinstance(request.old, core_pb2.Pod) \
                and not _significant_pod_update(pod, request.old):
            return
        self._evaluate(request, policy, pod.metadata, pod.spec, enforce=True)

    async def _validate_template(self, request: Request, template: core_pb2.PodTemplateSpec) -> None:
        policy, parsed = await self.policy(request.namespace)
        if parsed and policy.audit.level == PRIVILEGED and policy.warn.level == PRIVILEGED:
            return
        self._evaluate(request, policy, template.metadata, template.spec, enforce=False)

    def _evaluate(self, request: Request, policy: Policy, meta: meta_pb2.ObjectMeta, spec: core_pb2.PodSpec, *,
                  enforce: bool) -> None:
        results: dict[LevelVersion, list[checks.Violation]] = {}

        def violations(lv: LevelVersion) -> list[checks.Violation]:
            if lv not in results:
                results[lv] = checks.evaluate(lv, meta, spec)
            return results[lv]

        refused = None
        if enforce:
            warnings.add_annotation(ENFORCE_POLICY_ANNOTATION, str(policy.enforce))
            if found := violations(policy.enforce):
                name = request.obj.metadata.name  # type: ignore[attr-defined]
                refused = Forbidden(f'{request.kind.qualified_resource} "{name}" is forbidden: violates PodSecurity '
                                    f'"{policy.enforce}": {checks.forbidden_detail(found)}')
        if found := violations(policy.audit):
            warnings.add_annotation(AUDIT_VIOLATIONS_ANNOTATION,
                                    f'would violate PodSecurity "{policy.audit}": {checks.forbidden_detail(found)}')
        if refused is not None:
            raise refused  # no warning on top of the refusal, as Kubernetes
        if found := violations(policy.warn):
            warnings.add_warning(f'would violate PodSecurity "{policy.warn}": {checks.forbidden_detail(found)}')

    # ------------------------------------------------------------ namespaces

    async def _validate_namespace(self, request: Request) -> None:
        ns: core_pb2.Namespace = request.obj  # type: ignore[assignment]
        defaults = self.defaults.for_namespace(ns.metadata.name)
        policy, errors = policy_for(dict(ns.metadata.labels), defaults)
        if request.operation == CREATE or not isinstance(request.old, core_pb2.Namespace):
            if errors:
                raise Invalid(f'Namespace "{ns.metadata.name}"', errors)
            return
        old_policy, old_errors = policy_for(dict(request.old.metadata.labels), defaults)
        if errors and errors != old_errors:  # an already-broken label may stay while others change
            raise Invalid(f'Namespace "{ns.metadata.name}"', errors)
        new, old = policy.enforce, old_policy.enforce
        if new == old or new.level == PRIVILEGED:
            return
        if new.version == old.version and not stricter(new.level, old.level):
            return
        for text in await self._existing_pod_warnings(ns.metadata.name, new):
            warnings.add_warning(text)

    async def _existing_pod_warnings(self, namespace: str, enforce: LevelVersion) -> list[str]:
        """Which pods already in the namespace the new enforce level would refuse (Kubernetes' wording)."""
        pods = list(await self._list_pods(namespace))
        checked = pods[:MAX_PODS_TO_CHECK]
        first_pod: dict[str, str] = {}  # reasons -> lexically first pod name
        count: dict[str, int] = {}
        for pod in checked:
            found = checks.evaluate(enforce, pod.metadata, pod.spec)
            if not found:
                continue
            reasons = checks.forbidden_reasons(found)
            name = pod.metadata.name
            first_pod[reasons] = min(first_pod.get(reasons, name), name)
            count[reasons] = count.get(reasons, 0) + 1
        out = []
        if len(checked) < len(pods):
            out.append(f"new PodSecurity enforce level only checked against the first {len(checked)} "
                       f"of {len(pods)} existing pods")
        if first_pod:
            out.append(f'existing pods in namespace "{namespace}" violate the new PodSecurity enforce level '
                       f'"{enforce}"')
        per_pod = []
        for reasons, name in first_pod.items():
            others = count[reasons] - 1
            suffix = "" if others == 0 else " (and 1 other pod)" if others == 1 else f" (and {others} other pods)"
            per_pod.append(f"{name}{suffix}: {reasons}")
        return out + sorted(per_pod)
