"""Controller expectations: how a controller avoids acting twice on a stale cache.

After the ReplicaSet controller asks for 5 pods, its pod cache will not show
them for a moment. A sync in that moment would see 0 pods and ask for 5 more.
So before creating (or deleting) it records "expect 5 adds" for the
ReplicaSet; the pod informer's handlers count them down as the pods arrive;
and `sync` only manages replicas once the expectations are met (or have
expired — a lost watch event must not wedge the controller forever). This is
client-go's `ControllerExpectations`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

EXPECTATIONS_TIMEOUT = 300.0  # seconds, as in Kubernetes


@dataclass
class _Expected:
    adds: int = 0
    deletes: set[str] = field(default_factory=set)  # keys of pods asked to be deleted
    since: float = field(default_factory=time.monotonic)


class Expectations:
    def __init__(self, timeout: float = EXPECTATIONS_TIMEOUT) -> None:
        self.timeout = timeout
        self._by_key: dict[str, _Expected] = {}

    def satisfied(self, key: str) -> bool:
        exp = self._by_key.get(key)
        if exp is None:
            return True
        if exp.adds <= 0 and not exp.deletes:
            return True
        return time.monotonic() - exp.since > self.timeout

    def expect_creations(self, key: str, count: int) -> None:
        self._by_key[key] = _Expected(adds=count)

    def expect_deletions(self, key: str, pod_keys: list[str]) -> None:
        self._by_key[key] = _Expected(deletes=set(pod_keys))

    def creation_observed(self, key: str, count: int = 1) -> None:
        exp = self._by_key.get(key)
        if exp is not None:
            exp.adds -= count

    def deletion_observed(self, key: str, pod_key: str) -> None:
        exp = self._by_key.get(key)
        if exp is not None:
            exp.deletes.discard(pod_key)

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)
