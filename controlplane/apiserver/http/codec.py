"""Bodies of the HTTP API: what a request carries in and what its answer is encoded as.

- **Requests** come as JSON (`kubectl`, the Python client, which sends no
  Content-Type at all), YAML, or Kubernetes protobuf (`k8s\\0` + runtime.Unknown,
  what kubectl 1.32's generators POST; proto/wire.py decodes it). Every body
  ends as a Kubernetes JSON dict and becomes a message by manifests.py (fast,
  deferring to proto/manifest.py on anything unusual), so the same paths and
  messages name a bad field whichever encoding carried it.
- **fieldValidation**: `Strict` refuses unknown fields (400, naming each one's
  path, as kube-apiserver's strict decoding does); `Warn` (the default) drops
  them and says so in `Warning` headers; `Ignore` drops them silently.
- **Responses** are JSON, as `Accept` allows: the object itself, a meta.k8s.io
  `Table` (`as=Table`, built by controlplane/printers), or metadata only
  (`as=PartialObjectMetadata` / `PartialObjectMetadataList`).

Objects become JSON through `object_dict`, a converter compiled once per message
type that yields exactly what `manifest.to_dict` does (the test suite checks the
two agree) at a fraction of the cost: a list of 10,000 pods is the apiserver's
biggest answer, and json_format's generic walk would dominate it. Stored objects'
JSON is kept by version (`EncodedObjects`) and replicas share their spec's
(`object_json`), so lists and watches splice bytes made once (bench/README.md
has the figures).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import orjson
import yaml
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from controlplane import printers
from controlplane.apiserver.http import manifests
from proto import kinds, manifest, options_pb2, wire
from proto.errors import BadRequest, Invalid, TooLarge

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = wire.CONTENT_TYPE
MAX_BODY_BYTES = 3 * 1024 * 1024  # kube-apiserver's limit for a request body

# What an answer may be rendered as (the `as=` of the Accept header).
AS_OBJECT = ""
AS_TABLE = "Table"
AS_PARTIAL = "PartialObjectMetadata"
AS_PARTIAL_LIST = "PartialObjectMetadataList"

# JSON of stored objects kept for lists and watches (EncodedObjects): ~20,000 pods' worth.
ENCODED_CACHE_BYTES = 32 * 1024 * 1024
_YEAR_10000 = 253_402_300_800  # seconds since the epoch

STRICT, WARN, IGNORE = "Strict", "Warn", "Ignore"
_UNKNOWN_FIELD = re.compile(r'^unknown field "')
_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


# ---------------------------------------------------------------- objects → JSON


def _bytes(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _int_or_string(value: str) -> Any:
    return int(value) if value.isdigit() else value


def _raw_json(value: Any) -> Any:
    return manifest.raw_json_value(value.raw)


@lru_cache(maxsize=4096)
def _whole_seconds(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _timestamp(value: Any) -> str:
    # Kubernetes' times have whole seconds, and objects made together share them: format each
    # second once. Years 1970-9999 only, where strftime and json_format agree on four digits.
    if value.nanos == 0 and 0 <= value.seconds < _YEAR_10000:
        return _whole_seconds(value.seconds)
    return str(value.ToJsonString())


def _value_converter(fd: Any) -> Callable[[Any], Any] | None:
    """How one (non-repeated) value of this field becomes JSON (None: as it is)."""
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        if fd.message_type.full_name == "google.protobuf.Timestamp":
            return _timestamp
        if manifest.is_raw_json(fd.message_type):
            return _raw_json
        return _converter(fd.message_type)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return _bytes
    if fd.type == FieldDescriptor.TYPE_STRING and fd.GetOptions().Extensions[options_pb2.int_or_string]:
        return _int_or_string
    return None


def _field_converter(fd: Any) -> Callable[[Any], Any] | None:
    """How a field's value becomes JSON (None: as it is)."""
    if fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
        value = _value_converter(fd.message_type.fields_by_name["value"])
        # Keys then item lookups: upb maps answer these in C, dict(m) goes through Python's Mapping.
        if value is None:
            return lambda m: {k: m[k] for k in m}
        return lambda m: {k: value(m[k]) for k in m}
    one = _value_converter(fd)
    if fd.is_repeated:
        if one is None:
            return list
        return lambda values: [one(v) for v in values]
    return one


