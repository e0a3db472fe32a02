"""A CRD version's OpenAPI v3 schema at work: is it structural, and what it does to a custom object.

Kubernetes requires the schema of every served version to be *structural*
(apiextensions-apiserver's pkg/apiserver/schema): every node says its type,
`properties` only under objects and `items` only under arrays, the logical
junctors (allOf, anyOf, oneOf, not) only add value checks, never types or
defaults. A structural schema is what makes the next three steps possible, in
the order the apiserver runs them on every object it decodes:

1. pruning: fields the schema does not name are dropped (unless a node says
   `x-kubernetes-preserve-unknown-fields: true`), so nothing unknown is stored;
2. defaulting: `default` values fill fields the object leaves unset;
3. validation: types, required, enum, bounds, lengths, patterns, formats, with
   the field path and Kubernetes' texts (`spec.replicas in body must be of type
   integer: "string"`).

Schemas are the JSON the user wrote (plain dicts); objects are plain dicts.
"""

from __future__ import annotations

import copy
import datetime as _dt
import ipaddress
import re
import uuid
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import re2  # type: ignore[import-untyped]

from controlplane.apiserver.validation.field import Errors

Schema = dict[str, Any]
_TYPES = ("object", "array", "string", "integer", "number", "boolean")
_JUNCTORS = ("allOf", "anyOf", "oneOf")
# What a node inside a junctor may not say: types and structure belong to the structural part.
_JUNCTOR_FORBIDDEN = ("type", "default", "additionalProperties", "nullable", "x-kubernetes-preserve-unknown-fields",
                      "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string", "description", "title")
_EMBEDDED_FIELDS = ("apiVersion", "kind", "metadata")


def _quote(value: Any) -> str:
    """A value as Kubernetes' field errors print it (strings quoted, others bare)."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return f'"{_json_type(value)}"'
    return str(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# ---------------------------------------------------------------- structural


def structural_errors(schema: Any, path: str) -> Errors:
    """What makes a version's schema non-structural, each with the path of the offending node."""
    if not isinstance(schema, dict) or not schema:
        return [(path, "Required value: schemas are required")]
    errors: Errors = []
    if schema.get("type") != "object":
        errors.append((f"{path}.type", f"Invalid value: {_quote(schema.get('type', ''))}: must be object at the "
                                        "root"))
    _structural(schema, path, errors, root=True)
    metadata = (schema.get("properties") or {}).get("metadata")
    if isinstance(metadata, dict):
        allowed = {"type"} | ({"properties"} if set(metadata.get("properties") or {}) <= {"name", "generateName"}
                              else set())
        extra = sorted(set(metadata) - allowed - {"description"})
        if extra:
            errors.append((f"{path}.properties[metadata]", "Forbidden: must not specify anything other than name "
                                                           "and generateName, but metadata is implicitly specified"))
    return errors


