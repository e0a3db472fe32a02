"""Tables of custom objects, from the CRD version's additionalPrinterColumns.

As apiextensions-apiserver's tableconvertor: a Name column, then one column per
additionalPrinterColumn whose cell is its jsonPath evaluated on the object (the
first match; `date` cells as ages, as kubectl shows them); a CRD that declares no
columns gets Age. The CRD kind itself prints NAME and CREATED AT
(controlplane/printers/).
"""

from __future__ import annotations

import datetime as _dt
from functools import lru_cache
from typing import Any

from jsonpath_ng import JSONPath
from jsonpath_ng.exceptions import JsonPathParserError
from jsonpath_ng.ext import parse as parse_path

from controlplane.apiserver.crd.served import Column, CustomKind, CustomResource, content_of
from controlplane.printers import Cell, GenerateOptions, TableConvertor, build_table
from controlplane.printers.table import AGE, NAME, TableColumnDefinition
from controlplane.printers.text import age, human_duration
from proto import manifest


def convertor(kind: CustomKind) -> TableConvertor[CustomResource]:
    columns = [NAME, *(TableColumnDefinition(c.name, c.type,  # type: ignore[arg-type]
                                             c.format, c.description, c.priority) for c in kind.columns)]
    if not kind.columns:
        columns.append(AGE)

    def cells(obj: CustomResource, options: GenerateOptions) -> list[Cell]:
        row: list[Cell] = [obj.metadata.name]
        if not kind.columns:
            return [*row, age(obj, options.now)]
        data = _object(obj)
        row.extend(_cell(c, data, options.now) for c in kind.columns)
        return row
    return TableConvertor(tuple(columns), cells)


def table(kind: CustomKind, objs: list[CustomResource], resource_version: str = "") -> dict[str, Any]:
    """The Table's JSON without row objects (the handler adds them as the client asked)."""
    return build_table(convertor(kind), objs, resource_version=resource_version).to_dict("None")


def _object(obj: CustomResource) -> dict[str, Any]:
    data = content_of(obj)
    data["metadata"] = manifest.to_dict(obj.metadata)
    return data


@lru_cache(maxsize=256)
def _path(json_path: str) -> JSONPath | None:
    text = json_path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    try:
        return parse_path("$" + (text if text.startswith(("[", ".")) else "." + text))
    except (JsonPathParserError, Exception):  # a path the CRD's validation let through but we cannot read
        return None


def _cell(column: Column, data: dict[str, Any], now: _dt.datetime) -> Cell:
    path = _path(column.json_path)
    found = [m.value for m in path.find(data)] if path is not None else []
    if not found or found[0] is None:
        return "<none>" if column.type != "date" else "<unknown>"
    value = found[0]
    if column.type == "date" and isinstance(value, str):
        try:
            when = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        return human_duration((now - when).total_seconds())
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return str(value)
    return manifest.raw_json_bytes(value).decode()
