"""Pod Security levels, versions and the namespace labels that choose them.

A namespace says which Pod Security Standard applies to its pods with up to
six labels (Kubernetes' pod-security.kubernetes.io/*):

    pod-security.kubernetes.io/enforce: baseline        refuse pods that violate it
    pod-security.kubernetes.io/enforce-version: v1.32   the standard as it was in that release
    pod-security.kubernetes.io/audit: restricted        record violations in the audit log
    pod-security.kubernetes.io/warn: restricted         warn the client

A level is privileged (anything goes), baseline (no known privilege escalation)
or restricted (hardened); a version is `latest` or `v1.<minor>`. A missing
label falls back to the cluster's default for that namespace (`Defaults`):
Flotilla enforces, audits and warns `baseline:latest` everywhere but
kube-system, which is `privileged` — stricter than Kubernetes' own default
(privileged everywhere), as k3s and hardened distributions ship.

Labels that do not parse fail closed for enforce (restricted) and open for
audit and warn (privileged), as Kubernetes does; a namespace cannot be created
or relabelled with them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from controlplane.apiserver.validation.field import Errors, invalid

PRIVILEGED, BASELINE, RESTRICTED = "privileged", "baseline", "restricted"
LEVELS = (PRIVILEGED, BASELINE, RESTRICTED)  # least to most strict; Kubernetes lists them in this order
MODES = ("enforce", "audit", "warn")
LABEL_PREFIX = "pod-security.kubernetes.io/"

_VERSION = re.compile(r"^v1\.(0|[1-9][0-9]*)$")


@dataclass(frozen=True)
class Version:
    """A policy version: the checks as of Kubernetes 1.<minor>, or the latest (`minor` None)."""

    minor: int | None = None

    def __str__(self) -> str:
        return "latest" if self.minor is None else f"v1.{self.minor}"

    def includes(self, since_minor: int) -> bool:
        """Whether a check introduced in 1.<since_minor> belongs to this version."""
        return self.minor is None or self.minor >= since_minor


LATEST = Version()


@dataclass(frozen=True)
class LevelVersion:
    level: str
    version: Version = LATEST

    def __str__(self) -> str:
        return f"{self.level}:{self.version}"


@dataclass(frozen=True)
class Policy:
    enforce: LevelVersion
    audit: LevelVersion
    warn: LevelVersion

    @classmethod
    def uniform(cls, level: str, version: Version = LATEST) -> Policy:
        lv = LevelVersion(level, version)
        return cls(lv, lv, lv)

    def all_privileged(self) -> bool:
        return all(lv.level == PRIVILEGED for lv in (self.enforce, self.audit, self.warn))


@dataclass(frozen=True)
class Defaults:
    """The policy of a namespace without labels: one for the cluster, others for named namespaces."""

    cluster: Policy = field(default_factory=lambda: Policy.uniform(BASELINE))
    namespaces: Mapping[str, Policy] = field(default_factory=lambda: {"kube-system": Policy.uniform(PRIVILEGED)})

    def for_namespace(self, namespace: str) -> Policy:
        return self.namespaces.get(namespace, self.cluster)


def level_label(mode: str) -> str:
    return f"{LABEL_PREFIX}{mode}"


def version_label(mode: str) -> str:
    return f"{LABEL_PREFIX}{mode}-version"


def _parse_level(value: str) -> str | None:
    return value if value in LEVELS else None


def _parse_version(value: str) -> Version | None:
    if value == "latest":
        return LATEST
    match = _VERSION.match(value)
    return Version(int(match.group(1))) if match else None


def policy_for(labels: Mapping[str, str], defaults: Policy) -> tuple[Policy, Errors]:
    """The policy a namespace's labels choose, and the errors of labels that do not parse.

    A usable policy comes back even with errors: an unparseable enforce level
    means restricted, an unparseable audit or warn level privileged, an
    unparseable version latest.
    """
    errors: Errors = []
    chosen = {"enforce": defaults.enforce, "audit": defaults.audit, "warn": defaults.warn}
    for mode in MODES:
        level, version = chosen[mode].level, chosen[mode].version
        if (label := level_label(mode)) in labels:
            parsed = _parse_level(labels[label])
            if parsed is None:
                errors.append(invalid(f"metadata.labels[{label}]", labels[label],
                                      "must be one of " + ", ".join(LEVELS)))
                parsed = RESTRICTED if mode == "enforce" else PRIVILEGED
            level = parsed
        if (label := version_label(mode)) in labels:
            parsed_version = _parse_version(labels[label])
            if parsed_version is None:
                errors.append(invalid(f"metadata.labels[{label}]", labels[label], 'must be "latest" or "v1.x"'))
                parsed_version = LATEST
            version = parsed_version
        chosen[mode] = LevelVersion(level, version)
    return Policy(chosen["enforce"], chosen["audit"], chosen["warn"]), errors


def stricter(a: str, b: str) -> bool:
    """Whether level `a` is stricter than level `b`."""
    return LEVELS.index(a) > LEVELS.index(b)
