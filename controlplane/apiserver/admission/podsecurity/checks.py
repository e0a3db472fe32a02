"""The Pod Security Standards' checks, one function per check, as Kubernetes' pod-security-admission has them.

Each check looks at a pod's metadata and spec (a Pod's, or a workload's pod
template) and returns None when the pod passes, or a `Violation`: a short
reason ("host namespaces") and what exactly is wrong ("hostNetwork=true"),
worded as Kubernetes words them so messages match what users search for.

`evaluate(level_version, meta, spec)` runs the checks of a level as of a
version: baseline's checks for baseline; for restricted, restricted's checks
plus the baseline checks that no restricted check replaces (restricted volume
types replace hostPath volumes; "drop ALL" replaces the baseline capability
list). Checks run in Kubernetes' order — baseline checks sorted by ID, then
restricted ones — so several violations read the same as Kubernetes joins them.

Fields Flotilla's API does not have yet are not checked (and cannot be set):
windowsOptions.hostProcess, seLinuxOptions, procMount, seccompProfile,
appArmorProfile (the field; the annotations are checked), sysctls, ephemeral
containers and the non-core volume types. Restricted's seccompProfile
requirement is therefore not enforced; docs/security.md lists what that means.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from controlplane.apiserver.admission.podsecurity.policy import BASELINE, PRIVILEGED, RESTRICTED, LevelVersion
from proto import core_pb2, meta_pb2


@dataclass(frozen=True)
class Violation:
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason} ({self.detail})" if self.detail else self.reason


CheckFn = Callable[[meta_pb2.ObjectMeta, core_pb2.PodSpec], "Violation | None"]


@dataclass(frozen=True)
class Check:
    id: str
    level: str  # BASELINE or RESTRICTED
    since_minor: int  # the Kubernetes 1.x release whose policy version first has it
    run: CheckFn
    overrides: tuple[str, ...] = ()  # baseline checks this restricted check replaces


# ---------------------------------------------------------------- wording helpers

def _join_quote(items: list[str]) -> str:
    return ", ".join(f'"{item}"' for item in items)


def _plural(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


def _containers(spec: core_pb2.PodSpec) -> Iterator[core_pb2.Container]:
    """Init containers first, then containers, as Kubernetes visits them."""
    yield from spec.init_containers
    yield from spec.containers


def _security(container: core_pb2.Container) -> core_pb2.SecurityContext | None:
    return container.security_context if container.HasField("security_context") else None


def _pod_security(spec: core_pb2.PodSpec) -> core_pb2.PodSecurityContext | None:
    return spec.security_context if spec.HasField("security_context") else None


# ---------------------------------------------------------------- baseline

_APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"
_DEFAULT_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})


def app_armor_profile(meta: meta_pb2.ObjectMeta, spec: core_pb2.PodSpec) -> Violation | None:
    """The runtime's default AppArmor profile (or a local one) only: never `unconfined`."""
    bad = sorted(f'{key}="{value}"' for key, value in meta.annotations.items()
                 if key.startswith(_APPARMOR_ANNOTATION_PREFIX)
                 and value and value != "runtime/default" and not value.startswith("localhost/"))
    if not bad:
        return None
    return Violation(_plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(bad)), ", ".join(bad))


def capabilities_baseline(meta: meta_pb2.ObjectMeta, spec: core_pb2.PodSpec) -> Violation | None:
    """Added capabilities only from the container runtime's default set (no NET_RAW, no SYS_ADMIN)."""
    bad_containers: list[str] = []
    extra: set[str] = set()
    for container in _containers(spec):
        sc = _security(container)
        added = [c for c in sc.capabilities.add if c not in _DEFAULT_CAPABILITIES] if sc is not None else []
        if added:
            bad_containers.append(container.name)
            extra.update(added)
    if not bad_containers:
        return None
    return Violation("non-default capabilities",
                     f"{_plural('container', 'containers', len(bad_containers))} {_join_quote(bad_containers)} "
                     f"must not include {_join_quote(sorted(extra))} in securityContext.capabilities.add")


def host_namespaces(meta: meta_pb2.ObjectMeta, spec: core_pb2.PodSpec) -> Violation | None:
    """No sharing of the node's network, process or IPC namespace."""
    shared = [name for name, on in (("hostNetwork", spec.host_network), ("hostPID", spec.host_pid),
                                    ("hostIPC", spec.host_ipc)) if on]
    return Violation("host namespaces", ", ".join(f"{n}=true" for n in shared)) if shared else None


