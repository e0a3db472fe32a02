"""Describing any other kind: its fields as nested, titled key/values, as kubectl's generic describer does."""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.message import Message

from controlplane.printers.text import NONE
from kctl.describe.section import Section, metadata
from proto import kinds, manifest


def _words(key: str) -> str:
    """`holderIdentity` -> `Holder Identity`, as kubectl's generic describer titles fields.

    Only names shaped like fields are titled; map keys (`game.properties`) stay as written.
    """
    if not re.fullmatch(r"[a-z][a-zA-Z0-9]*", key):
        return key
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", key)
    return spaced[:1].upper() + spaced[1:]


def _generic_value(s: Section, level: int, key: str, value: Any) -> None:
    if isinstance(value, dict):
        if not value:
            s.kv(level, key, NONE)
            return
        s.header(level, f"{key}:")
        for k, v in value.items():
            _generic_value(s, level + 1, _words(str(k)), v)
    elif isinstance(value, list):
        if not value or not any(isinstance(v, dict | list) for v in value):
            s.many(level, key, [str(v) for v in value])
            return
        s.header(level, f"{key}:")
        for item in value:
            if isinstance(item, dict):
                s.header(level + 1, "-")
                for k, v in item.items():
                    _generic_value(s, level + 2, _words(str(k)), v)
            else:
                s.header(level + 1, f"- {item}")
    else:
        s.kv(level, key, value)


def describe_generic(obj: Message, kind: kinds.Kind) -> Section:
    s = Section()
    metadata(s, obj, kind)
    s.kv(0, "API Version", kind.api_version)
    s.kv(0, "Kind", kind.kind)
    data = manifest.to_dict(obj)
    for key, value in data.items():
        if key not in ("apiVersion", "kind", "metadata"):
            _generic_value(s, 0, _words(key), value)
    return s
