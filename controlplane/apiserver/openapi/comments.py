"""The .proto comments, as descriptions: what `kubectl explain` prints about a kind or a field.

Kubernetes writes its OpenAPI descriptions from the Go doc comments of its types.
Flotilla's types are .proto messages, and generated modules drop source comments,
so proto/build.py also writes the API's descriptors with their source info
(proto/api_descriptors.binpb). This module reads that file once and answers "what
does the .proto say about this message, or this field of it".
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

from google.protobuf import descriptor_pb2

# Written by proto/build.py beside the generated modules (and checked fresh in CI).
DESCRIPTOR_SET = Path(importlib.import_module("proto").__path__[0]) / "api_descriptors.binpb"

# Paths into a FileDescriptorProto, as SourceCodeInfo.Location.path numbers them.
_MESSAGE_TYPE = 4  # FileDescriptorProto.message_type
_NESTED_TYPE = 3  # DescriptorProto.nested_type
_FIELD = 2  # DescriptorProto.field


def _text(comment: str) -> str:
    """A comment as one description: lines joined, blank lines kept as paragraph breaks."""
    paragraphs = [" ".join(line.strip() for line in block.splitlines() if line.strip())
                  for block in comment.strip().split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


@cache
def _files() -> tuple[descriptor_pb2.FileDescriptorProto, ...]:
    return tuple(descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes()).file)


def api_files() -> tuple[str, ...]:
    """The API's .proto files as protoc names them ("proto/core.proto"), in dependency order."""
    return tuple(f.name for f in _files())


def _declarations(messages: list[descriptor_pb2.DescriptorProto], prefix: str,
                  path: tuple[int, ...]) -> dict[tuple[int, ...], str]:
    """Source location path → full name, for these messages, their fields and nested messages."""
    names: dict[tuple[int, ...], str] = {}
    for i, message in enumerate(messages):
        name, here = f"{prefix}.{message.name}", (*path, i)
        names[here] = name
        for j, field in enumerate(message.field):
            names[(*here, _FIELD, j)] = f"{name}.{field.name}"
        names.update(_declarations(list(message.nested_type), name, (*here, _NESTED_TYPE)))
    return names


@cache
def _descriptions() -> dict[str, str]:
    """Full message name ("flotilla.api.Pod") or message + field ("flotilla.api.Pod.spec") → text."""
    out: dict[str, str] = {}
    for file in _files():
        names = _declarations(list(file.message_type), file.package, (_MESSAGE_TYPE,))
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            # A comment above a declaration says what it is; one after it on the line, if none above.
            comment = location.leading_comments or location.trailing_comments
            if name and comment.strip():
                out[name] = _text(comment)
    return out


def message(full_name: str) -> str:
    """What the .proto says above a message; "" if nothing."""
    return _descriptions().get(full_name, "")


def field(message_full_name: str, field_name: str) -> str:
    """What the .proto says about a field (by its proto name); "" if nothing."""
    return _descriptions().get(f"{message_full_name}.{field_name}", "")
