"""Output of `kctl get`: kubectl's tables as aligned text, and -o yaml|json|name.

What each kind's table holds (its columns, which are -o wide only, how a pod's
STATUS is worked out) is defined once, on the API side, in controlplane.printers:
the apiserver's HTTP Tables and these tables come from the same definitions.
This module only renders them as kubectl does: column names upper-cased, wide
columns dropped unless asked for, a NAMESPACE column with -A, LABELS with
--show-labels, `kind/` before names when several kinds print together, and
three spaces between columns. `format_table` is the one place in kctl that
aligns columns; describe uses it too.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from google.protobuf.message import Message

from controlplane.printers import GenerateOptions, TableColumnDefinition, TableConvertor, convertor_for

# NONE and human_duration are re-exported: kctl commands spell absent values and durations as tables do.
from controlplane.printers.text import NONE as NONE
from controlplane.printers.text import human_duration as human_duration
from controlplane.printers.text import labels_text, now
from kctl import resources
from proto import kinds, manifest

OUTPUTS = ("wide", "yaml", "json", "name")


# ---------------------------------------------------------------- tables


def format_table(rows: Sequence[Sequence[str]], *, widths: Sequence[int] | None = None,
                 indent: str = "", gap: int = 3) -> list[str]:
    """Rows as aligned lines: each column as wide as its widest cell plus `gap` spaces.

    kubectl's tables use three spaces, describe's two. `widths` (from an earlier
    `column_widths`) keeps later rows in line with a table already printed, as
    `get --watch` needs.
    """
    sizes = list(widths) if widths is not None else column_widths(rows)
    sep = " " * gap
    lines = []
    for row in rows:
        cells = [cell.ljust(sizes[i]) if i < len(sizes) else cell for i, cell in enumerate(row)]
        lines.append((indent + sep.join(cells)).rstrip())
    return lines


def column_widths(rows: Sequence[Sequence[str]]) -> list[int]:
    widths: list[int] = []
    for row in rows:
        for i, cell in enumerate(row):
            if i == len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(cell))
    return widths


@dataclass
class Table:
    """The header and row builder for one kind under the chosen flags."""

    kind: kinds.Kind
    wide: bool = False
    namespace_column: bool = False
    show_labels: bool = False
    name_prefix: str = ""

    @property
    def convertor(self) -> TableConvertor[Any]:
        return convertor_for(self.kind)

    @property
    def shown(self) -> list[int]:
        """Indexes of the columns printed: priority 0 always, the rest with -o wide."""
        return [i for i, c in enumerate(self.convertor.columns) if self.wide or c.priority == 0]

    @property
    def columns(self) -> list[TableColumnDefinition]:
        return [self.convertor.columns[i] for i in self.shown]

    def header(self) -> list[str]:
        names = [c.name.upper() for c in self.columns]
        if self.namespace_column and self.kind.namespaced:
            names.insert(0, "NAMESPACE")
        if self.show_labels:
            names.append("LABELS")
        return names

    def row(self, obj: Message, at: _dt.datetime) -> list[str]:
        cells = self.convertor.row(obj, GenerateOptions(now=at, wide=self.wide))
        out = [str(cells[i]) for i in self.shown]
        # kubectl puts kind/ before the first name column when several kinds print together.
        name = next((i for i, c in enumerate(self.columns) if c.format == "name"), None)
        if name is not None and self.name_prefix:
            out[name] = self.name_prefix + out[name]
        meta = obj.metadata  # type: ignore[attr-defined]
        if self.namespace_column and self.kind.namespaced:
            out.insert(0, meta.namespace)
        if self.show_labels:
            out.append(labels_text(meta.labels))
        return out

    def lines(self, objs: Sequence[Message], *, headers: bool = True) -> list[str]:
        at = now()
        rows = ([self.header()] if headers else []) + [self.row(o, at) for o in objs]
        return format_table(rows)


# ---------------------------------------------------------------- -o yaml|json|name


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, as kubectl prints last-applied-configuration."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(data: Any) -> str:
    """YAML as kubectl prints it: keys sorted, block style, no line folding."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=True, default_flow_style=False, allow_unicode=True,
                     width=1 << 30)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=4, ensure_ascii=False) + "\n"


def as_dict(obj: Message) -> dict[str, Any]:
    """The object in Kubernetes JSON shape, apiVersion and kind always set."""
    data = manifest.to_dict(obj)
    kind = kinds.for_message(obj)
    return {"apiVersion": kind.api_version, "kind": kind.kind, **{k: v for k, v in data.items()
                                                                   if k not in ("apiVersion", "kind")}}


def as_list(objs: Sequence[Message]) -> dict[str, Any]:
    """`kind: List`, what kubectl prints for several objects."""
    return {"apiVersion": "v1", "items": [as_dict(o) for o in objs], "kind": "List",
            "metadata": {"resourceVersion": ""}}


def render(objs: Sequence[Message], output: str, *, single: bool) -> str:
    """-o yaml/json/name text for objects; `single` prints one object rather than a List."""
    if output == "name":
        return "".join(resources.ref_of(o) + "\n" for o in objs)
    data = as_dict(objs[0]) if single and len(objs) == 1 else as_list(objs)
    return to_yaml(data) if output == "yaml" else to_json(data)
