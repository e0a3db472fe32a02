"""Names, labels and object metadata: the checks every kind shares.

The string formats of k8s.io/apimachinery/pkg/util/validation (DNS labels and
subdomains, qualified names, label values, port names, env var names, config
keys), label and annotation maps, label selectors, and ObjectMeta on create and
update (apimachinery's ValidateObjectMeta). Each format check returns the list
of what is wrong with a string, in apimachinery's words.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping

from controlplane.apiserver.validation.field import (
    Errors,
    check_format,
    forbidden,
    invalid,
    nonnegative,
    required,
    too_long,
)
from proto import meta_pb2
from proto.kinds import Kind

# ---------------------------------------------------------------- format checks (apimachinery)
#
# Each returns the list of what is wrong with a string, in apimachinery's words;
# callers turn those into `invalid(path, value, msg)` errors.

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = _DNS1123_LABEL + r"(\." + _DNS1123_LABEL + r")*"
_DNS1035_LABEL = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = "(" + _QUALIFIED_NAME + ")?"
_ENV_VAR_NAME = r"[-._a-zA-Z][-._a-zA-Z0-9]*"
_CONFIG_KEY = r"[-._a-zA-Z0-9]+"
PERCENT = r"[0-9]+%"
HTTP_HEADER_NAME = r"[-A-Za-z0-9]+"


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    # apimachinery's RegexError, double space before "or" included, so messages match byte for byte.
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def _max_len(n: int) -> str:
    return f"must be no more than {n} characters"


def _matches(value: str, max_len: int | None, fmt: str, msg: str, *examples: str) -> list[str]:
    """The length and pattern checks every format below is made of."""
    errs = [_max_len(max_len)] if max_len is not None and len(value) > max_len else []
    if not re.fullmatch(fmt, value):
        errs.append(regex_error(msg, fmt, *examples))
    return errs



def _memoized(check: Callable[[str], list[str]]) -> Callable[[str], list[str]]:
    """Cache a string check's verdict: the same label keys, names and images recur on every write.

    The checks are pure; callers get a fresh list, so the cached answer cannot be changed.
    """
    cached = functools.lru_cache(maxsize=8192)(lambda value: tuple(check(value)))

    @functools.wraps(check)
    def verdict(value: str) -> list[str]:
        return list(cached(value))

    return verdict


@_memoized
def is_dns1123_label(value: str) -> list[str]:
    return _matches(value, 63, _DNS1123_LABEL,
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                    "and must start and end with an alphanumeric character", "my-name", "123-abc")


@_memoized
def is_dns1123_subdomain(value: str) -> list[str]:
    return _matches(value, 253, _DNS1123_SUBDOMAIN,
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
                    "or '.', and must start and end with an alphanumeric character", "example.com")


@_memoized
def is_dns1035_label(value: str) -> list[str]:
    return _matches(value, 63, _DNS1035_LABEL,
                    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
                    "an alphabetic character, and end with an alphanumeric character", "my-name", "abc-123")


_QUALIFIED_NAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', "
                       "and must start and end with an alphanumeric character")


@_memoized
def is_qualified_name(value: str) -> list[str]:
    """Label and annotation keys, taint keys, extended resources: `[prefix/]name`."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) > 2:
        return ["a qualified name " + regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME, "MyName", "my.name",
                                                   "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part " + _max_len(63))
    if not re.fullmatch(_QUALIFIED_NAME, name):
        errs.append("name part " + regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME, "MyName", "my.name",
                                                "123-abc"))
    return errs


@_memoized
def is_label_value(value: str) -> list[str]:
    return _matches(value, 63, _LABEL_VALUE,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
                    "or '.', and must start and end with an alphanumeric character",
                    "MyValue", "my_value", "12345")


def is_port_num(port: int) -> list[str]:
    return [] if 1 <= port <= 65535 else ["must be between 1 and 65535, inclusive"]


