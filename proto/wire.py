"""Kubernetes' protobuf wire format: what kubectl POSTs as `application/vnd.kubernetes.protobuf`.

kubectl 1.32 sends every generated object (`create deployment|configmap|secret ...`,
`autoscale`, `auth can-i`) as protobuf: the 4 magic bytes `k8s\\0`, then a
`runtime.Unknown` {1: TypeMeta{1 apiVersion, 2 kind}, 2: raw, 3: contentEncoding,
4: contentType} whose `raw` is the object in Kubernetes' own field numbering.
Flotilla's .proto files use those numbers, so most of an object parses as it is;
four shapes differ, and each is declared on the field in proto/options.proto:

- a Quantity is a message {1 string} where Flotilla keeps a string `(quantities)`;
- an IntOrString is a message {1 type, 2 intVal, 3 strVal} (`(int_or_string)`);
- a metav1.Duration is a message {1 string} (`(duration)`);
- a struct Kubernetes embeds (Volume.volumeSource, Probe.handler, the
  LocalObjectReference in ConfigMapKeySelector ...) is a nested message, where
  Flotilla flattens its fields (`(embedded_in)`; numbered 1000 * outer + inner).

So at import this module derives, from Flotilla's own descriptors, a second
descriptor pool in which those fields have Kubernetes' wire shape. protobuf's C++
parser reads kubectl's bytes into the derived message; `decode` turns that into the
Kubernetes JSON dict that proto/manifest.py (and so validation) takes, and `encode`
goes the other way for protobuf responses. No per-kind code: a new kind or field
only needs its Kubernetes number in the .proto.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from proto import authentication_pb2, autoscaling_pb2, kinds, manifest, meta_pb2, options_pb2, policy_pb2
from proto.errors import BadRequest, NotFound

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

_PACKAGE = "flotilla.api"
def _api_files() -> tuple[str, ...]:
    """The .proto files the API's kinds live in (and those they import), dependencies first.

    Derived from the kinds table, so a kind added there is decodable at once.
    """
    roots = [k.message.DESCRIPTOR.file for k in kinds.SERVED]
    roots += [autoscaling_pb2.Scale.DESCRIPTOR.file, policy_pb2.Eviction.DESCRIPTOR.file,
              meta_pb2.DeleteOptions.DESCRIPTOR.file]
    ordered: list[str] = []

    def visit(fd: Any) -> None:
        if not fd.name.startswith("proto/") or fd.name == "proto/options.proto":
            return
        name = fd.name[len("proto/"):-len(".proto")]
        if name in ordered:
            return
        for dep in fd.dependencies:
            visit(dep)
        ordered.append(name)

    for root in roots:
        visit(root)
    return tuple(ordered)


_API_FILES = _api_files()
_WIRE_FILE = "flotilla/wire.proto"  # the synthetic file holding Kubernetes' wrapper shapes
_QUANTITY = f"{_PACKAGE}.Quantity"
_INT_OR_STRING = f"{_PACKAGE}.IntOrString"
_DURATION = f"{_PACKAGE}.Duration"
_UNKNOWN = f"{_PACKAGE}.Unknown"
_TIMESTAMP = "google.protobuf.Timestamp"
_TYPE_META_NUMBERS = (10001, 10002)  # Flotilla's apiVersion and kind; Kubernetes' objects have no such fields
_EMBEDDED = "embedded_"  # name prefix of the synthetic field holding an inlined struct

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, ftype: Any, *, type_name: str = "", json_name: str = "") -> _F:
    field = _F(name=name, number=number, type=ftype, label=_F.LABEL_OPTIONAL, json_name=json_name or name)
    if type_name:  # set even empty, it would claim a message type
        field.type_name = type_name
    return field


def _wire_file() -> descriptor_pb2.FileDescriptorProto:
    """Kubernetes' own small messages: the envelope and the three wrapped scalars."""
    f = descriptor_pb2.FileDescriptorProto(name=_WIRE_FILE, package=_PACKAGE, syntax="proto3")
    f.message_type.add(name="Quantity").field.append(_field("string", 1, _F.TYPE_STRING))
    f.message_type.add(name="Duration").field.append(_field("duration", 1, _F.TYPE_STRING))
    ios = f.message_type.add(name="IntOrString")
    ios.field.extend([_field("type", 1, _F.TYPE_INT64), _field("int_val", 2, _F.TYPE_INT32, json_name="intVal"),
                      _field("str_val", 3, _F.TYPE_STRING, json_name="strVal")])
    tm = f.message_type.add(name="TypeMeta")
    tm.field.extend([_field("api_version", 1, _F.TYPE_STRING, json_name="apiVersion"),
                     _field("kind", 2, _F.TYPE_STRING)])
    unknown = f.message_type.add(name="Unknown")  # runtime.Unknown
    unknown.field.extend([
        _field("type_meta", 1, _F.TYPE_MESSAGE, type_name=f".{_PACKAGE}.TypeMeta"),
        _field("raw", 2, _F.TYPE_BYTES),
        _field("content_encoding", 3, _F.TYPE_STRING),
        _field("content_type", 4, _F.TYPE_STRING)])
    return f