def host_path_volumes(meta: meta_pb2.ObjectMeta, spec: core_pb2.PodSpec) -> Violation | None:
    """No hostPath volumes: the node's files stay the node's."""
    names = [v.name for v in spec.volumes if v.HasField("host_path")]
    if not names:
        return None
    return Violation("hostPath volumes", f"{_plural('volume', 'volumes', len(names))} {_join_quote(names)}")


def host_ports(meta: meta_pb2.ObjectMeta, spec: core_pb2.PodSpec) -> Violation | None:
    """No hostPorts: a pod must not take over a port on the node's addresses."""
    bad_containers: list[str] = []
    ports: set[str] = set()
    for container in _containers(spec):
        used = [str(p.host_port) for p in container.ports if p.host_port]
        if used:
            bad_containers.append(container.name)
            ports.update(used)
    if not bad_containers:
        return None
    count = len(bad_containers)
    return Violation("hostPort", f"{_plural('container', 'containers', count)} {_join_quote(bad_containers)} "
                                 f"{_plural('uses', 'use', count)} {_plural('hostPort', 'hostPorts', len(ports))} "
                                 + ", ".join(sorted(ports)))  # Kubernetes sorts them as strings


def privileged(meta: meta_pb2.ObjectMeta, spec: core_pb2.PodSpec) -> Violation | None:
    """No privileged containers: they see every device and drop every confinement."""
    bad = [c.name for c in _containers(spec)
           if (sc := _security(c)) is not None and sc.HasField("privileged") and sc.privileged]
    if not bad:
        return None
    return Violation("privileged", f"{_plural('container', 'containers', len(bad))} {_join_quote(bad)} "
                                   "must not set securityContext.privileged=true")


# ---------------------------------------------------------------- restricted

def _allowed_volume_source(volume: core_pb2.Volume) -> bool:
    return (volume.HasField("config_map") or volume.HasField("empty_dir")
            or volume.HasField("persistent_volume_claim") or volume.HasField("secret")
            or volume.HasField("projected"))  # every pod's kube-api-access-* volume


def allow_privilege_escalation(meta: meta_pb2.ObjectMeta, spec: core_pb2.PodSpec) -> Violation | None:
    """Every container sets allowPrivilegeEscalation=false (no setuid binaries gaining root)."""
    bad = [c.name for c in _containers(spec)
           if (sc := _security(c)) is None or not sc.HasField("allow_privilege_escalation")
           or sc.allow_privilege_escalation]
    if not bad:
        return None
    return Violation("allowPrivilegeEscalation != false",
                     f"{_plural('container', 'containers', len(bad))} {_join_quote(bad)} "
                     "must set securityContext.allowPrivilegeEscalation=false")


def capabilities_restricted(meta: meta_pb2.ObjectMeta, spec: core_pb2.PodSpec) -> Violation | None:
    """Every container drops ALL capabilities and adds back at most NET_BIND_SERVICE."""
    missing_drop: list[str] = []
    adding: list[str] = []
    forbidden: set[str] = set()
    for container in _containers(spec):
        sc = _security(container)
        if sc is None or not sc.HasField("capabilities"):
            missing_drop.append(container.name)
            continue
        if "ALL" not in sc.capabilities.drop:
            missing_drop.append(container.name)
        added = [c for c in sc.capabilities.add if c != "NET_BIND_SERVICE"]
        if added:
            adding.append(container.name)
            forbidden.update(added)
    details = []
    if missing_drop:
        details.append(f"{_plural('container', 'containers', len(missing_drop))} {_join_quote(missing_drop)} "
                       'must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{_plural('container', 'containers', len(adding))} {_join_quote(adding)} "
                       f"must not include {_join_quote(sorted(forbidden))} in securityContext.capabilities.add")
    return Violation("unrestricted capabilities", "; ".join(details)) if details else None


def _volume_type(volume: core_pb2.Volume) -> str:
    """The volume's source as Kubernetes names it (`hostPath`, `nfs`): the JSON name of the field set."""
    sources = [fd.json_name for fd, _ in volume.ListFields() if fd.name != "name"]
    return sources[0] if sources else "unknown"


def restricted_volumes(meta: meta_pb2.ObjectMeta, spec: core_pb2.PodSpec) -> Violation | None:
    """Only volume types that cannot reach the node: configMap, emptyDir, persistentVolumeClaim, secret."""
    bad: list[str] = []
    types: set[str] = set()
    for volume in spec.volumes:
        if _allowed_volume_source(volume):
            continue
        bad.append(volume.name)
        types.add(_volume_type(volume))
    if not bad:
        return None
    return Violation("restricted volume types",
                     f"{_plural('volume', 'volumes', len(bad))} {_join_quote(bad)} {_plural('uses', 'use', len(bad))} "
                     f"{_plural('restricted volume type', 'restricted volume types', len(types))} "
                     f"{_join_quote(sorted(types))}")


