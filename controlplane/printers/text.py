"""How table cells spell times, labels and absences, as Kubernetes' printers do.

These are the server-side helpers of pkg/printers/internalversion: an AGE cell is
`translateTimestampSince` (apimachinery's duration.HumanDuration), a selector cell
is metav1.FormatLabelSelector, an absent value is `<none>`. They live with the
column definitions because the apiserver computes cells (a Table's AGE is text,
worked out when the request is served), and kctl describe reuses them so its
ages read the same as `get`'s.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message

from proto import meta_pb2, selectors

NONE = "<none>"
UNKNOWN = "<unknown>"


def now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def timestamp(msg: Message, field: str) -> _dt.datetime | None:
    """A Timestamp field as an aware datetime, or None when unset."""
    if not msg.HasField(field):
        return None
    ts = getattr(msg, field)
    return _dt.datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, _dt.UTC)


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: 45s, 3m12s, 15m, 4h, 5h30m, 2d3h, 30d, 2y10d."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def since(when: _dt.datetime | None, at: _dt.datetime) -> str:
    """translateTimestampSince: the AGE of a timestamp, `<unknown>` when unset."""
    return human_duration((at - when).total_seconds()) if when is not None else UNKNOWN


def age(obj: Message, at: _dt.datetime) -> str:
    """The AGE cell of any object: time since metadata.creationTimestamp."""
    return since(timestamp(obj.metadata, "creation_timestamp"), at)  # type: ignore[attr-defined]


def created_at(obj: Message) -> str:
    """A `Created At` cell: creationTimestamp in RFC 3339, UTC (Go's zero time when unset, as Kubernetes prints)."""
    when = timestamp(obj.metadata, "creation_timestamp")  # type: ignore[attr-defined]
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when is not None else "0001-01-01T00:00:00Z"


def labels_text(labels: Any) -> str:
    """labels.FormatLabels: `app=web,tier=db` sorted, or <none>."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or NONE


def selector_text(selector: meta_pb2.LabelSelector) -> str:
    """metav1.FormatLabelSelector: `app=web,tier in (a,b)`, or <none> when empty."""
    return str(selectors.from_message(selector)) or NONE


def joined(values: Iterable[str]) -> str:
    return ",".join(values) or NONE


def or_none(value: str) -> str:
    return value or NONE