FieldTable = dict[Any, tuple[str, Callable[[Any], Any] | None]]


@cache
def _field_table(desc: Any) -> FieldTable:
    """field descriptor -> (JSON name, converter or None), filled on first use (types refer to each other)."""
    return {}


def _fields_of(desc: Any) -> FieldTable:
    table = _field_table(desc)
    if not table:
        for fd in desc.fields:
            table[fd] = (fd.json_name, _field_converter(fd))
    return table


@cache
def _converter(desc: Any) -> Callable[[Message], dict[str, Any]]:
    """A function from a message of this type to its Kubernetes JSON dict (set fields only, as json_format)."""
    # Keyed by the field descriptor itself (upb hands out one object per field), which spares
    # reading its number for every field of every object.
    table = _field_table(desc)

    def convert(msg: Message) -> dict[str, Any]:
        if not table:
            _fields_of(desc)
        out = {}
        for fd, value in msg.ListFields():
            name, fn = table[fd]  # fn None: the value is its own JSON
            out[name] = value if fn is None else fn(value)
        return out
    return convert


def object_dict(obj: Message) -> dict[str, Any]:
    """The object as Kubernetes JSON: the same dict as proto/manifest.py's `to_dict`, faster."""
    return _converter(obj.DESCRIPTOR)(obj)


@cache
def _json_key(name: str) -> bytes:
    return orjson.dumps(name) + b":"


class _SharedSpecs:
    """The JSON of specs, by their bytes: the replicas of one template hold the same spec.

    Converting a pod's spec is two thirds of making its JSON, and a Deployment's
    pods differ in metadata and status but share a spec (per node, with nodeName):
    a cold list of 10,000 such pods converts a few specs instead of 10,000. A small
    bounded table; it starts afresh when full (specs of many shapes gain nothing).
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._json: dict[bytes, bytes] = {}

    def encode(self, spec: Message) -> bytes:
        key = spec.SerializeToString()
        found = self._json.get(key)
        if found is None:
            if len(self._json) >= self.max_entries:
                self._json.clear()
            found = self._json[key] = orjson.dumps(object_dict(spec))
        return found


_SPECS = _SharedSpecs(4096)


def object_json(obj: Message) -> bytes:
    """`orjson.dumps(object_dict(obj))`, its spec's JSON shared with objects that have the same spec."""
    table = _fields_of(obj.DESCRIPTOR)
    parts = []
    for fd, value in obj.ListFields():
        name, fn = table[fd]
        if name == "spec" and fn is not None and not fd.is_repeated:
            part = _SPECS.encode(value)
        else:
            part = orjson.dumps(value if fn is None else fn(value))
        parts.append(_json_key(name) + part)
    return b"{" + b",".join(parts) + b"}"


def metadata_dict(obj: Message) -> dict[str, Any]:
    """`object_dict(obj)["metadata"]` (or {}), converting nothing else."""
    return _converter(obj.metadata.DESCRIPTOR)(obj.metadata)  # type: ignore[attr-defined]