def run_as_non_root(meta: meta_pb2.ObjectMeta, spec: core_pb2.PodSpec) -> Violation | None:
    """The pod, or every container, sets runAsNonRoot=true; nothing sets it false."""
    bad_setters: list[str] = []
    pod_non_root = False
    if (pod_sc := _pod_security(spec)) is not None and pod_sc.HasField("run_as_non_root"):
        if pod_sc.run_as_non_root:
            pod_non_root = True
        else:
            bad_setters.append("pod")
    explicit: list[str] = []
    implicit: list[str] = []
    for container in _containers(spec):
        sc = _security(container)
        if sc is not None and sc.HasField("run_as_non_root"):
            if not sc.run_as_non_root:
                explicit.append(container.name)
        elif not pod_non_root:
            implicit.append(container.name)
    if explicit:
        bad_setters.append(f"{_plural('container', 'containers', len(explicit))} {_join_quote(explicit)}")
    if bad_setters:
        return Violation("runAsNonRoot != true",
                         f"{' and '.join(bad_setters)} must not set securityContext.runAsNonRoot=false")
    if implicit:
        return Violation("runAsNonRoot != true",
                         f"pod or {_plural('container', 'containers', len(implicit))} {_join_quote(implicit)} "
                         "must set securityContext.runAsNonRoot=true")
    return None


def run_as_user(meta: meta_pb2.ObjectMeta, spec: core_pb2.PodSpec) -> Violation | None:
    """Nothing asks to run as user 0."""
    bad_setters: list[str] = []
    if (pod_sc := _pod_security(spec)) is not None and pod_sc.HasField("run_as_user") and pod_sc.run_as_user == 0:
        bad_setters.append("pod")
    bad = [c.name for c in _containers(spec)
           if (sc := _security(c)) is not None and sc.HasField("run_as_user") and sc.run_as_user == 0]
    if bad:
        bad_setters.append(f"{_plural('container', 'containers', len(bad))} {_join_quote(bad)}")
    if not bad_setters:
        return None
    return Violation("runAsUser=0", f"{' and '.join(bad_setters)} must not set runAsUser=0")


# ---------------------------------------------------------------- the registry of checks

CHECKS: tuple[Check, ...] = (
    Check("appArmorProfile", BASELINE, 0, app_armor_profile),
    Check("capabilities_baseline", BASELINE, 0, capabilities_baseline),
    Check("hostNamespaces", BASELINE, 0, host_namespaces),
    Check("hostPathVolumes", BASELINE, 0, host_path_volumes),
    Check("hostPorts", BASELINE, 0, host_ports),
    Check("privileged", BASELINE, 0, privileged),
    Check("allowPrivilegeEscalation", RESTRICTED, 8, allow_privilege_escalation),
    Check("capabilities_restricted", RESTRICTED, 22, capabilities_restricted,
          overrides=("capabilities_baseline",)),
    Check("restrictedVolumes", RESTRICTED, 0, restricted_volumes, overrides=("hostPathVolumes",)),
    Check("runAsNonRoot", RESTRICTED, 0, run_as_non_root),
    Check("runAsUser", RESTRICTED, 23, run_as_user),
)


def checks_for(level_version: LevelVersion) -> list[Check]:
    """The checks of a level as of a version, in the order Kubernetes runs (and reports) them."""
    if level_version.level == PRIVILEGED:
        return []
    applicable = [c for c in CHECKS if level_version.version.includes(c.since_minor)]
    baseline = sorted((c for c in applicable if c.level == BASELINE), key=lambda c: c.id)
    if level_version.level == BASELINE:
        return baseline
    restricted = sorted((c for c in applicable if c.level == RESTRICTED), key=lambda c: c.id)
    replaced = {o for c in restricted for o in c.overrides}
    return [c for c in baseline if c.id not in replaced] + restricted


def evaluate(level_version: LevelVersion, meta: meta_pb2.ObjectMeta, spec: core_pb2.PodSpec) -> list[Violation]:
    """Every violation of the policy by this pod (empty: allowed)."""
    return [v for check in checks_for(level_version) if (v := check.run(meta, spec)) is not None]


def forbidden_detail(violations: list[Violation]) -> str:
    """`host namespaces (hostNetwork=true), hostPath volumes (volume "root")`."""
    return ", ".join(str(v) for v in violations)


def forbidden_reasons(violations: list[Violation]) -> str:
    """`host namespaces, hostPath volumes`: the short form, for many pods at once."""
    return ", ".join(v.reason for v in violations)
