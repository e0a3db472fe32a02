"""The writer every describer shares: `Key: value` sections, aligned as kubectl's tabwriter does.

A `Section` collects entries at indent levels; a run of same-level keys is
aligned together, a multi-line value continues under its first line, and
describe's little tables (conditions, events) use two-space gaps. The metadata
block every description opens with (Name, Namespace, Labels, Annotations,
CreationTimestamp) is written here too.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from controlplane.printers.text import NONE, timestamp
from kctl.printers import format_table
from proto import kinds
from proto.wellknown import ANNOTATION_LAST_APPLIED


@dataclass
class Section:
    """Lines of `Key: value` at indent levels, aligned per run of same-level keys."""

    entries: list[tuple[int, str, str | None]] = field(default_factory=list)

    def kv(self, level: int, key: str, value: object = "") -> None:
        """`Key:  value`; the lines of a multi-line value continue under its first."""
        self.many(level, key, str(value).rstrip("\n").split("\n"))

    def many(self, level: int, key: str, values: Sequence[str]) -> None:
        """`Labels: a=b` with further values on following lines, under the first."""
        values = list(values) or [NONE]
        self.entries.append((level, f"{key}:", values[0]))
        for value in values[1:]:
            self.entries.append((level, "", value))

    def header(self, level: int, text: str) -> None:
        self.entries.append((level, text, None))

    def lines(self, level: int, lines: Iterable[str]) -> None:
        for line in lines:
            self.header(level, line)

    def table(self, level: int, rows: Sequence[Sequence[str]], underline: bool = True) -> None:
        """A kubectl describe table: headers, a dashed line, rows; two-space gaps."""
        rows = list(rows)
        if underline and rows:
            rows.insert(1, ["-" * len(h) for h in rows[0]])
        self.lines(level, format_table(rows, gap=2))

    def render(self) -> str:
        out: list[str] = []
        i = 0
        while i < len(self.entries):
            level, key, value = self.entries[i]
            if value is None:
                out.append(("  " * level + key).rstrip())
                i += 1
                continue
            j = i
            while j < len(self.entries) and self.entries[j][0] == level and self.entries[j][2] is not None:
                j += 1
            width = max(len(k) for _, k, _ in self.entries[i:j]) + 2
            for _, k, v in self.entries[i:j]:
                out.append(("  " * level + k.ljust(width) + (v or "")).rstrip())
            i = j
        return "\n".join(out) + "\n"



def rfc1123(when: _dt.datetime | None) -> str:
    """`Mon, 02 Jan 2006 15:04:05 +0000`, kubectl's describe time format."""
    return when.strftime("%a, %d %b %Y %H:%M:%S %z") if when is not None else NONE


def pairs(mapping: Any) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(mapping.items())]


def annotation_lines(mapping: Any) -> list[str]:
    """Annotations but the last-applied manifest, which kubectl describe leaves out too."""
    return [f"{k}: {v}" for k, v in sorted(mapping.items()) if k != ANNOTATION_LAST_APPLIED]


def metadata(s: Section, obj: Message, kind: kinds.Kind) -> None:
    meta = obj.metadata  # type: ignore[attr-defined]
    s.kv(0, "Name", meta.name)
    if kind.namespaced:
        s.kv(0, "Namespace", meta.namespace)
    s.many(0, "Labels", pairs(meta.labels))
    s.many(0, "Annotations", annotation_lines(meta.annotations))
    s.kv(0, "CreationTimestamp", rfc1123(timestamp(meta, "creation_timestamp")))


def controlled_by(meta: Any) -> str | None:
    owner = next((o for o in meta.owner_references if o.controller), None)
    return f"{owner.kind}/{owner.name}" if owner is not None else None
