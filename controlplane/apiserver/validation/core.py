"""Validation: the apiserver's last word on whether an object may be stored.

Every write — create, update, and the status and binding subresources — passes
through `validate` after defaulting (defaults.py) and before anything reaches
etcd. It returns (field path, message) pairs; an empty list means the object is
valid. The apiserver raises `proto.errors.Invalid` with the pairs, which travels
to clients as INVALID_ARGUMENT and prints as kubectl prints it:

    Pod "web" is invalid: spec.containers[0].ports[0].containerPort: Invalid value: 70000:
    must be between 1 and 65535, inclusive

Paths use Kubernetes' JSON names and indexes, and messages follow
k8s.io/apimachinery's field.Error bodies ("Required value", "Invalid value: x: ...",
'Unsupported value: "Foo": supported values: ...'), so what a user reads here is what
they would search for. The layout follows kube-apiserver's `validation.go`:
format checks (names, labels, ports), shared field validators, then one function
per kind, found through the `_VALIDATORS` table. On update, `old` is the stored
object and the per-kind function also enforces what may not change.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from cryptography import x509
from google.protobuf import json_format
from google.protobuf.message import Message

from client import bootstrap
from proto import apps_pb2, autoscaling_pb2, certificates_pb2, coordination_pb2, core_pb2, meta_pb2, rbac_pb2
from proto.errors import BadRequest
from proto.kinds import Kind
from proto.quantity import QuantityError, parse_quantity
from proto.selectors import LabelSelector, from_message

FieldError = tuple[str, str]
Errors = list[FieldError]

# ---------------------------------------------------------------- error bodies (field.Error)


def _show(value: object) -> str:
    """A value as field.Error prints it: strings quoted, numbers bare, objects as JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, Message):
        value = json_format.MessageToDict(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def required(path: str, detail: str = "") -> FieldError:
    return path, f"Required value: {detail}" if detail else "Required value"


def invalid(path: str, value: object, detail: str) -> FieldError:
    return path, f"Invalid value: {_show(value)}: {detail}"


def unsupported(path: str, value: str, supported: Sequence[str]) -> FieldError:
    return path, f"Unsupported value: {_show(value)}: supported values: " + ", ".join(
        _show(s) for s in supported)


def forbidden(path: str, detail: str) -> FieldError:
    return path, f"Forbidden: {detail}"


def duplicate(path: str, value: object, detail: str = "") -> FieldError:
    return path, f"Duplicate value: {_show(value)}" + (f": {detail}" if detail else "")


def not_found(path: str, value: object) -> FieldError:
    return path, f"Not found: {_show(value)}"


def too_long(path: str, limit: int) -> FieldError:
    return path, f"Too long: may not be more than {limit} bytes"


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
_PERCENT = r"[0-9]+%"
_HTTP_HEADER_NAME = r"[-A-Za-z0-9]+"


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
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
        errs.append(_regex_error(msg, fmt, *examples))
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
        return ["a qualified name " + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME, "MyName", "my.name",
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
        errs.append("name part " + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME, "MyName", "my.name",
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


def _is_ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- shared field validators


def _check(check: Callable[[str], list[str]], value: str, path: str) -> Errors:
    return [invalid(path, value, msg) for msg in check(value)]


def _one_of(value: str, path: str, supported: Sequence[str], *, optional: bool = False) -> Errors:
    """An enum field: Required when empty (unless optional), Unsupported when unknown."""
    if not value:
        return [] if optional else [required(path)]
    return [] if value in supported else [unsupported(path, value, supported)]


def _nonnegative(value: int, path: str) -> Errors:
    return [invalid(path, value, "must be greater than or equal to 0")] if value < 0 else []


def _at_least_one(value: int, path: str) -> Errors:
    return [invalid(path, value, "must be greater than or equal to 1")] if value < 1 else []


def _labels(labels: Mapping[str, str], path: str) -> Errors:
    # Kubernetes reports label errors on the map itself, naming the bad key or value.
    errors: Errors = []
    for key, value in sorted(labels.items()):
        errors += _check(is_qualified_name, key, path)
        errors += _check(is_label_value, value, path)
    return errors


_ANNOTATIONS_LIMIT = 256 * 1024


def _annotations(annotations: Mapping[str, str], path: str) -> Errors:
    errors: Errors = []
    for key in sorted(annotations):
        errors += [invalid(path, key, msg) for msg in is_qualified_name(key.lower())]
    if sum(len(k) + len(v) for k, v in annotations.items()) > _ANNOTATIONS_LIMIT:
        errors.append(too_long(path, _ANNOTATIONS_LIMIT))
    return errors


def _label_selector(selector: meta_pb2.LabelSelector, path: str) -> Errors:
    errors = _labels(selector.match_labels, f"{path}.matchLabels")
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
        errors += _check(is_qualified_name, expr.key, f"{p}.key")
        for j, value in enumerate(expr.values):
            errors += _check(is_label_value, value, f"{p}.values[{j}]")
    return errors


def _port_num_or_name(value: str, path: str) -> Errors:
    """An IntOrString port (targetPort, probe port): a number 1-65535 or an IANA_SVC_NAME."""
    if not value:
        return [required(path)]
    if re.fullmatch(r"-?[0-9]+", value):
        return [invalid(path, int(value), msg) for msg in is_port_num(int(value))]
    return _check(is_port_name, value, path)


_PROTOCOLS = ("SCTP", "TCP", "UDP")  # sorted, as Kubernetes lists them


def _quantity(text: str, path: str) -> tuple[Decimal | None, Errors]:
    """The parsed value of a non-negative quantity, or the reason it is not one."""
    try:
        value = parse_quantity(text)
    except QuantityError as exc:
        return None, [invalid(path, text, str(exc))]
    if value < 0:
        return None, [invalid(path, text, "must be greater than or equal to 0")]
    return value, []


_STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage", "pods")


def _is_native(name: str) -> bool:
    return "/" not in name or "kubernetes.io/" in name


def _resource_name(name: str, path: str) -> Errors:
    errors = _check(is_qualified_name, name, path)
    if errors:
        return errors
    if "/" not in name:
        if name not in _STANDARD_RESOURCES and not name.startswith("hugepages-"):
            errors.append(invalid(path, name, "must be a standard resource for containers"))
    elif not _is_native(name) and is_qualified_name("requests." + name):
        # ResourceQuota names extended resources as requests.<name>; it must stay a qualified name.
        errors.append(invalid(path, name, "doesn't follow extended resource name standard"))
    return errors


def _resource_list(resources: Mapping[str, str], path: str) -> tuple[dict[str, Decimal], Errors]:
    """Validate a requests/limits/capacity map; returns the values that parsed."""
    values: dict[str, Decimal] = {}
    errors: Errors = []
    for name, text in sorted(resources.items()):
        p = f"{path}[{name}]"
        errors += _resource_name(name, p)
        value, errs = _quantity(text, p)
        errors += errs
        if value is not None:
            values[name] = value
            if not _is_native(name) and value != value.to_integral_value():
                errors.append(invalid(p, text, "must be an integer"))
    return values, errors


# ---------------------------------------------------------------- metadata

# The name rule per kind; everything else is a DNS-1123 subdomain.
def is_path_segment_name(value: str) -> list[str]:
    """RBAC names (`system:node`) need only be usable as one segment of a URL path."""
    if value in (".", ".."):
        return [f'may not be "{value}"']
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


_NAME_RULES: dict[str, Callable[[str], list[str]]] = {
    "Namespace": is_dns1123_label,
    "Service": is_dns1035_label,  # the name becomes a DNS label under the cluster domain
    "Role": is_path_segment_name,
    "ClusterRole": is_path_segment_name,
    "RoleBinding": is_path_segment_name,
    "ClusterRoleBinding": is_path_segment_name,
}


def validate_object_meta(kind: Kind, meta: meta_pb2.ObjectMeta, path: str = "metadata") -> Errors:
    errors: Errors = []
    if not meta.name:
        errors.append(required(f"{path}.name", "name or generateName is required"))
    else:
        errors += _check(_NAME_RULES.get(kind.kind, is_dns1123_subdomain), meta.name, f"{path}.name")
    if kind.namespaced:
        if not meta.namespace:
            errors.append(required(f"{path}.namespace"))
        else:
            errors += _check(is_dns1123_label, meta.namespace, f"{path}.namespace")
    elif meta.namespace:
        errors.append(forbidden(f"{path}.namespace", "not allowed on this type"))
    errors += _nonnegative(meta.generation, f"{path}.generation")
    errors += _labels(meta.labels, f"{path}.labels")
    errors += _annotations(meta.annotations, f"{path}.annotations")
    errors += _owner_references(meta.owner_references, f"{path}.ownerReferences")
    for i, finalizer in enumerate(meta.finalizers):
        errors += _check(is_qualified_name, finalizer, f"{path}.finalizers[{i}]")
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


def _immutable(new: object, old: object, path: str) -> Errors:
    return [] if new == old else [invalid(path, new, "field is immutable")]


def validate_object_meta_update(new: meta_pb2.ObjectMeta, old: meta_pb2.ObjectMeta,
                                path: str = "metadata") -> Errors:
    errors = _immutable(new.name, old.name, f"{path}.name")
    errors += _immutable(new.namespace, old.namespace, f"{path}.namespace")
    errors += _immutable(new.uid, old.uid, f"{path}.uid")
    return errors + _immutable(new.creation_timestamp, old.creation_timestamp, f"{path}.creationTimestamp")


# ---------------------------------------------------------------- Pod spec


def _container_ports(ports: Iterable[core_pb2.ContainerPort], path: str, host_network: bool) -> Errors:
    errors: Errors = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        p = f"{path}[{i}]"
        if port.name:
            msgs = is_port_name(port.name)
            errors += [invalid(f"{p}.name", port.name, m) for m in msgs]
            if not msgs and port.name in names:
                errors.append(duplicate(f"{p}.name", port.name))
            names.add(port.name)
        if port.container_port == 0:
            errors.append(required(f"{p}.containerPort"))
        else:
            errors += [invalid(f"{p}.containerPort", port.container_port, m)
                       for m in is_port_num(port.container_port)]
        if port.host_port != 0:
            errors += [invalid(f"{p}.hostPort", port.host_port, m) for m in is_port_num(port.host_port)]
        if host_network and port.host_port != port.container_port:
            # With the host's network namespace there is no NAT: the two ports are one socket.
            errors.append(invalid(f"{p}.hostPort", port.host_port,
                                  "must match `containerPort` when `hostNetwork` is true"))
        errors += _one_of(port.protocol, f"{p}.protocol", _PROTOCOLS)
    return errors


def _env(env: Iterable[core_pb2.EnvVar], path: str) -> Errors:
    errors: Errors = []
    for i, var in enumerate(env):
        p = f"{path}[{i}]"
        if not var.name:
            errors.append(required(f"{p}.name"))
        else:
            errors += _check(is_env_var_name, var.name, f"{p}.name")
        if var.HasField("value_from"):
            errors += _env_var_source(var.value_from, f"{p}.valueFrom", has_value=bool(var.value))
    return errors


def _env_var_source(source: core_pb2.EnvVarSource, path: str, *, has_value: bool) -> Errors:
    errors: Errors = []
    if has_value:
        errors.append(invalid(path, "", "may not be specified when `value` is not empty"))
    kinds = [n for n in ("field_ref", "resource_field_ref", "config_map_key_ref", "secret_key_ref")
             if source.HasField(n)]
    if not kinds:
        errors.append(invalid(path, "", "must specify one of: `fieldRef`, `resourceFieldRef`, "
                                        "`configMapKeyRef` or `secretKeyRef`"))
    elif len(kinds) > 1:
        errors.append(invalid(path, "", "may not have more than one field specified at a time"))
    if source.HasField("field_ref") and not source.field_ref.field_path:
        errors.append(required(f"{path}.fieldRef.fieldPath"))
    if source.HasField("resource_field_ref") and not source.resource_field_ref.resource:
        errors.append(required(f"{path}.resourceFieldRef.resource"))
    for field, json_name in (("config_map_key_ref", "configMapKeyRef"), ("secret_key_ref", "secretKeyRef")):
        if not source.HasField(field):  # type: ignore[arg-type]
            continue
        ref: core_pb2.KeySelector = getattr(source, field)
        if not ref.name:
            errors.append(required(f"{path}.{json_name}.name"))
        if not ref.key:
            errors.append(required(f"{path}.{json_name}.key"))
        else:
            errors += _check(is_config_key, ref.key, f"{path}.{json_name}.key")
    return errors


def _resources(res: core_pb2.ResourceRequirements, path: str) -> Errors:
    limits, errors = _resource_list(res.limits, f"{path}.limits")
    requests, errs = _resource_list(res.requests, f"{path}.requests")
    errors += errs
    for name, request in requests.items():
        text = res.requests[name]
        limit = limits.get(name)
        overcommit = _is_native(name) and not name.startswith("hugepages-")
        if limit is None:
            if not overcommit:
                errors.append(required(f"{path}.limits",
                                       "Limit must be set for non overcommitable resources"))
        elif not overcommit and request != limit:
            # Devices and hugepages cannot be shared, so asking for less than the limit means nothing.
            errors.append(invalid(f"{path}.requests", text,
                                  f"must be equal to {name} limit of {res.limits[name]}"))
        elif request > limit:
            errors.append(invalid(f"{path}.requests", text,
                                  f"must be less than or equal to {name} limit of {res.limits[name]}"))
    return errors


def _relative_path(value: str, path: str) -> Errors:
    errors: Errors = []
    if value.startswith("/"):
        errors.append(invalid(path, value, "must be a relative path"))
    if ".." in value.split("/"):
        errors.append(invalid(path, value, "must not contain '..'"))
    return errors


def _volume_mounts(mounts: Iterable[core_pb2.VolumeMount], path: str, volumes: set[str]) -> Errors:
    errors: Errors = []
    mount_paths: set[str] = set()
    for i, mount in enumerate(mounts):
        p = f"{path}[{i}]"
        if not mount.name:
            errors.append(required(f"{p}.name"))
        elif mount.name not in volumes:
            errors.append(not_found(f"{p}.name", mount.name))
        if not mount.mount_path:
            errors.append(required(f"{p}.mountPath"))
        elif not mount.mount_path.startswith("/"):
            errors.append(invalid(f"{p}.mountPath", mount.mount_path, "must be an absolute path"))
        elif mount.mount_path in mount_paths:
            errors.append(invalid(f"{p}.mountPath", mount.mount_path, "must be unique"))
        mount_paths.add(mount.mount_path)
        if mount.sub_path:
            errors += _relative_path(mount.sub_path, f"{p}.subPath")
        errors += _one_of(mount.mount_propagation, f"{p}.mountPropagation",
                          ("None", "HostToContainer", "Bidirectional"), optional=True)
    return errors


_HANDLERS = ("exec", "http_get", "tcp_socket", "grpc")


def _handler(handler: core_pb2.Probe | core_pb2.LifecycleHandler, path: str) -> Errors:
    """A probe or lifecycle hook: exactly one of exec, httpGet, tcpSocket (or grpc for probes)."""
    fields = handler.DESCRIPTOR.fields_by_name
    present = [n for n in _HANDLERS if n in fields and handler.HasField(n)]  # type: ignore[arg-type]
    if not present:
        return [required(path, "must specify a handler type")]
    errors = [forbidden(f"{path}.{fields[n].json_name}", "may not specify more than 1 handler type")
              for n in present[1:]]
    for name in present:
        action = getattr(handler, name)
        p = f"{path}.{fields[name].json_name}"
        if isinstance(action, core_pb2.ExecAction) and not action.command:
            errors.append(required(f"{p}.command"))
        elif isinstance(action, core_pb2.HTTPGetAction):
            if not action.path:
                errors.append(required(f"{p}.path"))
            errors += _port_num_or_name(action.port, f"{p}.port")
            errors += _one_of(action.scheme, f"{p}.scheme", ("HTTP", "HTTPS"))
            for j, header in enumerate(action.http_headers):
                if not re.fullmatch(_HTTP_HEADER_NAME, header.name):
                    errors.append(invalid(f"{p}.httpHeaders[{j}].name", header.name, _regex_error(
                        "a valid HTTP header must consist of alphanumeric characters or '-'",
                        _HTTP_HEADER_NAME, "X-Header-Name")))
        elif isinstance(action, core_pb2.TCPSocketAction):
            errors += _port_num_or_name(action.port, f"{p}.port")
        elif isinstance(action, core_pb2.GRPCAction):
            errors += [invalid(f"{p}.port", action.port, m) for m in is_port_num(action.port)]
    return errors


def _probe(probe: core_pb2.Probe, path: str, *, single_success: bool) -> Errors:
    errors = _handler(probe, path)
    errors += _nonnegative(probe.initial_delay_seconds, f"{path}.initialDelaySeconds")
    # Defaulting has replaced zeros, so anything below 1 here was written that way;
    # the kubelet would spin on a period of 0.
    errors += _at_least_one(probe.timeout_seconds, f"{path}.timeoutSeconds")
    errors += _at_least_one(probe.period_seconds, f"{path}.periodSeconds")
    errors += _at_least_one(probe.success_threshold, f"{path}.successThreshold")
    errors += _at_least_one(probe.failure_threshold, f"{path}.failureThreshold")
    if single_success and probe.success_threshold != 1:
        # A liveness or startup probe that needs two successes would restart a healthy container.
        errors.append(invalid(f"{path}.successThreshold", probe.success_threshold, "must be 1"))
    if probe.HasField("termination_grace_period_seconds") and probe.termination_grace_period_seconds <= 0:
        errors.append(invalid(f"{path}.terminationGracePeriodSeconds", probe.termination_grace_period_seconds,
                              "must be greater than 0"))
    return errors


_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def _container(c: core_pb2.Container, path: str, volumes: set[str], *,
               init: bool, host_network: bool) -> Errors:
    errors: Errors = []
    if not c.name:
        errors.append(required(f"{path}.name"))
    else:
        errors += _check(is_dns1123_label, c.name, f"{path}.name")
    if not c.image:
        errors.append(required(f"{path}.image"))
    elif c.image != c.image.strip():
        errors.append(invalid(f"{path}.image", c.image, "must not have leading or trailing whitespace"))
    errors += _one_of(c.image_pull_policy, f"{path}.imagePullPolicy", _PULL_POLICIES)
    errors += _one_of(c.termination_message_policy, f"{path}.terminationMessagePolicy",
                      ("File", "FallbackToLogsOnError"))
    errors += _container_ports(c.ports, f"{path}.ports", host_network)
    errors += _env(c.env, f"{path}.env")
    for i, env_from in enumerate(c.env_from):
        if env_from.prefix:
            errors += _check(is_env_var_name, env_from.prefix, f"{path}.envFrom[{i}].prefix")
    errors += _resources(c.resources, f"{path}.resources")
    errors += _volume_mounts(c.volume_mounts, f"{path}.volumeMounts", volumes)
    sidecar = init and c.restart_policy == "Always"
    if init:
        errors += _one_of(c.restart_policy, f"{path}.restartPolicy", ("Always",), optional=True)
    elif c.restart_policy:
        errors.append(forbidden(f"{path}.restartPolicy", "may not be set for non-init containers"))
    for field, json_name in (("liveness_probe", "livenessProbe"), ("readiness_probe", "readinessProbe"),
                             ("startup_probe", "startupProbe")):
        if not c.HasField(field):  # type: ignore[arg-type]
            continue
        if init and not sidecar:
            # A plain init container runs to completion once; there is nothing to probe.
            errors.append(forbidden(f"{path}.{json_name}", "may not be set for init containers without "
                                                           "restartPolicy=Always"))
            continue
        errors += _probe(getattr(c, field), f"{path}.{json_name}", single_success=field != "readiness_probe")
    for field, json_name in (("post_start", "postStart"), ("pre_stop", "preStop")):
        if c.lifecycle.HasField(field):  # type: ignore[arg-type]
            errors += _handler(getattr(c.lifecycle, field), f"{path}.lifecycle.{json_name}")
    return errors


# The volume types a Flotilla kubelet can mount (proto field names); a volume has exactly one.
VOLUME_SOURCES = ("empty_dir", "host_path", "config_map", "secret", "persistent_volume_claim")
_HOST_PATH_TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice",
                    "BlockDevice")


def _key_to_paths(items: Iterable[core_pb2.KeyToPath], path: str) -> Errors:
    errors: Errors = []
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        if not item.key:
            errors.append(required(f"{p}.key"))
        if not item.path:
            errors.append(required(f"{p}.path"))
        else:
            errors += _relative_path(item.path, f"{p}.path")
        if item.HasField("mode"):
            errors += _file_mode(item.mode, f"{p}.mode")
    return errors


def _file_mode(mode: int, path: str) -> Errors:
    if 0 <= mode <= 0o777:
        return []
    return [invalid(path, mode, "must be a number between 0 and 0777 (octal), both inclusive")]


def _volume_source(volume: core_pb2.Volume, source: str, path: str) -> Errors:
    errors: Errors = []
    if source == "host_path":
        if not volume.host_path.path:
            errors.append(required(f"{path}.path"))
        elif not volume.host_path.path.startswith("/"):
            errors.append(invalid(f"{path}.path", volume.host_path.path, "must be an absolute path"))
        errors += _one_of(volume.host_path.type, f"{path}.type", _HOST_PATH_TYPES, optional=True)
    elif source == "empty_dir":
        errors += _one_of(volume.empty_dir.medium, f"{path}.medium", ("Memory", "HugePages"), optional=True)
        if volume.empty_dir.size_limit:
            errors += _quantity(volume.empty_dir.size_limit, f"{path}.sizeLimit")[1]
    elif source == "config_map":
        if not volume.config_map.name:
            errors.append(required(f"{path}.name"))
        errors += _key_to_paths(volume.config_map.items, f"{path}.items")
        if volume.config_map.HasField("default_mode"):
            errors += _file_mode(volume.config_map.default_mode, f"{path}.defaultMode")
    elif source == "secret":
        if not volume.secret.secret_name:
            errors.append(required(f"{path}.secretName"))
        errors += _key_to_paths(volume.secret.items, f"{path}.items")
        if volume.secret.HasField("default_mode"):
            errors += _file_mode(volume.secret.default_mode, f"{path}.defaultMode")
    elif source == "persistent_volume_claim" and not volume.persistent_volume_claim.claim_name:
        errors.append(required(f"{path}.claimName"))
    return errors


def _volumes(volumes: Iterable[core_pb2.Volume], path: str) -> Errors:
    errors: Errors = []
    names: set[str] = set()
    for i, volume in enumerate(volumes):
        p = f"{path}[{i}]"
        if not volume.name:
            errors.append(required(f"{p}.name"))
        else:
            errors += _check(is_dns1123_label, volume.name, f"{p}.name")
            if volume.name in names:
                errors.append(duplicate(f"{p}.name", volume.name))
            names.add(volume.name)
        fields = volume.DESCRIPTOR.fields_by_name
        sources = [s for s in VOLUME_SOURCES if volume.HasField(s)]  # type: ignore[arg-type]
        if not sources:
            errors.append(required(p, "must specify a volume type"))
        errors += [forbidden(f"{p}.{fields[s].json_name}", "may not specify more than 1 volume type")
                   for s in sources[1:]]
        for source in sources:
            errors += _volume_source(volume, source, f"{p}.{fields[source].json_name}")
    return errors


_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _tolerations(tolerations: Iterable[core_pb2.Toleration], path: str) -> Errors:
    errors: Errors = []
    for i, tol in enumerate(tolerations):
        p = f"{path}[{i}]"
        if tol.key:
            errors += _check(is_qualified_name, tol.key, f"{p}.key")
        elif tol.operator != "Exists":
            # An empty key with Exists is the wildcard "tolerate everything"; with Equal it is meaningless.
            errors.append(invalid(f"{p}.operator", tol.operator, "operator must be Exists when `key` is "
                                  'empty, which means "match all values and all keys"'))
        if tol.HasField("toleration_seconds") and tol.effect != "NoExecute":
            # tolerationSeconds bounds how long a pod stays once a NoExecute taint evicts it;
            # no other effect evicts, so the bound would mean nothing.
            errors.append(invalid(f"{p}.effect", tol.effect,
                                  "effect must be 'NoExecute' when `tolerationSeconds` is set"))
        if tol.operator in ("Equal", ""):
            msgs = is_label_value(tol.value)
            if msgs:
                errors.append(invalid(f"{p}.operator", tol.value, ";".join(msgs)))
        elif tol.operator == "Exists":
            if tol.value:
                errors.append(invalid(f"{p}.operator", tol,
                                      "value must be empty when `operator` is 'Exists'"))
        else:
            errors.append(unsupported(f"{p}.operator", tol.operator, ("Equal", "Exists")))
        errors += _one_of(tol.effect, f"{p}.effect", _TAINT_EFFECTS, optional=True)
    return errors


def _node_selector_requirement(req: core_pb2.NodeSelectorRequirement, path: str) -> Errors:
    errors: Errors = []
    if req.operator in ("In", "NotIn"):
        if not req.values:
            errors.append(required(f"{path}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
    elif req.operator in ("Exists", "DoesNotExist"):
        if req.values:
            errors.append(forbidden(f"{path}.values",
                                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
    elif req.operator in ("Gt", "Lt"):
        if len(req.values) != 1:
            errors.append(required(f"{path}.values",
                                   "must be specified single value when `operator` is 'Lt' or 'Gt'"))
        elif not re.fullmatch(r"-?[0-9]+", req.values[0]):
            errors.append(invalid(f"{path}.values[0]", req.values[0], "must be an integer"))
    else:
        errors.append(invalid(f"{path}.operator", req.operator, "not a valid selector operator"))
    return errors + _check(is_qualified_name, req.key, f"{path}.key")


def _node_selector_term(term: core_pb2.NodeSelectorTerm, path: str) -> Errors:
    errors: Errors = []
    for i, req in enumerate(term.match_expressions):
        errors += _node_selector_requirement(req, f"{path}.matchExpressions[{i}]")
    for i, req in enumerate(term.match_fields):
        p = f"{path}.matchFields[{i}]"
        # Nodes have one selectable field, their name, so only In/NotIn with one name make sense.
        if req.operator not in ("In", "NotIn"):
            errors.append(unsupported(f"{p}.operator", req.operator, ("In", "NotIn")))
        elif len(req.values) != 1:
            errors.append(required(f"{p}.values", "must be only one value when `operator` is 'In' or "
                                                  "'NotIn' for node field selector"))
        if req.key != "metadata.name":
            errors.append(invalid(f"{p}.key", req.key, "not a valid field selector key"))
    return errors


def _weight(weight: int, path: str) -> Errors:
    return [] if 1 <= weight <= 100 else [invalid(path, weight, "must be in the range 1-100")]


def _pod_affinity_term(term: core_pb2.PodAffinityTerm, path: str) -> Errors:
    errors = _label_selector(term.label_selector, f"{path}.labelSelector")
    errors += _label_selector(term.namespace_selector, f"{path}.namespaceSelector")
    for i, ns in enumerate(term.namespaces):
        errors += _check(is_dns1123_label, ns, f"{path}.namespaces[{i}]")
    if not term.topology_key:
        errors.append(required(f"{path}.topologyKey", "can not be empty"))
    else:
        errors += _check(is_qualified_name, term.topology_key, f"{path}.topologyKey")
    return errors


_REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
_PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"


def _affinity(affinity: core_pb2.Affinity, path: str) -> Errors:
    errors: Errors = []
    if affinity.HasField("node_affinity"):
        node = affinity.node_affinity
        p = f"{path}.nodeAffinity"
        if node.HasField("required_during_scheduling_ignored_during_execution"):
            terms = node.required_during_scheduling_ignored_during_execution.node_selector_terms
            if not terms:
                errors.append(required(f"{p}.{_REQUIRED}.nodeSelectorTerms",
                                       "must have at least one node selector term"))
            for i, term in enumerate(terms):
                errors += _node_selector_term(term, f"{p}.{_REQUIRED}.nodeSelectorTerms[{i}]")
        for i, pref in enumerate(node.preferred_during_scheduling_ignored_during_execution):
            errors += _weight(pref.weight, f"{p}.{_PREFERRED}[{i}].weight")
            errors += _node_selector_term(pref.preference, f"{p}.{_PREFERRED}[{i}].preference")
    for field, json_name in (("pod_affinity", "podAffinity"), ("pod_anti_affinity", "podAntiAffinity")):
        if not affinity.HasField(field):  # type: ignore[arg-type]
            continue
        pod: core_pb2.PodAffinity = getattr(affinity, field)
        p = f"{path}.{json_name}"
        for i, pod_term in enumerate(pod.required_during_scheduling_ignored_during_execution):
            errors += _pod_affinity_term(pod_term, f"{p}.{_REQUIRED}[{i}]")
        for i, weighted in enumerate(pod.preferred_during_scheduling_ignored_during_execution):
            errors += _weight(weighted.weight, f"{p}.{_PREFERRED}[{i}].weight")
            errors += _pod_affinity_term(weighted.pod_affinity_term, f"{p}.{_PREFERRED}[{i}].podAffinityTerm")
    return errors


def _topology_spread(constraints: Iterable[core_pb2.TopologySpreadConstraint], path: str) -> Errors:
    errors: Errors = []
    seen: set[tuple[str, str]] = set()
    for i, c in enumerate(constraints):
        p = f"{path}[{i}]"
        if c.max_skew <= 0:
            errors.append(invalid(f"{p}.maxSkew", c.max_skew, "must be greater than zero"))
        if not c.topology_key:
            errors.append(required(f"{p}.topologyKey", "can not be empty"))
        else:
            errors += _check(is_qualified_name, c.topology_key, f"{p}.topologyKey")
        errors += _one_of(c.when_unsatisfiable, f"{p}.whenUnsatisfiable", ("DoNotSchedule", "ScheduleAnyway"))
        if c.HasField("min_domains"):
            if c.min_domains <= 0:
                errors.append(invalid(f"{p}.minDomains", c.min_domains, "must be greater than 0"))
            elif c.when_unsatisfiable != "DoNotSchedule":
                errors.append(invalid(f"{p}.minDomains", c.min_domains,
                                      "can only use minDomains if whenUnsatisfiable=DoNotSchedule, "
                                      f"not {c.when_unsatisfiable}"))
        # Two constraints on the same domain and action would be one constraint with two skews.
        key = (c.topology_key, c.when_unsatisfiable)
        if key in seen:
            errors.append(duplicate(f"{p}.{{topologyKey, whenUnsatisfiable}}", f"{{{key[0]}, {key[1]}}}"))
        seen.add(key)
        errors += _label_selector(c.label_selector, f"{p}.labelSelector")
    return errors


_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
_INT32_MAX = 2**31 - 1


def validate_pod_spec(spec: core_pb2.PodSpec, path: str) -> Errors:
    """A PodSpec, in a Pod (`spec`) or a template (`spec.template.spec`)."""
    errors = _volumes(spec.volumes, f"{path}.volumes")
    volumes = {v.name for v in spec.volumes if v.name}
    if not spec.containers:
        errors.append(required(f"{path}.containers"))
    names: set[str] = set()
    host_ports: set[str] = set()
    for field, containers, init in (("containers", spec.containers, False),
                                    ("initContainers", spec.init_containers, True)):
        for i, c in enumerate(containers):
            p = f"{path}.{field}[{i}]"
            errors += _container(c, p, volumes, init=init, host_network=spec.host_network)
            # Names key container statuses, logs and exec: one name, one container.
            if c.name and c.name in names:
                errors.append(duplicate(f"{p}.name", c.name))
            names.add(c.name)
            for j, port in enumerate(c.ports):
                if port.host_port:
                    key = f"{port.host_port}/{port.protocol}"
                    if key in host_ports:
                        errors.append(duplicate(f"{p}.ports[{j}].hostPort", key))
                    host_ports.add(key)
    errors += _one_of(spec.restart_policy, f"{path}.restartPolicy", _RESTART_POLICIES)
    errors += _one_of(spec.dns_policy, f"{path}.dnsPolicy", _DNS_POLICIES)
    if spec.dns_policy == "None" and not spec.HasField("dns_config"):
        errors.append(required(f"{path}.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is None"))
    if spec.HasField("termination_grace_period_seconds"):
        errors += _nonnegative(spec.termination_grace_period_seconds, f"{path}.terminationGracePeriodSeconds")
    if spec.HasField("active_deadline_seconds") and not 1 <= spec.active_deadline_seconds <= _INT32_MAX:
        errors.append(invalid(f"{path}.activeDeadlineSeconds", spec.active_deadline_seconds,
                              f"must be between 1 and {_INT32_MAX}, inclusive"))
    for field, value, check in (("nodeName", spec.node_name, is_dns1123_subdomain),
                                ("serviceAccountName", spec.service_account_name, is_dns1123_subdomain),
                                ("schedulerName", spec.scheduler_name, is_dns1123_subdomain),
                                ("priorityClassName", spec.priority_class_name, is_dns1123_subdomain),
                                ("hostname", spec.hostname, is_dns1123_label),
                                ("subdomain", spec.subdomain, is_dns1123_label)):
        if value:
            errors += _check(check, value, f"{path}.{field}")
    errors += _one_of(spec.preemption_policy, f"{path}.preemptionPolicy", ("Never", "PreemptLowerPriority"),
                      optional=True)
    errors += _labels(spec.node_selector, f"{path}.nodeSelector")
    errors += _tolerations(spec.tolerations, f"{path}.tolerations")
    errors += _affinity(spec.affinity, f"{path}.affinity")
    errors += _topology_spread(spec.topology_spread_constraints, f"{path}.topologySpreadConstraints")
    return errors


# ---------------------------------------------------------------- Pod

_POD_UPDATE_MESSAGE = (
    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds`")


def _pod(pod: core_pb2.Pod, old: core_pb2.Pod | None) -> Errors:
    errors = validate_pod_spec(pod.spec, "spec")
    if old is not None:
        errors += _pod_update(pod.spec, old.spec)
    return errors


def _without_seconds(toleration: core_pb2.Toleration) -> core_pb2.Toleration:
    bare = core_pb2.Toleration()
    bare.CopyFrom(toleration)
    bare.ClearField("toleration_seconds")
    return bare


def _pod_update(new: core_pb2.PodSpec, old: core_pb2.PodSpec) -> Errors:
    """A running pod's spec is what the kubelet acted on; only a few fields can be changed live."""
    errors: Errors = []
    if old.node_name and new.node_name != old.node_name:
        # A pod is bound once (through pods/binding, from ""); moving it would orphan its containers.
        errors.append(invalid("spec.nodeName", new.node_name, "field is immutable"))
    old_tolerations = [_without_seconds(t) for t in old.tolerations]
    new_tolerations = [_without_seconds(t) for t in new.tolerations]
    if any(t not in new_tolerations for t in old_tolerations):
        errors.append(forbidden("spec.tolerations", "existing toleration can not be modified except its "
                                                    "tolerationSeconds"))
    # The deadline may be set or shortened, never extended: it is a promise to whoever set it.
    if new.HasField("active_deadline_seconds"):
        if (old.HasField("active_deadline_seconds")
                and new.active_deadline_seconds > old.active_deadline_seconds):
            errors.append(invalid("spec.activeDeadlineSeconds", new.active_deadline_seconds,
                                  "must be less than or equal to previous value"))
    elif old.HasField("active_deadline_seconds"):
        errors.append(invalid("spec.activeDeadlineSeconds", None,
                              "must not update from a positive integer to nil value"))

    # Copy the mutable fields from old into a copy of new: whatever still differs was not allowed.
    munged = core_pb2.PodSpec()
    munged.CopyFrom(new)
    for new_list, old_list in ((munged.containers, old.containers),
                               (munged.init_containers, old.init_containers)):
        if len(new_list) == len(old_list):
            for container, before in zip(new_list, old_list, strict=True):
                container.image = before.image
    for field in ("active_deadline_seconds", "termination_grace_period_seconds"):
        munged.ClearField(field)
        if old.HasField(field):
            setattr(munged, field, getattr(old, field))
    del munged.tolerations[:]
    munged.tolerations.extend(old.tolerations)
    if old.node_name:
        munged.node_name = old.node_name  # reported above; "" -> node is pods/binding's job, not an update's
    if munged != old:
        errors.append(forbidden("spec", _POD_UPDATE_MESSAGE))
    return errors


# ---------------------------------------------------------------- Node


def _node(node: core_pb2.Node, old: core_pb2.Node | None) -> Errors:
    errors: Errors = []
    cidrs = [("spec.podCIDR", node.spec.pod_cidr)] if node.spec.pod_cidr else []
    cidrs += [(f"spec.podCIDRs[{i}]", c) for i, c in enumerate(node.spec.pod_cidrs)]
    for path, cidr in cidrs:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            errors.append(invalid(path, cidr,
                                  "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"))
    if node.spec.pod_cidr and node.spec.pod_cidrs and node.spec.pod_cidrs[0] != node.spec.pod_cidr:
        errors.append(invalid("spec.podCIDRs[0]", node.spec.pod_cidrs[0], "must match `spec.podCIDR`"))
    errors += _taints(node.spec.taints, "spec.taints")
    errors += _resource_list(node.status.capacity, "status.capacity")[1]
    errors += _resource_list(node.status.allocatable, "status.allocatable")[1]
    if old is not None and old.spec.pod_cidr and node.spec.pod_cidr != old.spec.pod_cidr:
        # Pods already hold addresses from the old range; routes and the CNI config point at it.
        errors.append(forbidden("spec.podCIDR",
                                'node updates may not change podCIDR except from "" to valid'))
    return errors


def _taints(taints: Iterable[core_pb2.Taint], path: str) -> Errors:
    errors: Errors = []
    seen: set[tuple[str, str]] = set()
    for i, taint in enumerate(taints):
        p = f"{path}[{i}]"
        errors += _check(is_qualified_name, taint.key, f"{p}.key")
        msgs = is_label_value(taint.value)
        if msgs:
            errors.append(invalid(f"{p}.value", taint.value, ";".join(msgs)))
        errors += _one_of(taint.effect, f"{p}.effect", _TAINT_EFFECTS)
        if (taint.key, taint.effect) in seen:
            errors.append(duplicate(p, f"{taint.key}={taint.value}:{taint.effect}",
                                    "taints must be unique by key and effect pair"))
        seen.add((taint.key, taint.effect))
    return errors


# ---------------------------------------------------------------- Service, Endpoints

_SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")  # sorted, as Kubernetes lists them
_NODE_PORT_RANGE = (30000, 32767)
_MAX_AFFINITY_SECONDS = 86400


def _service(svc: core_pb2.Service, old: core_pb2.Service | None) -> Errors:
    spec = svc.spec
    errors = _one_of(spec.type, "spec.type", _SERVICE_TYPES)
    headless = spec.cluster_ip == "None"
    if spec.type == "ExternalName":
        if spec.cluster_ip:
            errors.append(forbidden("spec.clusterIP", "may not be set for ExternalName services"))
        if not spec.external_name:
            errors.append(required("spec.externalName"))
        else:
            errors += _check(is_dns1123_subdomain, spec.external_name.removesuffix("."), "spec.externalName")
    elif not spec.ports and not headless:
        errors.append(required("spec.ports"))
    if spec.cluster_ip and not headless and not _is_ipv4(spec.cluster_ip):
        errors.append(invalid("spec.clusterIP", spec.cluster_ip, "must be a valid IPv4 address"))
    if headless and spec.type in ("NodePort", "LoadBalancer"):
        errors.append(invalid("spec.clusterIP", spec.cluster_ip,
                              f"may not be set to 'None' for {spec.type} services"))
    if spec.cluster_ips and spec.cluster_ips[0] != spec.cluster_ip:
        errors.append(invalid("spec.clusterIPs[0]", spec.cluster_ips[0],
                              "first value must match `clusterIP`"))
    errors += _service_ports(spec)
    errors += _labels(spec.selector, "spec.selector")
    errors += _one_of(spec.session_affinity, "spec.sessionAffinity", ("ClientIP", "None"))
    if spec.session_affinity == "ClientIP":
        client_ip = spec.session_affinity_config.client_ip
        if (client_ip.HasField("timeout_seconds")
                and not 0 < client_ip.timeout_seconds <= _MAX_AFFINITY_SECONDS):
            errors.append(invalid("spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                                  client_ip.timeout_seconds,
                                  f"must be greater than 0 and less than {_MAX_AFFINITY_SECONDS}"))
    elif spec.HasField("session_affinity_config"):
        errors.append(forbidden("spec.sessionAffinityConfig",
                                f"must not be set when session affinity is {spec.session_affinity}"))
    for i, ip in enumerate(spec.external_ips):
        if not _is_ipv4(ip):
            errors.append(invalid(f"spec.externalIPs[{i}]", ip, "must be a valid IPv4 address"))
    errors += _traffic_policies(spec)
    if old is not None and old.spec.cluster_ip and spec.type != "ExternalName":
        # kube-proxy rules and every client's cached DNS answer point at the allocated IP.
        errors += _immutable(spec.cluster_ip, old.spec.cluster_ip, "spec.clusterIP")
    return errors


def _named_port(port: core_pb2.ServicePort | core_pb2.EndpointPort, path: str, names: set[str], *,
                several: bool) -> Errors:
    """A Service or Endpoints port: name, number and protocol; `names` collects the names seen so far."""
    errors: Errors = []
    # With several ports, Endpoints and SRV records can tell them apart only by name.
    if several and not port.name:
        errors.append(required(f"{path}.name"))
    elif port.name:
        errors += _check(is_dns1123_label, port.name, f"{path}.name")
        if port.name in names:
            errors.append(duplicate(f"{path}.name", port.name))
        names.add(port.name)
    errors += [invalid(f"{path}.port", port.port, m) for m in is_port_num(port.port)]
    return errors + _one_of(port.protocol, f"{path}.protocol", _PROTOCOLS)


def _service_ports(spec: core_pb2.ServiceSpec) -> Errors:
    errors: Errors = []
    names: set[str] = set()
    node_ports: set[tuple[int, str]] = set()
    ports: set[tuple[int, str]] = set()
    for i, port in enumerate(spec.ports):
        p = f"spec.ports[{i}]"
        errors += _named_port(port, p, names, several=len(spec.ports) > 1)
        if (port.port, port.protocol) in ports:
            errors.append(duplicate(p, f"{port.port}/{port.protocol}"))
        ports.add((port.port, port.protocol))
        errors += _port_num_or_name(port.target_port, f"{p}.targetPort")
        if port.node_port:
            if spec.type == "ClusterIP":
                errors.append(forbidden(f"{p}.nodePort", "may not be used when `type` is 'ClusterIP'"))
            elif not _NODE_PORT_RANGE[0] <= port.node_port <= _NODE_PORT_RANGE[1]:
                errors.append(invalid(f"{p}.nodePort", port.node_port,
                                      "provided port is not in the valid range. The range of valid ports is "
                                      f"{_NODE_PORT_RANGE[0]}-{_NODE_PORT_RANGE[1]}"))
            elif (port.node_port, port.protocol) in node_ports:
                errors.append(duplicate(f"{p}.nodePort", port.node_port))
            node_ports.add((port.node_port, port.protocol))
    return errors


def _traffic_policies(spec: core_pb2.ServiceSpec) -> Errors:
    errors: Errors = []
    if spec.type in ("NodePort", "LoadBalancer"):
        errors += _one_of(spec.external_traffic_policy, "spec.externalTrafficPolicy", ("Cluster", "Local"))
    elif spec.external_traffic_policy:
        # The policy decides how traffic arriving at a node port is routed; without one it means nothing.
        errors.append(invalid("spec.externalTrafficPolicy", spec.external_traffic_policy,
                              "may only be set for externally-accessible services"))
    if spec.type != "ExternalName":
        errors += _one_of(spec.internal_traffic_policy, "spec.internalTrafficPolicy", ("Cluster", "Local"))
    return errors


def _endpoints(ep: core_pb2.Endpoints, old: core_pb2.Endpoints | None) -> Errors:
    errors: Errors = []
    for i, subset in enumerate(ep.subsets):
        p = f"subsets[{i}]"
        if not subset.addresses and not subset.not_ready_addresses:
            errors.append(required(p, "must specify `addresses` or `notReadyAddresses`"))
        for field, addresses in (("addresses", subset.addresses),
                                 ("notReadyAddresses", subset.not_ready_addresses)):
            for j, address in enumerate(addresses):
                ap = f"{p}.{field}[{j}]"
                if not address.ip:
                    errors.append(required(f"{ap}.ip"))
                elif not _is_ipv4(address.ip):
                    errors.append(invalid(f"{ap}.ip", address.ip, "must be a valid IPv4 address"))
                if address.hostname:
                    errors += _check(is_dns1123_label, address.hostname, f"{ap}.hostname")
                if address.node_name:
                    errors += _check(is_dns1123_subdomain, address.node_name, f"{ap}.nodeName")
        names: set[str] = set()
        for j, port in enumerate(subset.ports):
            errors += _named_port(port, f"{p}.ports[{j}]", names, several=len(subset.ports) > 1)
    return errors


# ---------------------------------------------------------------- ReplicaSet, Deployment


def _pod_template(template: core_pb2.PodTemplateSpec, path: str, selector: LabelSelector | None) -> Errors:
    labels_path = f"{path}.metadata.labels"
    errors = _labels(template.metadata.labels, labels_path)
    errors += _annotations(template.metadata.annotations, f"{path}.metadata.annotations")
    if selector is not None and not selector.empty() and not selector.matches(template.metadata.labels):
        # The controller would create pods it does not count as its own, forever.
        errors.append(invalid(labels_path, dict(template.metadata.labels),
                              "`selector` does not match template `labels`"))
    errors += validate_pod_spec(template.spec, f"{path}.spec")
    spec = template.spec
    if spec.restart_policy and spec.restart_policy != "Always":
        # A controller keeps its pods running; a pod that is allowed to finish would just be replaced.
        errors.append(unsupported(f"{path}.spec.restartPolicy", spec.restart_policy, ("Always",)))
    if spec.HasField("active_deadline_seconds"):
        errors.append(invalid(f"{path}.spec.activeDeadlineSeconds", spec.active_deadline_seconds,
                              "activeDeadlineSeconds in ReplicaSet is not Supported"))
    return errors


def _replicated_spec(spec: apps_pb2.ReplicaSetSpec | apps_pb2.DeploymentSpec) -> Errors:
    """What ReplicaSet and Deployment share: replicas, selector, and a template it selects."""
    errors: Errors = []
    if spec.HasField("replicas"):
        errors += _nonnegative(spec.replicas, "spec.replicas")
    errors += _nonnegative(spec.min_ready_seconds, "spec.minReadySeconds")
    selector: LabelSelector | None = None
    if not spec.HasField("selector"):
        errors.append(required("spec.selector"))
    else:
        selector_errors = _label_selector(spec.selector, "spec.selector")
        errors += selector_errors
        if not spec.selector.match_labels and not spec.selector.match_expressions:
            # Kubernetes says "deployment" for ReplicaSets too; kept so the message is searchable.
            errors.append(invalid("spec.selector", spec.selector, "empty selector is invalid for deployment"))
        elif not selector_errors:
            try:
                selector = from_message(spec.selector)
            except BadRequest:
                errors.append(invalid("spec.selector", spec.selector, "invalid label selector"))
    return errors + _pod_template(spec.template, "spec.template", selector)


def _selector_update(new: meta_pb2.LabelSelector, old: meta_pb2.LabelSelector) -> Errors:
    # apps/v1 made selectors immutable: a changed selector would orphan the old pods.
    return [] if new == old else [invalid("spec.selector", new, "field is immutable")]


def _replica_set(rs: apps_pb2.ReplicaSet, old: apps_pb2.ReplicaSet | None) -> Errors:
    errors = _replicated_spec(rs.spec)
    if old is not None:
        errors += _selector_update(rs.spec.selector, old.spec.selector)
    return errors


def _int_or_percent(value: str, path: str, *, at_most_100: bool) -> tuple[int, Errors]:
    """maxSurge / maxUnavailable: a non-negative int or "N%"; returns the number for the both-zero check."""
    if not value:
        return 0, []
    if re.fullmatch(r"-?[0-9]+", value):
        return int(value), _nonnegative(int(value), path)
    if not re.fullmatch(_PERCENT, value):
        return 0, [invalid(path, value, _regex_error(
            "a valid percent string must be a numeric string followed by an ending '%'",
            _PERCENT, "1%", "93%"))]
    percent = int(value[:-1])
    if at_most_100 and percent > 100:
        return percent, [invalid(path, value, "must not be greater than 100%")]
    return percent, []


def _strategy(strategy: apps_pb2.DeploymentStrategy, path: str) -> Errors:
    if strategy.type == "Recreate":
        if strategy.HasField("rolling_update"):
            return [forbidden(f"{path}.rollingUpdate",
                              "may not be specified when strategy `type` is 'Recreate'")]
        return []
    if strategy.type != "RollingUpdate":
        return _one_of(strategy.type, f"{path}.type", ("Recreate", "RollingUpdate"))
    if not strategy.HasField("rolling_update"):
        return [required(f"{path}.rollingUpdate", "this should be defaulted and never be nil")]
    p = f"{path}.rollingUpdate"
    unavailable, errors = _int_or_percent(strategy.rolling_update.max_unavailable, f"{p}.maxUnavailable",
                                          at_most_100=True)
    surge, errs = _int_or_percent(strategy.rolling_update.max_surge, f"{p}.maxSurge", at_most_100=False)
    errors += errs
    if unavailable == 0 and surge == 0:
        # Neither a new pod above the count nor an old pod below it: the rollout could never start.
        errors.append(invalid(f"{p}.maxUnavailable", strategy.rolling_update.max_unavailable,
                              "may not be 0 when `maxSurge` is 0"))
    return errors


def _deployment(d: apps_pb2.Deployment, old: apps_pb2.Deployment | None) -> Errors:
    spec = d.spec
    errors = _replicated_spec(spec)
    errors += _strategy(spec.strategy, "spec.strategy")
    if spec.HasField("revision_history_limit"):
        errors += _nonnegative(spec.revision_history_limit, "spec.revisionHistoryLimit")
    if spec.HasField("progress_deadline_seconds"):
        errors += _nonnegative(spec.progress_deadline_seconds, "spec.progressDeadlineSeconds")
        if spec.progress_deadline_seconds <= spec.min_ready_seconds:
            # Pods must get the chance to become available before the rollout is declared stuck.
            errors.append(invalid("spec.progressDeadlineSeconds", spec.progress_deadline_seconds,
                                  "must be greater than minReadySeconds"))
    if old is not None:
        errors += _selector_update(spec.selector, old.spec.selector)
    return errors


# ---------------------------------------------------------------- the small kinds


def _namespace(ns: core_pb2.Namespace, old: core_pb2.Namespace | None) -> Errors:
    errors: Errors = []
    for i, finalizer in enumerate(ns.spec.finalizers):
        errors += _check(is_qualified_name, finalizer, f"spec.finalizers[{i}]")
    return errors


def _lease(lease: coordination_pb2.Lease, old: coordination_pb2.Lease | None) -> Errors:
    errors: Errors = []
    if lease.spec.HasField("lease_duration_seconds") and lease.spec.lease_duration_seconds <= 0:
        errors.append(invalid("spec.leaseDurationSeconds", lease.spec.lease_duration_seconds,
                              "must be greater than 0"))
    if lease.spec.HasField("lease_transitions"):
        errors += _nonnegative(lease.spec.lease_transitions, "spec.leaseTransitions")
    return errors


def _event(event: core_pb2.Event, old: core_pb2.Event | None) -> Errors:
    if not event.HasField("involved_object"):
        return [required("involvedObject")]
    errors: Errors = []
    involved = event.involved_object
    for field, value in (("kind", involved.kind), ("name", involved.name)):
        if not value:
            errors.append(required(f"involvedObject.{field}"))
    # An event lives beside what it is about; events about cluster-scoped objects
    # (Nodes) go to "default", as old clients always did.
    namespace = event.metadata.namespace
    if involved.namespace != namespace and (involved.namespace or namespace not in ("", "default")):
        errors.append(invalid("involvedObject.namespace", involved.namespace,
                              "does not match event.namespace"))
    return errors


_MAX_DATA_SIZE = 1024 * 1024  # etcd's request limit leaves room for about this much per object


def _data_keys(keys: Iterable[str], path: str) -> Errors:
    errors: Errors = []
    for key in sorted(keys):
        errors += _check(is_config_key, key, f"{path}[{key}]")
    return errors


def _immutable_data(new: core_pb2.ConfigMap | core_pb2.Secret, old: core_pb2.ConfigMap | core_pb2.Secret,
                    data_changed: bool) -> Errors:
    if not (old.HasField("immutable") and old.immutable):
        return []
    errors: Errors = []
    if not (new.HasField("immutable") and new.immutable):
        errors.append(forbidden("immutable", "field is immutable when `immutable` is set"))
    if data_changed:
        errors.append(forbidden("data", "field is immutable when `immutable` is set"))
    return errors


def _config_map(cm: core_pb2.ConfigMap, old: core_pb2.ConfigMap | None) -> Errors:
    errors = _data_keys(cm.data, "data") + _data_keys(cm.binary_data, "binaryData")
    for key in sorted(set(cm.data) & set(cm.binary_data)):
        errors.append(invalid(f"data[{key}]", key, "duplicate of key present in binaryData"))
    size = sum(len(v) for v in cm.data.values()) + sum(len(v) for v in cm.binary_data.values())
    if size > _MAX_DATA_SIZE:
        errors.append(too_long("", _MAX_DATA_SIZE))
    if old is not None:
        changed = dict(cm.data) != dict(old.data) or dict(cm.binary_data) != dict(old.binary_data)
        errors += _immutable_data(cm, old, changed)
    return errors


# Well-known secret types and the keys their consumers read.
_SECRET_KEYS = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}


def _secret(secret: core_pb2.Secret, old: core_pb2.Secret | None) -> Errors:
    errors = _data_keys(secret.data, "data") + _data_keys(secret.string_data, "stringData")
    if sum(len(v) for v in secret.data.values()) > _MAX_DATA_SIZE:
        errors.append(too_long("data", _MAX_DATA_SIZE))
    for key in _SECRET_KEYS.get(secret.type, ()):
        if key not in secret.data and key not in secret.string_data:
            errors.append(required(f"data[{key}]"))
    if old is not None:
        errors += _immutable(secret.type, old.type, "type")
        errors += _immutable_data(secret, old, dict(secret.data) != dict(old.data))
    return errors


# ---------------------------------------------------------------- HorizontalPodAutoscaler

_METRIC_SOURCES = {"ContainerResource": "container_resource", "External": "external", "Object": "object",
                   "Pods": "pods", "Resource": "resource"}


def _metric_target(target: autoscaling_pb2.MetricTarget, path: str) -> Errors:
    errors: Errors = []
    if not target.type:
        errors.append(required(f"{path}.type", "must specify a metric target type"))
    elif target.type not in ("Utilization", "Value", "AverageValue"):
        errors.append(invalid(f"{path}.type", target.type,
                              "must be either Utilization, Value, or AverageValue"))
    for field, text in (("value", target.value), ("averageValue", target.average_value)):
        if text:
            try:
                positive = parse_quantity(text) > 0
            except QuantityError as exc:
                errors.append(invalid(f"{path}.{field}", text, str(exc)))
                continue
            if not positive:
                errors.append(invalid(f"{path}.{field}", text, "must be positive"))
    if target.HasField("average_utilization") and target.average_utilization < 1:
        errors.append(invalid(f"{path}.averageUtilization", target.average_utilization,
                              "must be greater than 0"))
    # The target type says which number the controller compares against; it must be there.
    needed = {"Utilization": ("averageUtilization", target.HasField("average_utilization")),
              "Value": ("value", bool(target.value)),
              "AverageValue": ("averageValue", bool(target.average_value))}.get(target.type)
    if needed and not needed[1]:
        errors.append(required(f"{path}.{needed[0]}", f"must be set when `type` is '{target.type}'"))
    return errors


def _metric(metric: autoscaling_pb2.MetricSpec, path: str) -> Errors:
    if not metric.type:
        return [required(f"{path}.type", "must specify a metric source type")]
    field = _METRIC_SOURCES.get(metric.type)
    if field is None:
        return [unsupported(f"{path}.type", metric.type, sorted(_METRIC_SOURCES))]
    json_name = metric.DESCRIPTOR.fields_by_name[field].json_name
    errors = [forbidden(f"{path}.{metric.DESCRIPTOR.fields_by_name[other].json_name}",
                        "must populate the given metric source only")
              for other in _METRIC_SOURCES.values()
              if other != field and metric.HasField(other)]  # type: ignore[arg-type]
    if not metric.HasField(field):  # type: ignore[arg-type]
        return [*errors, required(f"{path}.{json_name}",
                                  "must populate information for the given metric source")]
    p = f"{path}.{json_name}"
    source = getattr(metric, field)
    if isinstance(source, (autoscaling_pb2.ResourceMetricSource,
                           autoscaling_pb2.ContainerResourceMetricSource)):
        if not source.name:
            errors.append(required(f"{p}.name", "must specify a resource name"))
        else:
            errors += _resource_name(source.name, f"{p}.name")
        if isinstance(source, autoscaling_pb2.ContainerResourceMetricSource) and not source.container:
            errors.append(required(f"{p}.container", "must specify a container"))
        if source.target.type == "Value":
            # Resource metrics are per pod; a total across pods has no meaning for CPU or memory.
            errors.append(unsupported(f"{p}.target.type", "Value", ("AverageValue", "Utilization")))
    else:
        if not source.metric.name:
            errors.append(required(f"{p}.metric.name", "must specify a metric name"))
        if isinstance(source, autoscaling_pb2.ObjectMetricSource):
            for ref_field in ("kind", "name"):
                if not getattr(source.described_object, ref_field):
                    errors.append(required(f"{p}.describedObject.{ref_field}"))
    return errors + _metric_target(source.target, f"{p}.target")


def _scaling_rules(rules: autoscaling_pb2.HPAScalingRules, path: str) -> Errors:
    errors: Errors = []
    if rules.HasField("stabilization_window_seconds") and not 0 <= rules.stabilization_window_seconds <= 3600:
        errors.append(invalid(f"{path}.stabilizationWindowSeconds", rules.stabilization_window_seconds,
                              "must be less than or equal to 3600"))
    errors += _one_of(rules.select_policy, f"{path}.selectPolicy", ("Disabled", "Max", "Min"), optional=True)
    for i, policy in enumerate(rules.policies):
        p = f"{path}.policies[{i}]"
        errors += _one_of(policy.type, f"{p}.type", ("Percent", "Pods"))
        if policy.value <= 0:
            errors.append(invalid(f"{p}.value", policy.value, "must be greater than zero"))
        if not 0 < policy.period_seconds <= 1800:
            errors.append(invalid(f"{p}.periodSeconds", policy.period_seconds,
                                  "must be greater than zero and less than or equal to 1800"))
    return errors


def _path_segment(value: str, path: str) -> Errors:
    # kind and name end up in a URL path (/apis/apps/v1/.../deployments/<name>/scale).
    if value in (".", ".."):
        return [invalid(path, value, f"may not be '{value}'")]
    return [invalid(path, value, f"may not contain '{c}'") for c in ("/", "%") if c in value]


def _hpa(hpa: autoscaling_pb2.HorizontalPodAutoscaler,
         old: autoscaling_pb2.HorizontalPodAutoscaler | None) -> Errors:
    spec = hpa.spec
    errors: Errors = []
    for field, value in (("kind", spec.scale_target_ref.kind), ("name", spec.scale_target_ref.name)):
        if not value:
            errors.append(required(f"spec.scaleTargetRef.{field}"))
        else:
            errors += _path_segment(value, f"spec.scaleTargetRef.{field}")
    if spec.HasField("min_replicas") and spec.min_replicas < 1:
        errors.append(invalid("spec.minReplicas", spec.min_replicas, "must be greater than or equal to 1"))
    if spec.max_replicas < 1:
        errors.append(invalid("spec.maxReplicas", spec.max_replicas, "must be greater than 0"))
    elif spec.HasField("min_replicas") and spec.max_replicas < spec.min_replicas:
        errors.append(invalid("spec.maxReplicas", spec.max_replicas,
                              "must be greater than or equal to `minReplicas`"))
    for i, metric in enumerate(spec.metrics):
        errors += _metric(metric, f"spec.metrics[{i}]")
    for field, json_name in (("scale_up", "scaleUp"), ("scale_down", "scaleDown")):
        if spec.behavior.HasField(field):  # type: ignore[arg-type]
            errors += _scaling_rules(getattr(spec.behavior, field), f"spec.behavior.{json_name}")
    return errors


# ---------------------------------------------------------------- entry point

# Each takes the new object and the stored one (None on create); metadata is checked in `validate`.
# The resource verbs, plus the special ones Kubernetes checks on their own (approve/sign on signers, ...).
_RBAC_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "approve", "sign",
               "attest", "bind", "escalate", "impersonate", "use", "*")


def _policy_rules(rules: Iterable[rbac_pb2.PolicyRule], path: str) -> Errors:
    errors: Errors = []
    for i, rule in enumerate(rules):
        p = f"{path}[{i}]"
        if not rule.verbs:
            errors.append(required(f"{p}.verbs", "verbs must contain at least one value"))
        errors += [unsupported(f"{p}.verbs[{j}]", v, _RBAC_VERBS) for j, v in enumerate(rule.verbs)
                   if v not in _RBAC_VERBS]
        if not rule.resources and not rule.non_resource_urls:
            errors.append(required(f"{p}.resources", "resource rules must supply at least one resource"))
    return errors


def _role(role: Any, old: Any) -> Errors:
    return _policy_rules(role.rules, "rules")


def _binding(binding: Any, old: Any) -> Errors:
    errors: Errors = []
    ref = binding.role_ref
    allowed = ("ClusterRole",) if isinstance(binding, rbac_pb2.ClusterRoleBinding) else ("Role", "ClusterRole")
    if ref.kind not in allowed:
        errors.append(unsupported("roleRef.kind", ref.kind, allowed))
    if not ref.name:
        errors.append(required("roleRef.name"))
    if old is not None and (old.role_ref.kind, old.role_ref.name) != (ref.kind, ref.name):
        errors.append(invalid("roleRef", f"{ref.kind}/{ref.name}", "cannot change roleRef"))
    for i, subject in enumerate(binding.subjects):
        p = f"subjects[{i}]"
        if subject.kind not in ("User", "Group", "ServiceAccount"):
            errors.append(unsupported(f"{p}.kind", subject.kind, ("User", "Group", "ServiceAccount")))
        if not subject.name:
            errors.append(required(f"{p}.name"))
        if subject.kind == "ServiceAccount" and not subject.namespace:
            errors.append(required(f"{p}.namespace"))
    return errors


# ---------------------------------------------------------------- CertificateSigningRequest

_CSR_CONDITIONS = ("Approved", "Denied", "Failed")


def _signer_name(name: str, path: str) -> Errors:
    if not name:
        return [required(path)]
    domain, _, rest = name.partition("/")
    if not rest or is_dns1123_subdomain(domain):
        return [invalid(path, name, "must be a fully qualified domain and path of the form 'example.com/signer-name'")]
    if domain == "kubernetes.io" and name not in bootstrap.KUBERNETES_SIGNERS:
        return [unsupported(path, name, bootstrap.KUBERNETES_SIGNERS)]
    return []


def _csr(csr: certificates_pb2.CertificateSigningRequest,
         old: certificates_pb2.CertificateSigningRequest | None) -> Errors:
    spec, status = csr.spec, csr.status
    errors: Errors = []
    if not spec.request:
        errors.append(required("spec.request"))
    else:
        try:
            x509.load_pem_x509_csr(spec.request)
        except ValueError:
            errors.append(invalid("spec.request", "<bytes>", "must be a PEM block of type CERTIFICATE REQUEST"))
    errors += _signer_name(spec.signer_name, "spec.signerName")
    if not spec.usages:
        errors.append(required("spec.usages"))
    known = (*bootstrap.KEY_USAGES, *bootstrap.EXTENDED_KEY_USAGES)
    for i, usage in enumerate(spec.usages):
        if usage not in known:
            errors.append(unsupported(f"spec.usages[{i}]", usage, known))
        elif usage in spec.usages[:i]:
            errors.append(duplicate(f"spec.usages[{i}]", usage))
    if spec.HasField("expiration_seconds") and spec.expiration_seconds < 600:
        errors.append(invalid("spec.expirationSeconds", spec.expiration_seconds, "may not specify a duration "
                              "less than 600 seconds (10 minutes)"))
    types = [c.type for c in status.conditions]
    for i, cond in enumerate(status.conditions):
        path = f"status.conditions[{i}]"
        errors += _one_of(cond.type, f"{path}.type", _CSR_CONDITIONS)
        if cond.type in ("Approved", "Denied") and cond.status != "True":
            errors.append(unsupported(f"{path}.status", cond.status, ["True"]))
        elif cond.status not in ("True", "False", "Unknown"):
            errors.append(unsupported(f"{path}.status", cond.status, ["True", "False", "Unknown"]))
        if cond.type in types[:i]:
            errors.append(duplicate(f"{path}.type", cond.type))
    if "Approved" in types and "Denied" in types:
        errors.append(invalid("status.conditions", "Approved, Denied", "Approved and Denied conditions are "
                              "mutually exclusive"))
    if status.certificate:
        if "Approved" not in types:
            errors.append(invalid("status.certificate", "<certificate data>", "may not be set unless the "
                                  "request is Approved"))
        try:
            x509.load_pem_x509_certificates(status.certificate)
        except ValueError:
            errors.append(invalid("status.certificate", "<certificate data>", "must contain PEM CERTIFICATE "
                                  "blocks"))
    if old is not None:
        if csr.spec.SerializeToString(deterministic=True) != old.spec.SerializeToString(deterministic=True):
            errors.append(forbidden("spec", "field is immutable"))
        for cond in old.status.conditions:
            if cond.type in ("Approved", "Denied") and cond.type not in types:
                errors.append(forbidden("status.conditions", f"updates may not remove the {cond.type} "
                                        "condition"))
        if old.status.certificate and status.certificate != old.status.certificate:
            errors.append(forbidden("status.certificate", "updates may not modify existing certificate content"))
    return errors


_VALIDATORS: dict[str, Callable[[Any, Any], Errors]] = {
    "CertificateSigningRequest": _csr,
    "Role": _role,
    "ClusterRole": _role,
    "RoleBinding": _binding,
    "ClusterRoleBinding": _binding,
    "Namespace": _namespace,
    "Node": _node,
    "Pod": _pod,
    "Service": _service,
    "Endpoints": _endpoints,
    "Event": _event,
    "ConfigMap": _config_map,
    "Secret": _secret,
    "ReplicaSet": _replica_set,
    "Deployment": _deployment,
    "Lease": _lease,
    "HorizontalPodAutoscaler": _hpa,
}


def _metadata(obj: Message) -> meta_pb2.ObjectMeta:
    meta = getattr(obj, "metadata", None)
    if not isinstance(meta, meta_pb2.ObjectMeta):
        raise TypeError(f"{type(obj).__name__} has no ObjectMeta")
    return meta


def validate(kind: Kind, obj: Message, old: Message | None) -> list[tuple[str, str]]:
    """What is wrong with `obj` as a `kind`, as (field path, message) pairs; [] when valid.

    `old` is the stored object on update, None on create. Defaults must already be
    applied (they are part of what is validated), and the server must have filled
    the name from generateName.
    """
    errors = validate_object_meta(kind, _metadata(obj))
    if old is not None:
        errors += validate_object_meta_update(_metadata(obj), _metadata(old))
    validator = _VALIDATORS.get(kind.kind)
    if validator is not None:
        errors += validator(obj, old)
    return errors