def _structural(node: Any, path: str, errors: Errors, *, root: bool = False, in_junctor: bool = False,
                int_or_string_branch: bool = False) -> None:
    if not isinstance(node, dict):
        errors.append((path, "Invalid value: must be an object"))
        return
    if "$ref" in node:
        errors.append((f"{path}.$ref", "Forbidden: $ref is not supported"))
    kind = node.get("type", "")
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if preserve is False:
        errors.append((f"{path}.x-kubernetes-preserve-unknown-fields",
                       "Invalid value: false: must be true or undefined"))
    if in_junctor:
        for key in _JUNCTOR_FORBIDDEN:
            if key in node and not (key == "type" and int_or_string_branch):
                errors.append((f"{path}.{key}", "Forbidden: must not be used inside of a logical junctor"))
    else:
        if kind and kind not in _TYPES:
            errors.append((f"{path}.type", f'Unsupported value: "{kind}": supported values: "array", "boolean", '
                                           '"integer", "number", "object", "string"'))
        if not kind and not int_or_string and preserve is not True and not root:
            errors.append((f"{path}.type", "Required value: must not be empty for specified object fields"))
        if int_or_string and kind:
            errors.append((f"{path}.type", "Invalid value: must be empty if x-kubernetes-int-or-string is true"))
    if "properties" in node and kind != "object" and not in_junctor:
        errors.append((f"{path}.properties", "Forbidden: must only be used with type object"))
    if "items" in node and kind != "array" and not in_junctor:
        errors.append((f"{path}.items", "Forbidden: must only be used with type array"))
    if kind == "array" and not in_junctor and not isinstance(node.get("items"), dict):
        errors.append((f"{path}.items", "Required value: must be specified"))
    if "properties" in node and isinstance(node.get("additionalProperties"), dict | bool) \
            and node.get("additionalProperties") is not False:
        errors.append((f"{path}.additionalProperties", "Forbidden: additionalProperties and properties are mutual "
                                                       "exclusive"))
    if node.get("x-kubernetes-embedded-resource") is True and kind != "object":
        errors.append((f"{path}.type", 'Invalid value: must be object if x-kubernetes-embedded-resource is true'))
    for name, sub in (node.get("properties") or {}).items():
        _structural(sub, f"{path}.properties[{name}]", errors, in_junctor=in_junctor)
    if isinstance(node.get("items"), dict):
        _structural(node["items"], f"{path}.items", errors, in_junctor=in_junctor)
    elif "items" in node:
        errors.append((f"{path}.items", "Forbidden: items must be a schema object and not an array"))
    if isinstance(node.get("additionalProperties"), dict):
        _structural(node["additionalProperties"], f"{path}.additionalProperties", errors, in_junctor=in_junctor)
    for junctor in _JUNCTORS:
        for i, sub in enumerate(node.get(junctor) or []):
            _structural(sub, f"{path}.{junctor}[{i}]", errors, in_junctor=True,
                        int_or_string_branch=(int_or_string or int_or_string_branch)
                        and _int_or_string_branch(junctor, sub))
    if isinstance(node.get("not"), dict):
        _structural(node["not"], f"{path}.not", errors, in_junctor=True)
    if "pattern" in node:
        try:
            _pattern(str(node["pattern"]))
        except re2.error as exc:
            errors.append((f"{path}.pattern", f"Invalid value: {_quote(node['pattern'])}: must be a valid regular "
                                              f"expression, but isn't: {exc}"))


def default_errors(schema: Any, path: str) -> Errors:
    """Defaults that their own node's schema refuses, each at its `.default` (as Kubernetes checks them)."""
    errors: Errors = []
    todo = [(schema, path)]
    while todo:
        node, at = todo.pop()
        if not isinstance(node, dict):
            continue
        if "default" in node:
            errors += validate(node["default"], node, f"{at}.default", root=False)
        todo.extend((sub, f"{at}.properties[{name}]") for name, sub in (node.get("properties") or {}).items())
        if isinstance(node.get("items"), dict):
            todo.append((node["items"], f"{at}.items"))
        if isinstance(node.get("additionalProperties"), dict):
            todo.append((node["additionalProperties"], f"{at}.additionalProperties"))
    return errors


def _int_or_string_branch(junctor: str, sub: Any) -> bool:
    """Kubernetes' two int-or-string patterns, where `type` may appear in a junctor:
    `anyOf: [{type: integer}, {type: string}]`, and that same anyOf inside an allOf."""
    if not isinstance(sub, dict):
        return False
    if junctor == "anyOf":
        return set(sub) <= {"type"} and sub.get("type") in ("integer", "string")
    return junctor == "allOf" and "anyOf" in sub


# ---------------------------------------------------------------- pruning


def prune(obj: Any, schema: Schema, path: str = "", *, root: bool = True) -> list[str]:
    """Drop every field the schema does not specify, in place; the paths dropped, for warnings."""
    dropped: list[str] = []
    _prune(obj, schema, path, dropped, root=root)
    return dropped


def _prune(value: Any, node: Schema, path: str, dropped: list[str], *, root: bool = False) -> None:
    if isinstance(value, dict):
        properties = node.get("properties") or {}
        additional = node.get("additionalProperties")
        keep_unknown = node.get("x-kubernetes-preserve-unknown-fields") is True or additional is True
        embedded = root or node.get("x-kubernetes-embedded-resource") is True
        for key in list(value):
            sub_path = f"{path}.{key}" if path else key
            if embedded and key in _EMBEDDED_FIELDS:
                continue  # apiVersion, kind and metadata are the object's own, checked apart
            if key in properties:
                _prune(value[key], properties[key], sub_path, dropped)
            elif isinstance(additional, dict):
                _prune(value[key], additional, sub_path, dropped)
            elif not keep_unknown:
                del value[key]
                dropped.append(sub_path)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            _prune(item, node["items"], f"{path}[{i}]", dropped)


