"""Custom objects between their JSON and the `CustomResource` envelope the registry stores.

Going in (`decode`), as apiextensions-apiserver's decoding does: apiVersion and
kind must be the URL's, metadata is parsed as the ObjectMeta every kind has (its
unknown fields refused with their path), then the rest is pruned to what the
schema specifies (schema.py; `fieldValidation=Strict` refuses what pruning would
drop, `Warn` says what it dropped), and defaulted. What remains is the content,
with `.status` kept apart when the status subresource is on.

Coming out (`to_dict`), the envelope is flattened back to the object clients
wrote, with the apiVersion of the version they asked for: conversion `None`
changes nothing else between versions. Admission webhooks get the same view
(registered with admission/webhook/review.py).
"""

from __future__ import annotations

from typing import Any

import orjson
from google.protobuf.message import Message

from controlplane.apiserver.admission.webhook import review
from controlplane.apiserver.crd import schema
from controlplane.apiserver.crd.served import CustomKind, CustomResource, content_of
from controlplane.apiserver.http import codec
from proto import manifest
from proto.errors import BadRequest
from proto.kinds import Kind

_TYPE_META = ("apiVersion", "kind")
MAX_DEPTH = 128  # levels of objects and arrays in a custom object's content


def to_dict(obj: CustomResource, kind: CustomKind) -> dict[str, Any]:
    """The object as clients see it at `kind`'s version."""
    data: dict[str, Any] = {"apiVersion": kind.api_version, "kind": kind.kind,
                            "metadata": codec.metadata_dict(obj)}
    data.update(content_of(obj))
    return data


def to_json(obj: CustomResource, kind: CustomKind) -> bytes:
    return orjson.dumps(to_dict(obj, kind))


def parse(raw: bytes) -> CustomResource:
    obj = CustomResource()
    obj.ParseFromString(raw)
    return obj


def decode(kind: CustomKind, data: Any, validation: str = codec.WARN) -> tuple[CustomResource, list[str]]:
    """A request body (a dict) as the envelope, and the warnings to send back."""
    if not isinstance(data, dict):
        raise BadRequest(f"the body of a {kind.kind} must be a JSON object")
    codec.check_type_meta(kind, data)
    rest = {k: v for k, v in data.items() if k not in (*_TYPE_META, "metadata")}
    _check_depth(rest)
    envelope = manifest.from_dict({"metadata": data.get("metadata") or {}}, kind)
    assert isinstance(envelope, CustomResource)
    warnings = _prune(kind, rest, validation)
    schema.default(rest, kind.schema)
    store(envelope, kind, rest)
    return envelope, warnings


def pruned_configuration(kind: CustomKind, applied: dict[str, Any], validation: str) -> tuple[dict[str, Any],
                                                                                              list[str]]:
    """A server-side apply's configuration without the fields the schema does not know (not defaulted:
    the applier owns what it wrote, not what the server fills in)."""
    config = {k: v for k, v in applied.items() if k not in (*_TYPE_META, "metadata")}
    warnings = _prune(kind, config, validation)
    config.update({k: applied[k] for k in (*_TYPE_META, "metadata") if k in applied})
    return config, warnings


def _prune(kind: CustomKind, content: dict[str, Any], validation: str) -> list[str]:
    """Prune `content` in place; Strict refuses what pruning drops, Warn says it (the warnings)."""
    dropped = schema.prune(content, kind.schema)
    if dropped and validation == codec.STRICT:
        fields = ", ".join(f'unknown field "{path}"' for path in dropped)
        raise BadRequest(f'{kind.kind} in version "{kind.version}" cannot be handled as a {kind.kind}: strict '
                         f"decoding error: {fields}")
    return [f'unknown field "{path}"' for path in dropped] if validation == codec.WARN else []


def _check_depth(value: Any) -> None:
    """Refuse objects nested deeper than MAX_DEPTH, before anything is stored: orjson (every answer,
    list and watch event) encodes at most 254 levels, so a deeper object would be stored and never served."""
    if manifest.too_deep(value, MAX_DEPTH):
        raise BadRequest(f"the object is nested too deeply: more than {MAX_DEPTH} levels")


def store(envelope: CustomResource, kind: CustomKind, content: dict[str, Any]) -> None:
    """Set the envelope's content (and status, kept apart with the status subresource) from a dict."""
    content = dict(content)
    envelope.ClearField("status")
    if kind.has_status and "status" in content:
        envelope.status.raw = manifest.raw_json_bytes(content.pop("status"))
    envelope.content.raw = manifest.raw_json_bytes(content)


# ---------------------------------------------------------------- admission webhooks


def _review_dict(obj: Message, kind: Kind) -> dict[str, Any]:
    assert isinstance(obj, CustomResource) and isinstance(kind, CustomKind)
    return to_dict(obj, kind)


def _review_object(data: dict[str, Any], kind: Kind) -> Message:
    """A webhook's patched object: pruned and defaulted again, as Kubernetes does after mutation."""
    assert isinstance(kind, CustomKind)
    obj, _ = decode(kind, data, codec.IGNORE)
    return obj


# Webhooks see (and patch) custom objects as their clients write them, not as the envelope.
review.register_codec(CustomResource, _review_dict, _review_object)
