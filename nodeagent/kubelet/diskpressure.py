"""The DiskPressure node condition: the kubelet's hard eviction thresholds for its filesystems.

As Kubernetes' eviction manager reads `--eviction-hard` (default
`nodefs.available<10%,imagefs.available<15%`): a threshold is a percentage of
the filesystem or a quantity of bytes (`imagefs.available<2Gi`), and when the
available space of nodefs (the kubelet's root directory) or imagefs (where
images live: on a Flotilla node the same filesystem) falls below it, the Node
reports `DiskPressure=True` (reason KubeletHasDiskPressure), so the scheduler's
condition taint keeps new pods off. `--eviction-minimum-reclaim` gives a
threshold a margin: once crossed, it stays crossed until that much more is
available again. What the kubelet does about a crossing (unused images first,
then evicting pods, one at a time) is the eviction manager's: eviction.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal

from proto.quantity import parse_quantity

SIGNALS = ("nodefs.available", "imagefs.available")
DEFAULT_EVICTION_HARD = {"nodefs.available": "10%", "imagefs.available": "15%"}


@dataclass(frozen=True)
class Threshold:
    signal: str  # nodefs.available, imagefs.available
    value: str  # "10%" or a quantity ("2Gi")
    min_reclaim: str = ""  # --eviction-minimum-reclaim of the signal: "5%", "500Mi", or none

    def minimum(self, capacity: int) -> int:
        """The fewest bytes that may be available before the threshold is crossed."""
        return _bytes(self.value, capacity)

    def reclaim(self, capacity: int) -> int:
        """Bytes beyond the threshold that must be available again before a crossing is over."""
        return _bytes(self.min_reclaim, capacity) if self.min_reclaim else 0

    def describe(self) -> str:
        return f"{self.signal}<{self.value}"


@dataclass(frozen=True)
class Observation:
    """One filesystem as statvfs sees it now: its size and what unprivileged writers may still use."""

    capacity: int
    available: int


def _bytes(value: str, capacity: int) -> int:
    if value.endswith("%"):
        return int(Decimal(value[:-1]) * capacity / 100)
    return int(parse_quantity(value))


def _checked(flag: str, signal: str, value: object) -> str:
    """`value` as a percentage (0-100) or a quantity of bytes; ValueError naming the flag and signal if not."""
    text = str(value).strip()
    try:
        if text.endswith("%"):
            if not 0 <= Decimal(text[:-1]) <= 100:
                raise ValueError
        elif parse_quantity(text) < 0:
            raise ValueError
    except (ArithmeticError, ValueError):
        raise ValueError(f"{flag} {signal}: {value!r} is neither a percentage nor a quantity") from None
    return text


def parse_eviction_hard(settings: dict[str, str], minimum_reclaim: dict[str, str] | None = None) -> list[Threshold]:
    """The disk thresholds of `--eviction-hard` settings (other signals, such as memory.available, skipped),
    each with its `--eviction-minimum-reclaim`; ValueError naming a bad one."""
    reclaims = {signal: _checked("eviction-minimum-reclaim", signal, value)
                for signal, value in (minimum_reclaim or {}).items() if signal in SIGNALS}
    return [Threshold(signal, _checked("eviction-hard", signal, value), reclaims.get(signal, ""))
            for signal, value in settings.items() if signal in SIGNALS]


def existing(path: str) -> str:
    """`path`, or its nearest existing parent (the kubelet's root directory is made after the first report)."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def observe(*, nodefs: str, imagefs: str) -> dict[str, Observation]:
    """The signals' filesystems now (statvfs: f_bavail, what is left to anyone but root, is "available")."""
    found = {}
    for signal, path in (("nodefs.available", nodefs), ("imagefs.available", imagefs)):
        st = os.statvfs(existing(path))
        found[signal] = Observation(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)
    return found


def crossed(threshold: Threshold, seen: Observation, *, with_reclaim: bool = False) -> bool:
    """Whether less than the threshold (plus its minimum reclaim, once it has been crossed) is available."""
    wanted = threshold.minimum(seen.capacity) + (threshold.reclaim(seen.capacity) if with_reclaim else 0)
    return seen.available < wanted


def disk_pressure(thresholds: list[Threshold], *, nodefs: str, imagefs: str) -> str:
    """Which threshold is crossed ("imagefs.available<15%"), or "" when none is."""
    seen = observe(nodefs=nodefs, imagefs=imagefs)
    return next((t.describe() for t in thresholds if crossed(t, seen[t.signal])), "")


def shortfall(thresholds: list[Threshold], *, nodefs: str, imagefs: str) -> int:
    """Bytes to free for every threshold (with its minimum reclaim) to be met again (<= 0: none is crossed)."""
    seen = observe(nodefs=nodefs, imagefs=imagefs)
    return max((t.minimum(seen[t.signal].capacity) + t.reclaim(seen[t.signal].capacity) - seen[t.signal].available
                for t in thresholds), default=0)


class PressureTracker:
    """Which thresholds count as crossed, and whether the node is under DiskPressure, observation by observation.

    The eviction manager's bookkeeping (thresholdsMet, nodeConditionsLastObservedAt): a threshold
    crossed once stays crossed until its minimum reclaim is available beyond it too, and the
    condition lasts `transition_period` seconds after the last observation that had one crossed,
    so a node hovering around a threshold does not flap between pressure and none.
    """

    def __init__(self, thresholds: list[Threshold], transition_period: float) -> None:
        self.thresholds = thresholds
        self.transition_period = transition_period
        self.met: list[Threshold] = []
        self._last_seen_at: float | None = None
        self._last_crossed = ""

    def observe(self, seen: dict[str, Observation], now: float) -> list[Threshold]:
        """Take one observation; the thresholds met now (crossed, or not yet back with their reclaim)."""
        met = [t for t in self.thresholds if crossed(t, seen[t.signal])]
        met += [t for t in self.met if t not in met and crossed(t, seen[t.signal], with_reclaim=True)]
        if met:
            self._last_seen_at = now
            self._last_crossed = met[0].describe()
        self.met = met
        return met

    def under_pressure(self, now: float) -> bool:
        seen_at = self._last_seen_at
        return bool(self.met) or (seen_at is not None and now - seen_at < self.transition_period)

    def condition(self, now: float) -> str:
        """The DiskPressure condition's detail ("nodefs.available<10%"), "" when there is none."""
        return self._last_crossed if self.under_pressure(now) else ""