# ---------------------------------------------------------------- defaulting


def default(obj: Any, schema: Schema) -> None:
    """Fill unset fields that have a `default`, in place (never overriding what is there)."""
    if isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                default(obj[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key in obj:
                if key not in (schema.get("properties") or {}):
                    default(obj[key], additional)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            default(item, schema["items"])


# ---------------------------------------------------------------- validation


def validate(obj: Any, schema: Schema, path: str = "", *, root: bool = True) -> Errors:
    """Every way `obj` breaks `schema`, as (field path, Kubernetes' detail) pairs."""
    errors: Errors = []
    _validate(obj, schema, path, errors, root=root)
    return errors


def _validate(value: Any, node: Schema, path: str, errors: Errors, *, root: bool = False) -> None:
    shown = path or "<root>"
    if value is None:
        if not node.get("nullable"):
            expected = node.get("type") or ("integer,string" if node.get("x-kubernetes-int-or-string") else "")
            if expected:
                errors.append((shown, f'Invalid value: "null": {shown} in body must be of type {expected}: "null"'))
        return
    if not _type_ok(value, node, shown, errors):
        return
    for junctor in _JUNCTORS:
        subs = node.get(junctor) or []
        if not subs:
            continue
        passing = sum(1 for sub in subs if not validate(value, sub, path, root=False))
        if junctor == "allOf":
            for sub in subs:
                _validate(value, sub, path, errors)
        elif junctor == "anyOf" and passing == 0:
            errors.append((shown, f"Invalid value: {_quote(value)}: {shown} in body must match at least one schema "
                                  "in anyOf"))
        elif junctor == "oneOf" and passing != 1:
            errors.append((shown, f"Invalid value: {_quote(value)}: {shown} in body must match exactly one schema "
                                  "in oneOf"))
    if isinstance(node.get("not"), dict) and not validate(value, node["not"], path, root=False):
        errors.append((shown, f"Invalid value: {_quote(value)}: {shown} in body must not validate the schema "
                              "(not)"))
    if "enum" in node and value not in node["enum"]:
        supported = ", ".join(_quote(v) for v in node["enum"])
        errors.append((shown, f"Unsupported value: {_quote(value)}: supported values: {supported}"))
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        _numeric(value, node, shown, errors)
    elif isinstance(value, str):
        _string(value, node, shown, errors)
    elif isinstance(value, list):
        _array(value, node, path, shown, errors)
    elif isinstance(value, dict):
        _object(value, node, path, shown, errors, root=root)


def _type_ok(value: Any, node: Schema, shown: str, errors: Errors) -> bool:
    actual = _json_type(value)
    if node.get("x-kubernetes-int-or-string"):
        if actual in ("integer", "string"):
            return True
        errors.append((shown, f'Invalid value: "{actual}": {shown} in body must be of type integer,string: '
                              f'"{actual}"'))
        return False
    expected = node.get("type")
    if not expected or expected == actual or (expected == "number" and actual == "integer"):
        return True
    if expected == "integer" and isinstance(value, float) and value.is_integer():
        return True
    errors.append((shown, f'Invalid value: "{actual}": {shown} in body must be of type {expected}: "{actual}"'))
    return False


def _numeric(value: float, node: Schema, shown: str, errors: Errors) -> None:
    if "minimum" in node:
        low = node["minimum"]
        if value < low or (node.get("exclusiveMinimum") and value == low):
            relation = "greater than" if node.get("exclusiveMinimum") else "greater than or equal to"
            errors.append((shown, f"Invalid value: {_quote(value)}: {shown} in body should be {relation} {low}"))
    if "maximum" in node:
        high = node["maximum"]
        if value > high or (node.get("exclusiveMaximum") and value == high):
            relation = "less than" if node.get("exclusiveMaximum") else "less than or equal to"
            errors.append((shown, f"Invalid value: {_quote(value)}: {shown} in body should be {relation} {high}"))
    step = node.get("multipleOf")
    if step and (value / step) != int(value / step):
        errors.append((shown, f"Invalid value: {_quote(value)}: {shown} in body should be a multiple of {step}"))


def _string(value: str, node: Schema, shown: str, errors: Errors) -> None:
    if "minLength" in node and len(value) < node["minLength"]:
        errors.append((shown, f"Invalid value: {_quote(value)}: {shown} in body should be at least "
                              f"{node['minLength']} chars long"))
    if "maxLength" in node and len(value) > node["maxLength"]:
        errors.append((shown, f"Too long: may not be more than {node['maxLength']} bytes"))
    if "pattern" in node and _pattern(str(node["pattern"])).search(value) is None:
        errors.append((shown, f"Invalid value: {_quote(value)}: {shown} in body should match '{node['pattern']}'"))
    check = _FORMATS.get(node.get("format", ""))
    if check is not None and not check(value):
        errors.append((shown, f"Invalid value: {_quote(value)}: {shown} in body must be of type {node['format']}: "
                              f"{_quote(value)}"))


def _array(value: list[Any], node: Schema, path: str, shown: str, errors: Errors) -> None:
    if "minItems" in node and len(value) < node["minItems"]:
        errors.append((shown, f"Invalid value: {len(value)}: {shown} in body should have at least "
                              f"{node['minItems']} items"))
    if "maxItems" in node and len(value) > node["maxItems"]:
        errors.append((shown, f"Too many: {len(value)}: must have at most {node['maxItems']} items"))
    if node.get("uniqueItems") or node.get("x-kubernetes-list-type") == "set":
        seen: list[Any] = []
        for i, item in enumerate(value):
            if item in seen:
                errors.append((f"{path}[{i}]", f"Duplicate value: {_quote(item)}"))
            seen.append(item)
    items = node.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _validate(item, items, f"{path}[{i}]", errors)


def _object(value: dict[str, Any], node: Schema, path: str, shown: str, errors: Errors, *, root: bool) -> None:
    for name in node.get("required") or []:
        if name not in value:
            errors.append((f"{path}.{name}" if path else name, "Required value"))
    if "minProperties" in node and len(value) < node["minProperties"]:
        errors.append((shown, f"Invalid value: {len(value)}: {shown} in body should have at least "
                              f"{node['minProperties']} properties"))
    if "maxProperties" in node and len(value) > node["maxProperties"]:
        errors.append((shown, f"Too many: {len(value)}: must have at most {node['maxProperties']} items"))
    properties = node.get("properties") or {}
    additional = node.get("additionalProperties")
    embedded = node.get("x-kubernetes-embedded-resource") is True
    for key, item in value.items():
        sub_path = f"{path}.{key}" if path else key
        if (root or embedded) and key == "metadata":
            continue  # ObjectMeta's own checks
        if key in properties:
            _validate(item, properties[key], sub_path, errors)
        elif isinstance(additional, dict):
            _validate(item, additional, sub_path, errors)
    if embedded:
        for field in ("apiVersion", "kind"):
            if not value.get(field):
                errors.append((f"{path}.{field}", "Required value: must not be empty"))


@lru_cache(maxsize=512)
def _pattern(pattern: str) -> Any:
    # RE2, as Kubernetes' Go regexp: the same syntax, and linear time whatever pattern a CRD's author
    # chose — Python's backtracking `re` would let one hostile pattern and value tie up the apiserver.
    return re2.compile(pattern)


def _is_ip(version: int) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        try:
            return ipaddress.ip_address(text).version == version
        except ValueError:
            return False
    return check


def _parses(parse: Callable[[str], Any]) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        try:
            parse(text)
        except ValueError:
            return False
        return True
    return check


def _date_time(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))


_FORMATS: dict[str, Callable[[str], bool]] = {
    "ipv4": _is_ip(4),
    "ipv6": _is_ip(6),
    "cidr": _parses(lambda t: ipaddress.ip_network(t, strict=False)),
    "uuid": _parses(uuid.UUID),
    "date": _parses(_dt.date.fromisoformat),
    "date-time": _parses(_date_time),
    "datetime": _parses(_date_time),
    "byte": lambda t: re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", t) is not None and len(t) % 4 == 0,
    "hostname": lambda t: re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
                                       t) is not None and len(t) <= 253,
}