def _reshape(msg: descriptor_pb2.DescriptorProto) -> None:
    """Give one message (and its map entries) Kubernetes' wire shapes, in place."""
    for nested in msg.nested_type:
        _reshape(nested)
    entries = {n.name: n for n in msg.nested_type if n.options.map_entry}
    inlined: dict[int, list[descriptor_pb2.FieldDescriptorProto]] = {}
    for fd in list(msg.field):
        opts = fd.options
        if opts.Extensions[options_pb2.quantities]:
            entry = entries.get(fd.type_name.rpartition(".")[2]) if fd.type == _F.TYPE_MESSAGE else None
            target = entry.field[1] if entry is not None else fd  # a map's value, or the field itself
            target.type, target.type_name = _F.TYPE_MESSAGE, f".{_QUANTITY}"
        elif opts.Extensions[options_pb2.int_or_string]:
            fd.type, fd.type_name = _F.TYPE_MESSAGE, f".{_INT_OR_STRING}"
        elif opts.Extensions[options_pb2.duration]:
            fd.type, fd.type_name = _F.TYPE_MESSAGE, f".{_DURATION}"
        outer = opts.Extensions[options_pb2.embedded_in]
        if outer:
            if fd.number // 1000 != outer:
                raise RuntimeError(f"{msg.name}.{fd.name}: (embedded_in) = {outer} but numbered {fd.number}")
            inlined.setdefault(outer, []).append(fd)
        fd.ClearField("options")
    for outer, fields in inlined.items():
        holder = msg.nested_type.add(name=f"Embedded{outer}")
        for fd in fields:
            moved = holder.field.add()
            moved.CopyFrom(fd)
            moved.number = fd.number - 1000 * outer
            moved.ClearField("oneof_index")
            moved.ClearField("proto3_optional")
            msg.field.remove(fd)
        msg.field.append(_field(f"{_EMBEDDED}{outer}", outer, _F.TYPE_MESSAGE,
                                type_name=f".{_PACKAGE}.{msg.name}.Embedded{outer}"))
    # proto3 `optional` fields own synthetic oneofs; drop any a move left empty.
    used = {fd.oneof_index for fd in msg.field if fd.HasField("oneof_index")}
    if len(used) != len(msg.oneof_decl):
        raise RuntimeError(f"{msg.name}: an (embedded_in) field cannot be proto3 optional")


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_proto(timestamp_pb2.DESCRIPTOR))
    pool.Add(_wire_file())
    for name in _API_FILES:
        source = descriptor_pool.Default().FindFileByName(f"proto/{name}.proto")
        f = _file_proto(source)
        # Options were stripped, so the derived files need neither options.proto nor descriptor.proto.
        deps = [d for d in f.dependency if d != "proto/options.proto"]
        del f.dependency[:]
        f.dependency.extend([*deps, _WIRE_FILE])
        for msg in f.message_type:
            _reshape(msg)
        pool.Add(f)
    return pool


def _file_proto(fd: Any) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    return proto


_POOL = _build_pool()