class EncodedObjects:
    """Stored objects' JSON, by the exact bytes they were read as (so by object and resourceVersion).

    An object's JSON at one resourceVersion never changes, and encoding it is most
    of what a list or a watch event costs here (a pod: ~30 µs to convert, ~2 µs to
    find again). So lists of unchanged objects (`kubectl get` again, an informer's
    relist) and every watcher after the first of one event reuse it, as
    kube-apiserver's watch cache serialises an event once for all its watchers.
    Keys are 128-bit BLAKE2b digests of the bytes (never the bytes themselves, which
    would double the memory). The least recently used go once `max_bytes` of JSON
    are held.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._json: OrderedDict[tuple[type[Message], bytes], bytes] = OrderedDict()

    def encode(self, kind: kinds.Kind, raw: bytes) -> bytes:
        """The JSON of the object stored as `raw` (with its resourceVersion inside)."""
        key = (kind.message, hashlib.blake2b(raw, digest_size=16).digest())
        found = self._json.get(key)
        if found is not None:
            self._json.move_to_end(key)
            return found
        found = object_json(parse(kind, raw))
        self._json[key] = found
        self.size += len(found)
        while self.size > self.max_bytes and self._json:
            self.size -= len(self._json.popitem(last=False)[1])
        return found


ENCODED = EncodedObjects(ENCODED_CACHE_BYTES)


def list_body(kind: kinds.Kind, items: Sequence[bytes], metadata: dict[str, Any]) -> bytes:
    """A `<Kind>List` of stored objects as JSON: the same bytes as dumping the list's dict, spliced.

    Each item is encoded on its own (and usually found in ENCODED), so no dict of the
    whole list is ever built: 10,000 pods would be half a million Python objects
    for the garbage collector to walk while they are built.
    """
    head = orjson.dumps({"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": metadata,
                         "items": []})
    if not items:
        return head
    encoded = [ENCODED.encode(kind, raw) for raw in items]
    # One copy of the whole body (a join), not three: the head and tail go onto the end items.
    encoded[0] = head[:-2] + encoded[0]
    encoded[-1] += b"]}"
    return b",".join(encoded)


def watch_line(event_type: str, kind: kinds.Kind, raw: bytes) -> bytes:
    """One watch event of a stored object, as its JSON line (`{"type": ..., "object": ...}`)."""
    return b'{"type":' + orjson.dumps(event_type) + b',"object":' + ENCODED.encode(kind, raw) + b"}\n"


def parse(kind: kinds.Kind, raw: bytes) -> Message:
    obj = kind.message()
    obj.ParseFromString(raw)
    return obj


def partial_metadata(data: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": data.get("metadata", {})}


def partial_object(obj: Message) -> dict[str, Any]:
    """`partial_metadata(object_dict(obj))`, converting the metadata only."""
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata_dict(obj)}


def dumps(data: Any) -> bytes:
    return orjson.dumps(data)


# ---------------------------------------------------------------- content negotiation


@dataclass(frozen=True)
class Rendering:
    """What the client asked the answer to be (from Accept)."""

    as_: str = AS_OBJECT
    include_object: str = "Metadata"  # Table rows' object: None, Metadata or Object

    @property
    def table(self) -> bool:
        return self.as_ == AS_TABLE


def _media_types(accept: str) -> list[tuple[str, dict[str, str]]]:
    found = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        found.append((media.lower(), dict(p.partition("=")[::2] for p in params if "=" in p)))
    return found


def accepts(accept: str, media: str, **wanted: str) -> bool:
    """Whether `accept` lists `media` with these parameters (e.g. aggregated discovery)."""
    return any(m == media and all(p.get(k) == v for k, v in wanted.items()) for m, p in _media_types(accept))


def negotiate(accept: str, include_object: str = "") -> Rendering:
    """The first rendering of the Accept header this server can give (JSON in the end)."""
    for media, params in _media_types(accept or JSON):
        if media not in (JSON, "application/*", "*/*", PROTOBUF, YAML):
            continue
        as_ = params.get("as", "")
        if not as_:
            return Rendering(AS_OBJECT)
        if params.get("g") != "meta.k8s.io" or params.get("v") not in ("v1", "v1beta1"):
            continue
        if as_ in (AS_TABLE, AS_PARTIAL, AS_PARTIAL_LIST):
            return Rendering(as_, include_object or "Metadata")
    return Rendering(AS_OBJECT)


def table(kind: kinds.Kind, objs: Sequence[Message], rendering: Rendering, resource_version: str = "",
          continue_token: str = "", remaining: int = 0) -> dict[str, Any]:
    built = printers.generate_table(kind, objs, resource_version=resource_version)
    # Rows' objects through object_dict: Table.to_dict would convert each whole object
    # with json_format (~100 µs a pod) even to keep only its metadata.
    data = built.to_dict("None")
    include = rendering.include_object
    if include != "None":
        for row, obj in zip(data["rows"], objs, strict=True):
            if include == "Metadata":
                row["object"] = partial_object(obj)
            else:
                whole = object_dict(obj)
                row["object"] = {"apiVersion": kind.api_version, "kind": kind.kind,
                                 **{k: v for k, v in whole.items() if k not in ("apiVersion", "kind")}}
    if continue_token:
        data["metadata"]["continue"] = continue_token
    if remaining:
        data["metadata"]["remainingItemCount"] = remaining
    return data


# ---------------------------------------------------------------- requests → objects


def load(body: bytes, content_type: str) -> Any:
    """A request body as a plain dict (or list, for JSON patches), whatever encoding it came in."""
    if len(body) > MAX_BODY_BYTES:
        raise TooLarge(f"Request entity too large: limit is {MAX_BODY_BYTES} bytes")
    media = content_type.split(";")[0].strip().lower()
    if media == PROTOBUF:
        return wire.decode(body)
    try:
        if media in (YAML, "application/apply-patch+yaml", "text/yaml", "application/x-yaml"):
            return yaml.load(body, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        return orjson.loads(body)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise BadRequest(f"the request body is not valid {'YAML' if 'yaml' in media else 'JSON'}: "
                         f"{str(exc).splitlines()[0]}") from None


def field_validation(value: str) -> str:
    if value in ("", WARN):
        return WARN
    if value not in (STRICT, IGNORE):
        raise BadRequest(f'fieldValidation must be one of "Ignore", "Warn" or "Strict", not "{value}"')
    return value


def _drop(data: Any, path: str) -> None:
    """Remove the field at `spec.containers[0].foo` from a manifest dict."""
    tokens = [(name, int(index) if index else None) for name, index in _PATH_TOKEN.findall(path)]
    node = data
    for i, (name, index) in enumerate(tokens):
        last = i == len(tokens) - 1
        if index is not None:
            if not isinstance(node, list) or index >= len(node):
                return
            node = node[index]
            continue
        if not isinstance(node, dict) or name not in node:
            return
        if last:
            del node[name]
            return
        node = node[name]


def check_type_meta(kind: kinds.Kind, data: dict[str, Any]) -> None:
    """A body's apiVersion and kind, where given, must be the URL's."""
    api_version, kind_name = data.get("apiVersion"), data.get("kind")
    if api_version and api_version != kind.api_version:
        raise BadRequest(f"the API version in the data ({api_version}) does not match the expected API "
                         f"version ({kind.api_version})")
    if kind_name and kind_name != kind.kind:
        raise BadRequest(f"the kind in the data ({kind_name}) does not match the expected kind ({kind.kind})")


def to_object(kind: kinds.Kind, data: Any, validation: str = WARN) -> tuple[Message, list[str]]:
    """A manifest dict as the kind's message, and the warnings to send back.

    Unknown fields follow `fieldValidation`; every other bad field is Invalid (422)
    with its path, from proto/manifest.py.
    """
    if isinstance(data, dict):
        check_type_meta(kind, data)
    warnings: list[str] = []
    for _attempt in range(3):
        try:
            return manifests.from_manifest(kind, data), warnings
        except Invalid as err:
            unknown = [path for path, message in err.causes if _UNKNOWN_FIELD.match(message)]
            if not unknown:
                raise
            if validation == STRICT:
                fields = ", ".join(f'unknown field "{path}"' for path in unknown)
                raise BadRequest(f'{kind.kind} in version "{kind.version}" cannot be handled as a {kind.kind}: '
                                 f"strict decoding error: {fields}") from None
            for path in unknown:
                _drop(data, path)
                if validation == WARN:
                    warnings.append(f'unknown field "{path}"')
    raise BadRequest(f"cannot decode the {kind.kind}")
