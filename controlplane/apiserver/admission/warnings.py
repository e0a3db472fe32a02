"""What admission tells the client and the audit log besides yes or no: warnings and audit annotations.

A Kubernetes admission plugin calls `warning.AddWarning(ctx, ...)` and
`audit.AddAuditAnnotation(ctx, ...)`; both travel in the request's context, and
the transport turns them into `Warning: 299 - "..."` response headers and audit
event annotations. Here the request's context is a contextvar: a transport
wraps one request in `recording()`, and whatever plugins record while it runs
(the registry call included, which runs the chain) lands in the `Recorded` it
yields:

    with admission.recording() as recorded:
        obj = await registry.create(kind, namespace, obj, caller=attrs)
    for text in recorded.warnings:
        response.headers.add("Warning", admission.warning_header(text))

The chain also marks a dry-run write here, for its audit record.
The warnings survive a refused request too (Kubernetes sends them with the
error). Outside `recording()` (the apiserver's own writes, tests of the
registry) a warning is logged, so nothing is lost silently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# Kubernetes caps each warning's length and the total per response (4 KiB each, 64 KiB in all by default).
MAX_WARNING_BYTES = 4096
MAX_TOTAL_BYTES = 64 * 1024


@dataclass
class Recorded:
    """One request's warnings (in order, without duplicates), audit annotations, and whether it was a dry run."""

    warnings: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False

    def add_warning(self, text: str) -> None:
        text = _truncate(text, MAX_WARNING_BYTES)
        if text in self.warnings:
            return
        if sum(len(w.encode()) for w in self.warnings) + len(text.encode()) > MAX_TOTAL_BYTES:
            return  # as Kubernetes: later warnings are dropped once the total is reached
        self.warnings.append(text)


_current: ContextVar[Recorded | None] = ContextVar("flotilla_admission_recorded", default=None)


@contextmanager
def recording() -> Iterator[Recorded]:
    """Collect the warnings and audit annotations of everything run inside (one request)."""
    recorded = Recorded()
    token = _current.set(recorded)
    try:
        yield recorded
    finally:
        _current.reset(token)


def add_warning(text: str) -> None:
    """A warning for the client (Kubernetes' warning.AddWarning)."""
    recorded = _current.get()
    if recorded is None:
        log.info("admission warning: %s", text)
    else:
        recorded.add_warning(text)


def add_annotation(key: str, value: str) -> None:
    """An annotation on the request's audit record (Kubernetes' audit.AddAuditAnnotation); first value wins."""
    recorded = _current.get()
    if recorded is None:
        log.info("audit annotation %s: %s", key, value)
    else:
        recorded.annotations.setdefault(key, value)


def mark_dry_run() -> None:
    """The request being recorded is a dry run (its audit record says `"dryRun": true`)."""
    recorded = _current.get()
    if recorded is not None:
        recorded.dry_run = True


def dry_run() -> bool:
    """Whether the request being recorded was marked a dry run."""
    recorded = _current.get()
    return recorded is not None and recorded.dry_run


def warning_header(text: str) -> str:
    """The value of one `Warning` HTTP header (RFC 7234 warn-code 299, agent "-"), as kube-apiserver writes it."""
    # Control characters would break the header; quotes and backslashes are escaped inside the quoted text.
    clean = "".join(c if c.isprintable() else " " for c in text)
    return '299 - "' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _truncate(text: str, limit: int) -> str:
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[:limit - 3].decode(errors="ignore") + "..."
