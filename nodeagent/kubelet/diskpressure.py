"""The DiskPressure node condition: the kubelet's hard eviction thresholds for its filesystems.

As Kubernetes' eviction manager reads `--eviction-hard` (default
`nodefs.available<10%,imagefs.available<15%`): a threshold is a percentage of
the filesystem or a quantity of bytes (`imagefs.available<2Gi`), and when the
available space of nodefs (the kubelet's root directory) or imagefs (where
images live: on a Flotilla node the same filesystem) falls below it, the Node
reports `DiskPressure=True` (reason KubeletHasDiskPressure), so the scheduler's
condition taint keeps new pods off. Evicting pods to relieve the pressure is
not done yet; reclaiming node-level resources is: the kubelet removes unused
images (`shortfall` bytes, through the image GC manager) as soon as a threshold
is crossed, as Kubernetes' eviction manager does before it evicts anything.
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

    def minimum(self, capacity: int) -> int:
        """The fewest bytes that may be available before the threshold is crossed."""
        if self.value.endswith("%"):
            return int(Decimal(self.value[:-1]) * capacity / 100)
        return int(parse_quantity(self.value))


def parse_eviction_hard(settings: dict[str, str]) -> list[Threshold]:
    """The disk thresholds of `--eviction-hard` settings (other signals, such as memory.available, skipped);
    ValueError naming a bad one."""
    thresholds = []
    for signal, value in settings.items():
        if signal not in SIGNALS:
            continue
        text = str(value).strip()
        try:
            if text.endswith("%"):
                if not 0 <= Decimal(text[:-1]) <= 100:
                    raise ValueError
            else:
                parse_quantity(text)
        except (ArithmeticError, ValueError):
            raise ValueError(f"eviction-hard {signal}: {value!r} is neither a percentage nor a quantity") from None
        thresholds.append(Threshold(signal, text))
    return thresholds


def existing(path: str) -> str:
    """`path`, or its nearest existing parent (the kubelet's root directory is made after the first report)."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def disk_pressure(thresholds: list[Threshold], *, nodefs: str, imagefs: str) -> str:
    """Which threshold is crossed ("imagefs.available<15%"), or "" when none is."""
    for threshold in thresholds:
        st = os.statvfs(existing(nodefs if threshold.signal == "nodefs.available" else imagefs))
        capacity, available = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        if available < threshold.minimum(capacity):
            return f"{threshold.signal}<{threshold.value}"
    return ""


def shortfall(thresholds: list[Threshold], *, nodefs: str, imagefs: str) -> int:
    """Bytes to free for every threshold to be met again (0: none is crossed)."""
    needed = 0
    for threshold in thresholds:
        st = os.statvfs(existing(nodefs if threshold.signal == "nodefs.available" else imagefs))
        capacity, available = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        needed = max(needed, threshold.minimum(capacity) - available)
    return needed
