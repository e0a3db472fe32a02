"""The Table shape: column definitions, a convertor per kind, and the rows it makes.

This is meta.k8s.io/v1 Table as plain data. A `TableConvertor` is what
Kubernetes registers per kind in pkg/printers/internalversion (`h.TableHandler(
columnDefinitions, printPod)`): the kind's `TableColumnDefinition`s and one
function from an object to its row's cells, in column order. `generate_table`
applies one to a list of objects; `Table.to_dict` is the JSON an HTTP
`Accept: application/json;as=Table;v=v1;g=meta.k8s.io` request answers with, and
kctl renders the same `Table` as aligned text.

Column names are Kubernetes' ("Nominated Node", "Up-to-date"); kubectl prints
them upper-cased. Priority 0 columns are always shown, priority 1 only with
`-o wide`. Cells are computed when the table is generated, ages included, as the
apiserver does: a client shows them as they are.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from google.protobuf.message import Message

from controlplane.printers.text import age, now
from proto import kinds, manifest

M = TypeVar("M", bound=Message)

Cell = str | int
"""A cell is text, or a number for columns whose values Kubernetes prints as integers."""

ColumnType = Literal["string", "integer", "number", "boolean", "date"]
IncludeObject = Literal["None", "Metadata", "Object"]

# The descriptions Kubernetes takes from ObjectMeta's swagger docs, used by most kinds' first columns.
NAME_DESCRIPTION = ("Name must be unique within a namespace. Is required when creating resources, "
                    "although some resources may allow a client to request the generation of an "
                    "appropriate name automatically. Name is primarily intended for creation "
                    "idempotence and configuration definition. Cannot be updated.")
AGE_DESCRIPTION = ("CreationTimestamp is a timestamp representing the server time when this object "
                   "was created. It is not guaranteed to be set in happens-before order across "
                   "separate operations. Clients may not set this value.")


@dataclass(frozen=True)
class TableColumnDefinition:
    """One column: metav1.TableColumnDefinition."""

    name: str
    type: ColumnType = "string"
    format: str = ""  # "name" marks the column holding the object's name (kubectl prefixes it with kind/)
    description: str = ""
    priority: int = 0  # 0: always shown; 1: only with -o wide

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": self.description, "priority": self.priority}


def name_column(*, priority: int = 0) -> TableColumnDefinition:
    return TableColumnDefinition("Name", format="name", description=NAME_DESCRIPTION, priority=priority)


NAME = name_column()
AGE = TableColumnDefinition("Age", description=AGE_DESCRIPTION)
CREATED_AT = TableColumnDefinition("Created At", type="date", description=AGE_DESCRIPTION)
"""Kinds Kubernetes prints with their creation time as a date (roles, limit ranges), not an age."""


@dataclass(frozen=True)
class GenerateOptions:
    """What a cell function may need besides the object (printers.GenerateOptions).

    `wide` is True for HTTP Tables, as Kubernetes' TableConvertor always asks for
    every column; kctl passes its -o wide flag, since one cell (a load balancer's
    EXTERNAL-IP) is shortened in the narrow table.
    """

    now: _dt.datetime
    wide: bool = True


CellsFunc = Callable[[M, GenerateOptions], list[Cell]]


@dataclass(frozen=True)
class TableConvertor(Generic[M]):
    """A kind's columns and the function from one object to its cells (one per column)."""

    columns: tuple[TableColumnDefinition, ...]
    cells: CellsFunc[M]

    def row(self, obj: M, options: GenerateOptions) -> list[Cell]:
        cells = self.cells(obj, options)
        if len(cells) != len(self.columns):
            # A cell function out of step with its columns would shift every later column.
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        return cells


def _default_cells(obj: Message, options: GenerateOptions) -> list[Cell]:
    return [obj.metadata.name, age(obj, options.now)]  # type: ignore[attr-defined]


DEFAULT = TableConvertor[Message]((NAME, AGE), _default_cells)
"""Kinds without their own printer: NAME and AGE.

Kubernetes' default convertor shows "Created At" as a date instead; Flotilla
has always shown AGE, as for every other kind.
"""


@dataclass(frozen=True)
class TableRow:
    """metav1.TableRow: the cells, and the object they were computed from."""

    cells: list[Cell]
    object: Message


@dataclass(frozen=True)
class Table:
    """metav1.Table: column definitions and rows (no definitions when headers were declined)."""

    column_definitions: list[TableColumnDefinition]
    rows: list[TableRow]
    resource_version: str = ""
    continue_token: str = ""

    def to_dict(self, include_object: IncludeObject = "Metadata") -> dict[str, Any]:
        """The JSON form, with each row's object whole, as metadata only, or left out."""
        metadata: dict[str, Any] = {"resourceVersion": self.resource_version}
        if self.continue_token:
            metadata["continue"] = self.continue_token
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "columnDefinitions": [c.to_dict() for c in self.column_definitions],
            "rows": [{"cells": list(r.cells), **_row_object(r.object, include_object)} for r in self.rows],
        }


def _row_object(obj: Message, include: IncludeObject) -> dict[str, Any]:
    if include == "None":
        return {}
    data = manifest.to_dict(obj)
    if include == "Metadata":
        return {"object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": data.get("metadata", {})}}
    kind = kinds.for_message(obj)
    return {"object": {"apiVersion": kind.api_version, "kind": kind.kind,
                       **{k: v for k, v in data.items() if k not in ("apiVersion", "kind")}}}


def build_table(convertor: TableConvertor[Any], objs: Sequence[Message], *, at: _dt.datetime | None = None,
                wide: bool = True, no_headers: bool = False, resource_version: str = "") -> Table:
    """Apply `convertor` to `objs` (all of one kind), at time `at` (now by default)."""
    options = GenerateOptions(now=at or now(), wide=wide)
    rows = [TableRow(convertor.row(obj, options), obj) for obj in objs]
    return Table([] if no_headers else list(convertor.columns), rows, resource_version)
