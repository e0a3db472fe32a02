"""Go-style durations ("40s", "5m", "1m30s", "250ms"), as Kubernetes flags and kubectl options take them.

Shared by the control plane's flags and kctl options (`kctl token create --ttl 24h`).
"""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class DurationError(ValueError):
    """Not a duration."""


def parse_duration(text: str) -> float:
    """Seconds in `text`; bare numbers are seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise DurationError(f"invalid duration {text!r} (use e.g. 40s, 5m, 1m30s)")
    return sum(float(n) * _SCALE[u] for n, u in parts)
