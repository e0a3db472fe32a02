"""Request bodies straight into messages: what a create or an update decodes, fast.

Every JSON or YAML body the HTTP API takes becomes a manifest dict first
(codec.load), then the kind's message. proto/manifest.py's `from_dict` is the
authority on that step: it normalises and checks every field (wrong types,
quantities, int-or-strings, UTF-8, unknown fields, each with its path for the
422) and then lets json_format's ParseDict build the message, which costs
~0.7 ms for a pod: a third of an HTTP create.

`from_manifest` walks the manifest once, straight into the message, with the
same checks compiled per message type. It only takes the common shapes; on
anything unusual (a bad value, a proto field name such as `pod_ip`, bytes,
unsigned or floating numbers, message-valued maps) it hands the manifest to
`manifest.from_dict`, which gives the message or the error, so what clients
see never depends on which path ran (tests/test_http_codec.py decodes random
objects of every kind, and spoiled copies of them, both ways).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import orjson
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from proto import kinds, manifest, options_pb2
from proto.quantity import QuantityError, parse_quantity


class _Unusual(Exception):
    """Input the fast decoder leaves to proto/manifest.py (errors, proto field names, rare types)."""


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Unusual
    if not value.isascii():
        try:
            value.encode("utf-8")  # lone surrogates (from YAML) cannot be stored: manifest.py says so
        except UnicodeEncodeError:
            raise _Unusual from None
    return value


def _is_quantity(fd: Any) -> bool:
    return bool(fd.GetOptions().Extensions[options_pb2.quantities])


def _integer(bits: int) -> Callable[[Any], int]:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1)

    def integer(value: Any) -> int:
        if type(value) is not int or not low <= value < high:  # bool is not int here, as in manifest.py
            raise _Unusual
        return value
    return integer


def _boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise _Unusual
    return value


def _quantity(value: Any) -> str:
    try:
        parse_quantity(_text(value))
    except QuantityError:
        raise _Unusual from None
    return str(value)


def _int_or_string_text(value: Any) -> str:
    if type(value) is int:
        return str(value)
    return _text(value)


_SCALARS: dict[int, Callable[[Any], Any]] = {
    FieldDescriptor.TYPE_STRING: _text, FieldDescriptor.TYPE_BOOL: _boolean,
    FieldDescriptor.TYPE_INT32: _integer(32), FieldDescriptor.TYPE_SINT32: _integer(32),
    FieldDescriptor.TYPE_INT64: _integer(64), FieldDescriptor.TYPE_SINT64: _integer(64),
}


def _scalar(fd: Any, quantity: bool) -> Callable[[Any], Any]:
    """The check (and conversion) of one scalar value of this field; _Unusual for types left to manifest.py."""
    if quantity or _is_quantity(fd):
        return _quantity
    if fd.type == FieldDescriptor.TYPE_STRING and fd.GetOptions().Extensions[options_pb2.int_or_string]:
        return _int_or_string_text
    check = _SCALARS.get(fd.type)
    if check is None:  # bytes (base64), unsigned and floating numbers: json_format's own rules
        def unusual(value: Any) -> Any:
            raise _Unusual
        return unusual
    return check


def _field_setter(fd: Any) -> Callable[[Message, Any], None]:
    """Sets this field of a message from its manifest value, as manifest.from_dict would."""
    name = fd.name
    if fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
        value_fd = fd.message_type.fields_by_name["value"]
        if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
            def unusual(msg: Message, value: Any) -> None:
                raise _Unusual
            return unusual
        check = _scalar(value_fd, _is_quantity(fd))

        def set_map(msg: Message, value: Any) -> None:
            if type(value) is not dict:
                raise _Unusual
            target = getattr(msg, name)
            for k, v in value.items():
                if v is not None:
                    target[_text(k)] = check(v)
        return set_map
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        sub = fd.message_type
        if sub.full_name == "google.protobuf.Timestamp":
            def set_time(target: Any, value: Any) -> None:
                try:
                    target.FromJsonString(_text(value))
                except ValueError:
                    raise _Unusual from None
            one: Callable[[Any, Any], None] = set_time
        elif manifest.is_raw_json(sub):
            def set_raw(target: Any, value: Any) -> None:
                if isinstance(value, str):
                    _text(value)  # a string of any field is checked for UTF-8 first, as manifest.py does
                if manifest.too_deep(value, manifest.MAX_RAW_JSON_DEPTH):
                    raise _Unusual  # manifest.py refuses it, naming the field
                try:
                    target.raw = manifest.raw_json_bytes(value)
                except (TypeError, ValueError):
                    raise _Unusual from None
            one = set_raw
        else:
            def set_message(target: Any, value: Any) -> None:
                target.SetInParent()  # `{}` is a present, empty message, as json_format makes it
                _filler(sub)(target, value)
            one = set_message
        if fd.is_repeated:
            def set_messages(msg: Message, value: Any) -> None:
                if type(value) is not list:
                    raise _Unusual
                target = getattr(msg, name)
                for item in value:
                    one(target.add(), item)
            return set_messages
        return lambda msg, value: one(getattr(msg, name), value)
    check = _scalar(fd, False)
    if fd.is_repeated:
        def set_scalars(msg: Message, value: Any) -> None:
            if type(value) is not list:
                raise _Unusual
            getattr(msg, name).extend([check(v) for v in value])
        return set_scalars
    return lambda msg, value: setattr(msg, name, check(value))


@cache
def _filler(desc: Any) -> Callable[[Message, Any], None]:
    """Fills a message of this type from a manifest dict, or raises _Unusual."""
    setters: dict[str, Callable[[Message, Any], None]] = {}

    def fill(msg: Message, data: Any) -> None:
        if not setters:  # filled on first use, as _converter's table
            for fd in desc.fields:
                setters[fd.json_name] = _field_setter(fd)
        if type(data) is not dict:
            raise _Unusual
        for key, value in data.items():
            setter = setters.get(key)
            if setter is None:  # an unknown field (even a null one), or a proto name (pod_ip)
                raise _Unusual
            if value is not None:  # `creationTimestamp: null` and friends mean "unset"
                setter(msg, value)
    return fill


class _SharedSpecs:
    """Decoded specs by their JSON: a Deployment's replicas, and every rewrite of one object, send the same spec.

    A pod's spec is most of its body; finding its bytes (encode the dict, look up,
    parse: ~5 µs) replaces walking it (~35 µs). Only clean JSON is keyed: a value
    orjson cannot encode faithfully (a NaN it would write as null, YAML's dates,
    bytes, non-string keys, lone surrogates) is decoded as before. The table holds
    up to `max_bytes` of JSON and messages (started afresh when full); a spec of
    more than an eighth of that is decoded each time.
    """

    _STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._bytes: dict[tuple[Any, bytes], bytes] = {}

    def fill(self, target: Message, value: dict[str, Any]) -> None:
        """`target` (a spec field of a new object) set from its manifest dict, or _Unusual."""
        target.SetInParent()  # `{}` is a present, empty message, as json_format makes it
        try:
            key = orjson.dumps(value, option=self._STRICT)
        except TypeError:
            key = b"null"
        if b"null" in key:  # NaN and null look alike here (and a string may hold "null": decoded as before)
            _filler(target.DESCRIPTOR)(target, value)
            return
        found = self._bytes.get((target.DESCRIPTOR, key))
        if found is not None:
            target.MergeFromString(found)
            return
        _filler(target.DESCRIPTOR)(target, value)
        decoded = target.SerializeToString()
        size = len(key) + len(decoded)
        if size > self.max_bytes // 8:
            return
        if self.size + size > self.max_bytes:
            self._bytes.clear()
            self.size = 0
        self._bytes[(target.DESCRIPTOR, key)] = decoded
        self.size += size


_SPECS = _SharedSpecs(4 * 1024 * 1024)  # ~2,500 pod specs


@cache
def _shares_spec(desc: Any) -> bool:
    """Whether the kind has a `spec` object (decoded through _SPECS)."""
    fd = desc.fields_by_name.get("spec")
    return (fd is not None and fd.type == FieldDescriptor.TYPE_MESSAGE and not fd.is_repeated
            and not manifest.is_raw_json(fd.message_type))


def from_manifest(kind: kinds.Kind, data: Any) -> Message:
    """`manifest.from_dict(data, kind)`: the same message, or the same error.

    A manifest is walked once, straight into the message; json_format's
    ParseDict after manifest.py's checks costs five times as much, a third of an
    HTTP create. Its spec is found by its JSON when the same one was decoded
    lately (_SharedSpecs). Anything unusual (a bad field, a proto field name,
    bytes) goes to manifest.py, which decides, so answers and errors stay as they are.
    """
    obj = kind.message()
    desc = kind.message.DESCRIPTOR
    try:
        spec = data.get("spec") if type(data) is dict else None
        if type(spec) is dict and _shares_spec(desc):
            _filler(desc)(obj, {key: value for key, value in data.items() if key != "spec"})
            _SPECS.fill(obj.spec, spec)  # type: ignore[attr-defined]
        else:
            _filler(desc)(obj, data)
    except (_Unusual, ValueError, TypeError):  # upb's own refusals too (e.g. a negative unsigned number)
        return manifest.from_dict(data, kind)
    obj.api_version = kind.api_version  # type: ignore[attr-defined]
    obj.kind = kind.kind  # type: ignore[attr-defined]
    return obj