@cache
def _class(full_name: str) -> Any:
    """The derived message class; typed Any, as its fields exist only at run time."""
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


# ---------------------------------------------------------------- wire message -> JSON dict


def _time(ts: Any) -> str | None:
    """Kubernetes writes an unset Time as an empty message; JSON has it as null (left out here)."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    text: str = ts.ToJsonString()
    return text


def _value(fd: Any, value: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        name = fd.message_type.full_name
        if name == _QUANTITY:
            return value.string
        if name == _INT_OR_STRING:
            return value.str_val if value.type == 1 else value.int_val
        if name == _DURATION:
            return value.duration
        if name == _TIMESTAMP:
            return _time(value)
        if manifest.is_raw_json(fd.message_type):  # FieldsV1: JSON bytes on the wire, the JSON in a dict
            return manifest.raw_json_value(value.raw)
        return _to_dict(value)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")  # Kubernetes JSON's []byte
    return value


def _to_dict(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        if fd.name.startswith(_EMBEDDED):
            out.update(_to_dict(value))  # JSON inlines an embedded struct's fields
            continue
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            out[fd.json_name] = {k: _value(value_fd, v) for k, v in value.items()}
        elif fd.is_repeated:
            out[fd.json_name] = [_value(fd, v) for v in value]
        else:
            converted = _value(fd, value)
            if converted is not None:
                out[fd.json_name] = converted
    return out


# ---------------------------------------------------------------- JSON dict -> wire message


@cache
def _json_fields(desc: Any) -> dict[str, tuple[Any, Any]]:
    """json name -> (field, the embedded-struct field holding it or None)."""
    fields: dict[str, tuple[Any, Any]] = {}
    for fd in desc.fields:
        if fd.name.startswith(_EMBEDDED):
            fields.update({inner.json_name: (inner, fd) for inner in fd.message_type.fields})
        else:
            fields[fd.json_name] = (fd, None)
    return fields


def _fill(msg: Message, data: dict[str, Any]) -> None:
    for key, value in data.items():
        found = _json_fields(msg.DESCRIPTOR).get(key)
        if found is None or value is None or found[0].number in _TYPE_META_NUMBERS:
            continue  # nulls, and apiVersion/kind: they travel in the envelope's TypeMeta
        fd, holder = found
        target = getattr(msg, holder.name) if holder is not None else msg
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            field = getattr(target, fd.name)
            for k, v in value.items():
                if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                    _set_message(field[k], value_fd, v)
                else:
                    field[k] = _scalar(value_fd, v)
        elif fd.is_repeated:
            field = getattr(target, fd.name)
            for v in value:
                if fd.type == FieldDescriptor.TYPE_MESSAGE:
                    _set_message(field.add(), fd, v)
                else:
                    field.append(_scalar(fd, v))
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            _set_message(getattr(target, fd.name), fd, value)
        else:
            setattr(target, fd.name, _scalar(fd, value))


def _set_message(msg: Any, fd: Any, value: Any) -> None:
    name = fd.message_type.full_name
    if name == _QUANTITY:
        msg.string = str(value)
    elif name == _INT_OR_STRING:
        if isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit()):
            msg.type, msg.int_val = 0, int(value)
        else:
            msg.type, msg.str_val = 1, str(value)
    elif name == _DURATION:
        msg.duration = str(value)
    elif name == _TIMESTAMP:
        msg.FromJsonString(value)
    elif manifest.is_raw_json(fd.message_type):
        msg.raw = manifest.raw_json_bytes(value)
    else:
        msg.SetInParent()  # an empty struct is still sent, as Kubernetes does
        _fill(msg, value)


def _scalar(fd: Any, value: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64decode(value)
    return value


# ---------------------------------------------------------------- the envelope


def _unwrap(body: bytes) -> tuple[str, str, bytes]:
    if not body.startswith(MAGIC):
        raise BadRequest("protobuf body must start with the 4 bytes k8s\\x00 (Kubernetes' envelope); "
                         f"it starts with {body[:4]!r}")
    unknown = _class(_UNKNOWN)()
    try:
        unknown.ParseFromString(body[len(MAGIC):])
    except DecodeError as exc:
        raise BadRequest(f"protobuf body is not a valid runtime.Unknown envelope: {exc}") from None
    if unknown.content_encoding:
        raise BadRequest(f"protobuf body has contentEncoding {unknown.content_encoding!r}; only none is supported")
    if unknown.content_type and unknown.content_type != CONTENT_TYPE:
        raise BadRequest(f"protobuf body has contentType {unknown.content_type!r}; expected {CONTENT_TYPE}")
    meta = unknown.type_meta
    if not meta.api_version or not meta.kind:
        raise BadRequest("protobuf body's envelope does not say the object's apiVersion and kind")
    return meta.api_version, meta.kind, unknown.raw


def message_name(api_version: str, kind: str) -> str:
    """The full protobuf name of the message Kubernetes' `kind` in `api_version` decodes into."""
    extra = _EXTRA_KINDS.get((api_version, kind))
    if extra:
        return extra
    review = kinds.review(api_version, kind)  # `kubectl auth can-i` and `auth whoami` bodies
    if review is not None:
        return review.message.DESCRIPTOR.full_name
    try:
        return kinds.for_kind(api_version, kind).message.DESCRIPTOR.full_name
    except NotFound:
        raise BadRequest(f"protobuf body holds {kind} in {api_version}, which this server does not decode") from None