@_memoized
def is_port_name(name: str) -> list[str]:
    """An IANA_SVC_NAME: what a named containerPort, or a targetPort naming one, must be."""
    errs = [_max_len(15)] if len(name) > 15 else []
    if not re.fullmatch(r"[-a-z0-9]+", name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search(r"[a-z]", name):
        errs.append("must contain at least one letter (a-z)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def _relative_dots(value: str) -> list[str]:
    # Config keys and env names become file names and paths: "." and ".." would escape.
    if value == ".":
        return ["must not be '.'"]
    if value == "..":
        return ["must not be '..'"]
    return ["must not start with '..'"] if value.startswith("..") else []


@_memoized
def is_env_var_name(name: str) -> list[str]:
    return _matches(name, None, _ENV_VAR_NAME,
                    "a valid environment variable name must consist of alphabetic characters, digits, '_', "
                    "'-', or '.', and must not start with a digit",
                    "my.env-name", "MY_ENV.NAME", "MyEnvName1") + _relative_dots(name)


@_memoized
def is_config_key(key: str) -> list[str]:
    return _matches(key, 253, _CONFIG_KEY,
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                    "key.name", "KEY_NAME", "key-name") + _relative_dots(key)


def is_ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def validate_labels(labels: Mapping[str, str], path: str) -> Errors:
    # Kubernetes reports label errors on the map itself, naming the bad key or value.
    errors: Errors = []
    for key, value in sorted(labels.items()):
        errors += check_format(is_qualified_name, key, path)
        errors += check_format(is_label_value, value, path)
    return errors


_ANNOTATIONS_LIMIT = 256 * 1024


def validate_annotations(annotations: Mapping[str, str], path: str) -> Errors:
    errors: Errors = []
    for key in sorted(annotations):
        errors += [invalid(path, key, msg) for msg in is_qualified_name(key.lower())]
    if sum(len(k) + len(v) for k, v in annotations.items()) > _ANNOTATIONS_LIMIT:
        errors.append(too_long(path, _ANNOTATIONS_LIMIT))
    return errors


def validate_label_selector(selector: meta_pb2.LabelSelector, path: str) -> Errors:
    errors = validate_labels(selector.match_labels, f"{path}.matchLabels")
    for i, expr in enumerate(selector.match_expressions):
        p = f"{path}.matchExpressions[{i}]"
        if expr.operator in ("In", "NotIn"):
            if not expr.values:
                errors.append(required(f"{p}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif expr.operator in ("Exists", "DoesNotExist"):
            if expr.values:
                errors.append(forbidden(f"{p}.values",
                                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        else:
            errors.append(invalid(f"{p}.operator", expr.operator, "not a valid selector operator"))
        errors += check_format(is_qualified_name, expr.key, f"{p}.key")
        for j, value in enumerate(expr.values):
            errors += check_format(is_label_value, value, f"{p}.values[{j}]")
    return errors


# ---------------------------------------------------------------- metadata

def is_path_segment_name(value: str) -> list[str]:
    """RBAC names (`system:node`) need only be usable as one segment of a URL path."""
    if value in (".", ".."):
        return [f'may not be "{value}"']
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


NameRule = Callable[[str], list[str]]


def validate_object_meta(kind: Kind, meta: meta_pb2.ObjectMeta, path: str = "metadata", *,
                         name_rule: NameRule = is_dns1123_subdomain) -> Errors:
    """ObjectMeta on create; `name_rule` is the kind's (a DNS-1123 subdomain unless its strategy says else)."""
    errors: Errors = []
    if not meta.name:
        errors.append(required(f"{path}.name", "name or generateName is required"))
    else:
        errors += check_format(name_rule, meta.name, f"{path}.name")
    if kind.namespaced:
        if not meta.namespace:
            errors.append(required(f"{path}.namespace"))
        else:
            errors += check_format(is_dns1123_label, meta.namespace, f"{path}.namespace")
    elif meta.namespace:
        errors.append(forbidden(f"{path}.namespace", "not allowed on this type"))
    errors += nonnegative(meta.generation, f"{path}.generation")
    errors += validate_labels(meta.labels, f"{path}.labels")
    errors += validate_annotations(meta.annotations, f"{path}.annotations")
    errors += _owner_references(meta.owner_references, f"{path}.ownerReferences")
    for i, finalizer in enumerate(meta.finalizers):
        errors += check_format(is_qualified_name, finalizer, f"{path}.finalizers[{i}]")
    return errors


def _owner_references(refs: Iterable[meta_pb2.OwnerReference], path: str) -> Errors:
    errors: Errors = []
    controller = ""
    for i, ref in enumerate(refs):
        p = f"{path}[{i}]"
        if not ref.api_version.rpartition("/")[2]:
            errors.append(invalid(f"{p}.apiVersion", ref.api_version, "version must not be empty"))
        for field, value in (("kind", ref.kind), ("name", ref.name), ("uid", ref.uid)):
            if not value:
                errors.append(invalid(f"{p}.{field}", value, "must not be empty"))
        if ref.controller:
            # Two controllers would fight over the object: the garbage collector and
            # every `controllerRef` lookup assume at most one.
            if controller:
                errors.append(invalid(path, f"{ref.kind}/{ref.name}",
                                      'Only one reference can have Controller set to true. Found "true" in '
                                      f"references for {controller} and {ref.kind}/{ref.name}"))
            else:
                controller = f"{ref.kind}/{ref.name}"
    return errors


def immutable(new: object, old: object, path: str) -> Errors:
    return [] if new == old else [invalid(path, new, "field is immutable")]


def validate_object_meta_update(new: meta_pb2.ObjectMeta, old: meta_pb2.ObjectMeta,
                                path: str = "metadata") -> Errors:
    errors = immutable(new.name, old.name, f"{path}.name")
    errors += immutable(new.namespace, old.namespace, f"{path}.namespace")
    errors += immutable(new.uid, old.uid, f"{path}.uid")
    return errors + immutable(new.creation_timestamp, old.creation_timestamp, f"{path}.creationTimestamp")
