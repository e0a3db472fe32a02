"""Kubernetes JSON/YAML <-> protobuf messages.

Protobuf's JSON mapping already uses Kubernetes' field names (json_name in the
.proto files), so a manifest from kubernetes.io parses through json_format. Three
differences remain, and they are handled here by walking the dict beside the
message descriptor:

- IntOrString fields (targetPort: 8080 or "http") are strings in protobuf, so
  numbers become strings going in and numeric strings become numbers coming out;
- quantity fields accept YAML numbers (cpu: 1, cpu: 0.5) and must parse;
- int64 fields come out of json_format as strings; Kubernetes prints numbers;
- a `raw_json` message (FieldsV1) is any JSON in the manifest and its bytes in
  the message.

Unknown fields and wrongly typed values are refused with the field's path
(`spec.containers[0].ports[0].containerPort: ...`), before anything is stored.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
from functools import cache
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from proto import kinds, options_pb2
from proto.errors import Invalid
from proto.quantity import QuantityError, parse_quantity

_INTS = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
         FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64}
_INT64S = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64}
_TIMESTAMP = "google.protobuf.Timestamp"
MAX_RAW_JSON_DEPTH = 200  # levels of a raw_json value (a CRD's schema, managedFields' FieldsV1)
# upb's descriptors and the pure-Python ones type differently; both quack the same.
Descriptor = Any
Field = Any


@cache
def _fields(desc: Descriptor) -> dict[str, Field]:
    return {f.json_name: f for f in desc.fields}


@cache
def _is_int_or_string(fd: Field) -> bool:
    return bool(fd.GetOptions().Extensions[options_pb2.int_or_string])


@cache
def _is_quantity(fd: Field) -> bool:
    return bool(fd.GetOptions().Extensions[options_pb2.quantities])


@cache
def is_raw_json(desc: Descriptor) -> bool:
    """A message kept as verbatim JSON bytes (`option (raw_json)`), such as FieldsV1."""
    return bool(desc.GetOptions().Extensions[options_pb2.raw_json])


def too_deep(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than `limit` levels in `value` (walked level by level, no recursion)."""
    level = [value]
    for _depth in range(limit + 1):
        level = [child for node in level if isinstance(node, dict | list)
                 for child in (node.values() if isinstance(node, dict) else node)]
        if not level:
            return False
    return True


def raw_json_bytes(value: Any) -> bytes:
    """A raw_json message's bytes for a JSON value (compact; TypeError/ValueError if it is not JSON)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def raw_json_value(raw: bytes) -> Any:
    """A raw_json message's JSON value (an unset one is the empty object)."""
    return json.loads(raw) if raw else {}


def _is_map(fd: Field) -> bool:
    return fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry


def _not_utf8(text: str) -> bool:
    """Text that came from bytes that were not UTF-8 (lone surrogates): protobuf strings cannot hold it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _printable(path: str) -> str:
    """A field path safe to print: bytes that were not UTF-8 as \\x escapes, other lone surrogates as \\u."""
    try:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that did not come from undecodable bytes
        return path.encode("utf-8", "backslashreplace").decode("utf-8")


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number"}.get(type(value), type(value).__name__)


class _Normaliser:
    """Walks a manifest beside its descriptor, fixing shapes and collecting errors."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def message(self, desc: Descriptor, data: Any, path: str) -> Any:
        if data is None:
            return None
        if not isinstance(data, dict):
            self.errors.append((path, f"expected an object, got {_type_name(data)}"))
            return None
        fields = _fields(desc)
        out: dict[str, Any] = {}
        for key, value in data.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _not_utf8(key):
                self.errors.append((_printable(sub), "field name is not valid UTF-8"))
                continue
            fd = fields.get(key) if isinstance(key, str) else None
            if fd is None:
                # Accept proto field names too (pod_ip), as json_format does.
                fd = desc.fields_by_name.get(key) if isinstance(key, str) else None
            if fd is None:
                self.errors.append((sub, f'unknown field "{key}"'))
                continue
            if value is None:
                continue  # `creationTimestamp: null` and friends mean "unset"
            out[fd.json_name] = self.field(fd, value, sub)
        return out

    def field(self, fd: Field, value: Any, path: str) -> Any:
        if _is_map(fd):
            if not isinstance(value, dict):
                self.errors.append((path, f"expected an object, got {_type_name(value)}"))
                return {}
            value_fd = fd.message_type.fields_by_name["value"]
            bad = [k for k in value if _not_utf8(str(k))]
            for k in bad:
                self.errors.append((_printable(f"{path}.{k}"), "key is not valid UTF-8"))
            return {str(k): self.single(value_fd, v, f"{path}.{k}", quantity=_is_quantity(fd))
                    for k, v in value.items() if v is not None and k not in bad}
        if fd.is_repeated:
            if not isinstance(value, list):
                self.errors.append((path, f"expected an array, got {_type_name(value)}"))
                return []
            return [self.single(fd, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return self.single(fd, value, path)

    def single(self, fd: Field, value: Any, path: str, quantity: bool = False) -> Any:
        if isinstance(value, str) and _not_utf8(value):
            self.errors.append((_printable(path), "not valid UTF-8"))
            return ""
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if fd.message_type.full_name == _TIMESTAMP:
                if isinstance(value, _dt.datetime):
                    if value.tzinfo is None:
                        value = value.replace(tzinfo=_dt.UTC)
                    return value.isoformat().replace("+00:00", "Z")
                if not isinstance(value, str):
                    self.errors.append((path, f"expected an RFC 3339 time, got {_type_name(value)}"))
                return value
            if is_raw_json(fd.message_type):
                if too_deep(value, MAX_RAW_JSON_DEPTH):
                    # Stored, it could never be served: orjson encodes at most 254 levels of any answer.
                    self.errors.append((path, f"nested too deeply: more than {MAX_RAW_JSON_DEPTH} levels"))
                    return {}
                try:
                    raw = raw_json_bytes(value)
                except (TypeError, ValueError) as exc:
                    self.errors.append((path, f"not JSON: {exc}"))
                    return {}
                return {"raw": base64.b64encode(raw).decode("ascii")}
            return self.message(fd.message_type, value, path)
        if quantity or _is_quantity(fd):
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                self.errors.append((path, f"expected a quantity, got {_type_name(value)}"))
                return ""
            text = value if isinstance(value, str) else (repr(value) if isinstance(value, float) else str(value))
            try:
                parse_quantity(text)
            except QuantityError as exc:
                self.errors.append((path, str(exc)))
            return text
        if _is_int_or_string(fd):
            if isinstance(value, bool) or not isinstance(value, str | int):
                self.errors.append((path, f"expected an integer or a string, got {_type_name(value)}"))
                return ""
            return str(value)
        if fd.type == FieldDescriptor.TYPE_STRING:
            if not isinstance(value, str):
                self.errors.append((path, f"expected a string, got {_type_name(value)}"))
            return value
        if fd.type == FieldDescriptor.TYPE_BOOL:
            if not isinstance(value, bool):
                self.errors.append((path, f"expected a boolean, got {_type_name(value)}"))
            return value
        if fd.type in _INTS:
            ok = (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, float) and value.is_integer())
            if not ok:
                shown = "" if isinstance(value, dict | list) else f" {repr(value)[:40]}"  # never repr a 5,000-deep list
                self.errors.append((path, f"expected an integer, got {_type_name(value)}{shown}"))
                return 0
            number = int(value)
            bits = 64 if fd.type in _INT64S else 32
            if not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
                self.errors.append((path, f"{number} is out of range for a {bits}-bit integer"))
                return 0
            return number
        return value


def from_dict(data: Any, kind: kinds.Kind | None = None, *, what: str = "") -> Message:
    """Parse one manifest (a dict from YAML/JSON) into its message.

    Without `kind`, apiVersion + kind in the manifest decide. Raises `Invalid`
    listing every bad field, or `NotFound` for a kind the API does not serve.
    """
    if not isinstance(data, dict):
        raise Invalid(what or "object", [("", f"expected an object, got {_type_name(data)}")])
    if kind is None:
        api_version, kind_name = data.get("apiVersion"), data.get("kind")
        missing = [(f, "Required value") for f, v in (("apiVersion", api_version), ("kind", kind_name)) if not v]
        if missing:
            raise Invalid(what or "object", missing)
        # Not str() of whatever is there: a number is a user's typo, a 5,000-deep object a RecursionError.
        wrong = [(f, f"expected a string, got {_type_name(v)}") for f, v in (("apiVersion", api_version),
                                                                           ("kind", kind_name))
                 if not isinstance(v, str) or _not_utf8(v)]
        if wrong:
            raise Invalid(what or "object", wrong)
        kind = kinds.for_kind(str(api_version), str(kind_name))
    name = (data.get("metadata") or {}).get("name") if isinstance(data.get("metadata"), dict) else None
    label = what or f'{kind.kind} "{_printable(name) if isinstance(name, str) else ""}"'
    walker = _Normaliser()
    clean = walker.message(kind.message.DESCRIPTOR, data, "")
    if walker.errors:
        raise Invalid(label, walker.errors)
    message = kind.message()
    try:
        json_format.ParseDict(clean, message)
    except json_format.ParseError as exc:  # what the walker cannot see, e.g. a bad timestamp
        raise Invalid(label, [("", str(exc).splitlines()[0])]) from exc
    message.api_version = kind.api_version  # type: ignore[attr-defined]
    message.kind = kind.kind  # type: ignore[attr-defined]
    return message


def _restore(desc: Descriptor, data: dict[str, Any]) -> None:
    """Undo json_format's int64-as-string and turn numeric IntOrStrings back into numbers."""
    fields = _fields(desc)
    for key, value in data.items():
        fd = fields.get(key)
        if fd is None:
            continue
        if fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.full_name != _TIMESTAMP:
            if _is_map(fd):
                continue
            if is_raw_json(fd.message_type):
                def unwrap(item: dict[str, Any]) -> Any:
                    return raw_json_value(base64.b64decode(item.get("raw", "")))
                data[key] = [unwrap(v) for v in value] if fd.is_repeated else unwrap(value)
                continue
            for item in value if fd.is_repeated else [value]:
                _restore(fd.message_type, item)
        elif fd.type in _INT64S:
            data[key] = [int(v) for v in value] if fd.is_repeated else int(value)
        elif _is_int_or_string(fd) and isinstance(value, str) and value.isdigit():
            data[key] = int(value)


def to_dict(message: Message) -> dict[str, Any]:
    """The object as Kubernetes prints it (`kctl get -o yaml|json`)."""
    data = json_format.MessageToDict(message)
    _restore(message.DESCRIPTOR, data)
    return data
