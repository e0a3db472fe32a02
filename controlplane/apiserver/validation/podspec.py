"""The pod spec: containers, volumes, probes, scheduling constraints, resources.

One validator for a PodSpec wherever it appears (a Pod, or the template of a
ReplicaSet or Deployment), with the quantity, resource-list and port checks the
core types share. Kubernetes keeps this in pkg/apis/core/validation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal

from controlplane.apiserver.validation import projected
from controlplane.apiserver.validation.field import (
    Errors,
    at_least_one,
    check_format,
    duplicate,
    forbidden,
    invalid,
    nonnegative,
    not_found,
    one_of,
    required,
    unsupported,
)
from controlplane.apiserver.validation.meta import (
    HTTP_HEADER_NAME,
    is_config_key,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_env_var_name,
    is_label_value,
    is_port_name,
    is_port_num,
    is_qualified_name,
    regex_error,
    validate_label_selector,
    validate_labels,
)
from proto import core_pb2
from proto.quantity import QuantityError, parse_quantity


def port_num_or_name(value: str, path: str) -> Errors:
    """An IntOrString port (targetPort, probe port): a number 1-65535 or an IANA_SVC_NAME."""
    if not value:
        return [required(path)]
    if re.fullmatch(r"-?[0-9]+", value):
        return [invalid(path, int(value), msg) for msg in is_port_num(int(value))]
    return check_format(is_port_name, value, path)


PROTOCOLS = ("SCTP", "TCP", "UDP")  # sorted, as Kubernetes lists them


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


def validate_resource_name(name: str, path: str) -> Errors:
    errors = check_format(is_qualified_name, name, path)
    if errors:
        return errors
    if "/" not in name:
        if name not in _STANDARD_RESOURCES and not name.startswith("hugepages-"):
            errors.append(invalid(path, name, "must be a standard resource for containers"))
    elif not _is_native(name) and is_qualified_name("requests." + name):
        # ResourceQuota names extended resources as requests.<name>; it must stay a qualified name.
        errors.append(invalid(path, name, "doesn't follow extended resource name standard"))
    return errors


def validate_resource_list(resources: Mapping[str, str], path: str) -> tuple[dict[str, Decimal], Errors]:
    """Validate a requests/limits/capacity map; returns the values that parsed."""
    values: dict[str, Decimal] = {}
    errors: Errors = []
    for name, text in sorted(resources.items()):
        p = f"{path}[{name}]"
        errors += validate_resource_name(name, p)
        value, errs = _quantity(text, p)
        errors += errs
        if value is not None:
            values[name] = value
            if not _is_native(name) and value != value.to_integral_value():
                errors.append(invalid(p, text, "must be an integer"))
    return values, errors


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
        errors += one_of(port.protocol, f"{p}.protocol", PROTOCOLS)
    return errors


def _env(env: Iterable[core_pb2.EnvVar], path: str) -> Errors:
    errors: Errors = []
    for i, var in enumerate(env):
        p = f"{path}[{i}]"
        if not var.name:
            errors.append(required(f"{p}.name"))
        else:
            errors += check_format(is_env_var_name, var.name, f"{p}.name")
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
            errors += check_format(is_config_key, ref.key, f"{path}.{json_name}.key")
    return errors


def _resources(res: core_pb2.ResourceRequirements, path: str) -> Errors:
    limits, errors = validate_resource_list(res.limits, f"{path}.limits")
    requests, errs = validate_resource_list(res.requests, f"{path}.requests")
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
        errors += one_of(mount.mount_propagation, f"{p}.mountPropagation",
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
            errors += port_num_or_name(action.port, f"{p}.port")
            errors += one_of(action.scheme, f"{p}.scheme", ("HTTP", "HTTPS"))
            for j, header in enumerate(action.http_headers):
                if not re.fullmatch(HTTP_HEADER_NAME, header.name):
                    errors.append(invalid(f"{p}.httpHeaders[{j}].name", header.name, regex_error(
                        "a valid HTTP header must consist of alphanumeric characters or '-'",
                        HTTP_HEADER_NAME, "X-Header-Name")))
        elif isinstance(action, core_pb2.TCPSocketAction):
            errors += port_num_or_name(action.port, f"{p}.port")
        elif isinstance(action, core_pb2.GRPCAction):
            errors += [invalid(f"{p}.port", action.port, m) for m in is_port_num(action.port)]
    return errors


def _probe(probe: core_pb2.Probe, path: str, *, single_success: bool) -> Errors:
    errors = _handler(probe, path)
    errors += nonnegative(probe.initial_delay_seconds, f"{path}.initialDelaySeconds")
    # Defaulting has replaced zeros, so anything below 1 here was written that way;
    # the kubelet would spin on a period of 0.
    errors += at_least_one(probe.timeout_seconds, f"{path}.timeoutSeconds")
    errors += at_least_one(probe.period_seconds, f"{path}.periodSeconds")
    errors += at_least_one(probe.success_threshold, f"{path}.successThreshold")
    errors += at_least_one(probe.failure_threshold, f"{path}.failureThreshold")
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
        errors += check_format(is_dns1123_label, c.name, f"{path}.name")
    if not c.image:
        errors.append(required(f"{path}.image"))
    elif c.image != c.image.strip():
        errors.append(invalid(f"{path}.image", c.image, "must not have leading or trailing whitespace"))
    errors += one_of(c.image_pull_policy, f"{path}.imagePullPolicy", _PULL_POLICIES)
    errors += one_of(c.termination_message_policy, f"{path}.terminationMessagePolicy",
                      ("File", "FallbackToLogsOnError"))
    errors += _container_ports(c.ports, f"{path}.ports", host_network)
    errors += _env(c.env, f"{path}.env")
    for i, env_from in enumerate(c.env_from):
        if env_from.prefix:
            errors += check_format(is_env_var_name, env_from.prefix, f"{path}.envFrom[{i}].prefix")
    errors += _resources(c.resources, f"{path}.resources")
    errors += _volume_mounts(c.volume_mounts, f"{path}.volumeMounts", volumes)
    sidecar = init and c.restart_policy == "Always"
    if init:
        errors += one_of(c.restart_policy, f"{path}.restartPolicy", ("Always",), optional=True)
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


# The volume types a pod may name (proto field names); a volume has exactly one. The kubelet refuses
# to start a pod whose volume it cannot provide (FailedMount), so naming one here is no promise.
VOLUME_SOURCES = ("empty_dir", "host_path", "config_map", "secret", "persistent_volume_claim", "nfs", "projected")
_HOST_PATH_TYPES = ("", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate",
                    "Socket")  # sorted, as Kubernetes lists them in its NotSupported message


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
        elif ".." in volume.host_path.path.split("/"):
            errors.append(invalid(f"{path}.path", volume.host_path.path, "must not contain '..'"))
        errors += one_of(volume.host_path.type, f"{path}.type", _HOST_PATH_TYPES, optional=True)
    elif source == "empty_dir":
        errors += one_of(volume.empty_dir.medium, f"{path}.medium", ("Memory", "HugePages"), optional=True)
        if volume.empty_dir.size_limit:
            try:
                negative = parse_quantity(volume.empty_dir.size_limit) < 0
            except QuantityError as exc:
                errors.append(invalid(f"{path}.sizeLimit", volume.empty_dir.size_limit, str(exc)))
            else:
                if negative:
                    errors.append(forbidden(f"{path}.sizeLimit", "SizeLimit field must be a valid resource quantity"))
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
    elif source == "nfs":
        if not volume.nfs.server:
            errors.append(required(f"{path}.server"))
        if not volume.nfs.path:
            errors.append(required(f"{path}.path"))
        elif not volume.nfs.path.startswith("/"):
            errors.append(invalid(f"{path}.path", volume.nfs.path, "must be an absolute path"))
    elif source == "projected":
        errors += projected.validate_projected(volume.projected, path, _key_to_paths, _relative_path, _file_mode)
    return errors


def _volumes(volumes: Iterable[core_pb2.Volume], path: str) -> Errors:
    errors: Errors = []
    names: set[str] = set()
    for i, volume in enumerate(volumes):
        p = f"{path}[{i}]"
        if not volume.name:
            errors.append(required(f"{p}.name"))
        else:
            errors += check_format(is_dns1123_label, volume.name, f"{p}.name")
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


TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _tolerations(tolerations: Iterable[core_pb2.Toleration], path: str) -> Errors:
    errors: Errors = []
    for i, tol in enumerate(tolerations):
        p = f"{path}[{i}]"
        if tol.key:
            errors += check_format(is_qualified_name, tol.key, f"{p}.key")
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
        errors += one_of(tol.effect, f"{p}.effect", TAINT_EFFECTS, optional=True)
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
    return errors + check_format(is_qualified_name, req.key, f"{path}.key")


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
    errors = validate_label_selector(term.label_selector, f"{path}.labelSelector")
    errors += validate_label_selector(term.namespace_selector, f"{path}.namespaceSelector")
    for i, ns in enumerate(term.namespaces):
        errors += check_format(is_dns1123_label, ns, f"{path}.namespaces[{i}]")
    if not term.topology_key:
        errors.append(required(f"{path}.topologyKey", "can not be empty"))
    else:
        errors += check_format(is_qualified_name, term.topology_key, f"{path}.topologyKey")
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
            errors += check_format(is_qualified_name, c.topology_key, f"{p}.topologyKey")
        errors += one_of(c.when_unsatisfiable, f"{p}.whenUnsatisfiable", ("DoNotSchedule", "ScheduleAnyway"))
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
        errors += validate_label_selector(c.label_selector, f"{p}.labelSelector")
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
    errors += one_of(spec.restart_policy, f"{path}.restartPolicy", _RESTART_POLICIES)
    errors += one_of(spec.dns_policy, f"{path}.dnsPolicy", _DNS_POLICIES)
    if spec.dns_policy == "None" and not spec.HasField("dns_config"):
        errors.append(required(f"{path}.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is None"))
    if spec.HasField("termination_grace_period_seconds"):
        errors += nonnegative(spec.termination_grace_period_seconds, f"{path}.terminationGracePeriodSeconds")
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
            errors += check_format(check, value, f"{path}.{field}")
    errors += one_of(spec.preemption_policy, f"{path}.preemptionPolicy", ("Never", "PreemptLowerPriority"),
                      optional=True)
    errors += validate_labels(spec.node_selector, f"{path}.nodeSelector")
    errors += _tolerations(spec.tolerations, f"{path}.tolerations")
    errors += _affinity(spec.affinity, f"{path}.affinity")
    errors += _topology_spread(spec.topology_spread_constraints, f"{path}.topologySpreadConstraints")
    return errors
