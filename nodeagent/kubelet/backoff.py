"""Crash-loop back-off: how long a failed container waits before its next restart.

The kubelet's flowcontrol.Backoff, per (pod uid, container name): the first
restart is immediate; each further one waits twice as long (10 s, 20 s, ... up to
5 min); a container that ran longer than `reset` before failing starts again
from the initial delay. The times are config, so tests can use 1 s instead of 10.
While a container waits here its status reads `waiting: CrashLoopBackOff`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class _Entry:
    delay: float
    last_event: float  # wall-clock time of the failure that set `delay`


class Backoff:
    def __init__(self, *, initial: float, maximum: float, reset: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.reset = reset
        self._entries: dict[tuple[str, str], _Entry] = {}

    def remaining(self, key: tuple[str, str], finished_at: float, now: float | None = None) -> float:
        """Seconds left before a container that finished at `finished_at` may restart (0: now)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        now = time.time() if now is None else now
        return max(0.0, finished_at + entry.delay - now)

    def delay(self, key: tuple[str, str]) -> float:
        """The wait now set for `key` (0 if it has none)."""
        entry = self._entries.get(key)
        return entry.delay if entry is not None else 0.0

    def next(self, key: tuple[str, str], finished_at: float) -> None:
        """Record a restart after the failure at `finished_at`: the next one waits longer."""
        entry = self._entries.get(key)
        if entry is None or finished_at - entry.last_event > self.reset:
            self._entries[key] = _Entry(self.initial, finished_at)
        else:
            entry.delay = min(entry.delay * 2, self.maximum)
            entry.last_event = finished_at

    def forget_pod(self, uid: str) -> None:
        for key in [k for k in self._entries if k[0] == uid]:
            del self._entries[key]