# Kinds that are request bodies only, with no resource of their own in proto/kinds.py:
# the `scale`, `eviction` and `token` subresources' bodies, and a DELETE's options.
_EXTRA_KINDS: dict[tuple[str, str], str] = {
    ("autoscaling/v1", "Scale"): autoscaling_pb2.Scale.DESCRIPTOR.full_name,
    ("policy/v1", "Eviction"): policy_pb2.Eviction.DESCRIPTOR.full_name,
    ("authentication.k8s.io/v1", "TokenRequest"): authentication_pb2.TokenRequest.DESCRIPTOR.full_name,
    ("v1", "DeleteOptions"): meta_pb2.DeleteOptions.DESCRIPTOR.full_name,
    ("meta.k8s.io/v1", "DeleteOptions"): meta_pb2.DeleteOptions.DESCRIPTOR.full_name,
}


def decode(body: bytes) -> dict[str, Any]:
    """A `k8s\\0`-enveloped protobuf request body as the Kubernetes JSON object kubectl means.

    The dict has apiVersion and kind (from the envelope) and camelCase fields, ready
    for proto/manifest.py's `from_dict`. Raises BadRequest saying what is wrong.
    """
    api_version, kind, raw = _unwrap(body)
    obj = _class(message_name(api_version, kind))()
    try:
        obj.ParseFromString(raw)
    except DecodeError as exc:
        raise BadRequest(f"protobuf body does not decode as {kind} ({api_version}): {exc}") from None
    return {"apiVersion": api_version, "kind": kind, **_to_dict(obj)}


def encode_dict(data: dict[str, Any]) -> bytes:
    """A Kubernetes JSON object (with apiVersion and kind) as Kubernetes protobuf, enveloped."""
    api_version, kind = data.get("apiVersion"), data.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise BadRequest("an object to encode needs apiVersion and kind")
    obj = _class(message_name(api_version, kind))()
    _fill(obj, data)
    unknown = _class(_UNKNOWN)(raw=obj.SerializeToString(deterministic=True))
    unknown.type_meta.api_version, unknown.type_meta.kind = api_version, kind
    return MAGIC + unknown.SerializeToString(deterministic=True)


def encode(message: Message) -> bytes:
    """A Flotilla object as the bytes kube-apiserver would answer `Accept: ...protobuf` with."""
    data = manifest.to_dict(message)
    kind = kinds.for_message(message)
    data["apiVersion"], data["kind"] = kind.api_version, kind.kind
    return encode_dict(data)


def wire_messages() -> Iterable[str]:
    """Every message of the derived pool (for tests that check the whole API reshapes)."""
    for name in _API_FILES:
        yield from (m.full_name for m in _POOL.FindFileByName(f"proto/{name}.proto").message_types_by_name.values())
