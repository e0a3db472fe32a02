"""Validation of the core ("" group, v1) kinds: Pod, Node, Service, Endpoints, Namespace,
Event, ConfigMap and Secret.

Each function takes the new object and the stored one (None on create) and
returns field errors; on update it also enforces what may not change. Metadata
is checked by the kind's strategy (meta.py), and the pod spec in podspec.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from controlplane.apiserver.validation.field import (
    Errors,
    check_format,
    duplicate,
    forbidden,
    invalid,
    one_of,
    required,
    too_long,
)
from controlplane.apiserver.validation.meta import (
    immutable,
    is_config_key,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_ipv4,
    is_label_value,
    is_port_num,
    is_qualified_name,
    validate_labels,
)
from controlplane.apiserver.validation.podspec import (
    PROTOCOLS,
    TAINT_EFFECTS,
    port_num_or_name,
    validate_pod_spec,
    validate_resource_list,
)
from proto import core_pb2

# ---------------------------------------------------------------- Pod

_POD_UPDATE_MESSAGE = (
    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds`")


def validate_pod(pod: core_pb2.Pod, old: core_pb2.Pod | None) -> Errors:
    if old is not None and pod.spec == old.spec:
        # Status writes and metadata-only updates (the kubelet's, a finalizer's removal) keep the stored
        # spec, valid when it was stored: checking it again on every write only costs (ValidatePodStatusUpdate
        # does not look at the spec either).
        return []
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


def validate_node(node: core_pb2.Node, old: core_pb2.Node | None) -> Errors:
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
    errors += validate_resource_list(node.status.capacity, "status.capacity")[1]
    errors += validate_resource_list(node.status.allocatable, "status.allocatable")[1]
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
        errors += check_format(is_qualified_name, taint.key, f"{p}.key")
        msgs = is_label_value(taint.value)
        if msgs:
            errors.append(invalid(f"{p}.value", taint.value, ";".join(msgs)))
        errors += one_of(taint.effect, f"{p}.effect", TAINT_EFFECTS)
        if (taint.key, taint.effect) in seen:
            errors.append(duplicate(p, f"{taint.key}={taint.value}:{taint.effect}",
                                    "taints must be unique by key and effect pair"))
        seen.add((taint.key, taint.effect))
    return errors


# ---------------------------------------------------------------- Service, Endpoints

_SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")  # sorted, as Kubernetes lists them
_NODE_PORT_RANGE = (30000, 32767)
_MAX_AFFINITY_SECONDS = 86400


def validate_service(svc: core_pb2.Service, old: core_pb2.Service | None) -> Errors:
    spec = svc.spec
    errors = one_of(spec.type, "spec.type", _SERVICE_TYPES)
    headless = spec.cluster_ip == "None"
    if spec.type == "ExternalName":
        if spec.cluster_ip:
            errors.append(forbidden("spec.clusterIP", "may not be set for ExternalName services"))
        if not spec.external_name:
            errors.append(required("spec.externalName"))
        else:
            errors += check_format(is_dns1123_subdomain, spec.external_name.removesuffix("."), "spec.externalName")
    elif not spec.ports and not headless:
        errors.append(required("spec.ports"))
    if spec.cluster_ip and not headless and not is_ipv4(spec.cluster_ip):
        errors.append(invalid("spec.clusterIP", spec.cluster_ip, "must be a valid IPv4 address"))
    if headless and spec.type in ("NodePort", "LoadBalancer"):
        errors.append(invalid("spec.clusterIP", spec.cluster_ip,
                              f"may not be set to 'None' for {spec.type} services"))
    if spec.cluster_ips and spec.cluster_ips[0] != spec.cluster_ip:
        errors.append(invalid("spec.clusterIPs[0]", spec.cluster_ips[0],
                              "first value must match `clusterIP`"))
    errors += _service_ports(spec)
    errors += validate_labels(spec.selector, "spec.selector")
    errors += one_of(spec.session_affinity, "spec.sessionAffinity", ("ClientIP", "None"))
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
        if not is_ipv4(ip):
            errors.append(invalid(f"spec.externalIPs[{i}]", ip, "must be a valid IPv4 address"))
    errors += _traffic_policies(spec)
    if old is not None and old.spec.cluster_ip and spec.type != "ExternalName":
        # kube-proxy rules and every client's cached DNS answer point at the allocated IP.
        errors += immutable(spec.cluster_ip, old.spec.cluster_ip, "spec.clusterIP")
    return errors


def _named_port(port: core_pb2.ServicePort | core_pb2.EndpointPort, path: str, names: set[str], *,
                several: bool) -> Errors:
    """A Service or Endpoints port: name, number and protocol; `names` collects the names seen so far."""
    errors: Errors = []
    # With several ports, Endpoints and SRV records can tell them apart only by name.
    if several and not port.name:
        errors.append(required(f"{path}.name"))
    elif port.name:
        errors += check_format(is_dns1123_label, port.name, f"{path}.name")
        if port.name in names:
            errors.append(duplicate(f"{path}.name", port.name))
        names.add(port.name)
    errors += [invalid(f"{path}.port", port.port, m) for m in is_port_num(port.port)]
    return errors + one_of(port.protocol, f"{path}.protocol", PROTOCOLS)


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
        errors += port_num_or_name(port.target_port, f"{p}.targetPort")
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
        errors += one_of(spec.external_traffic_policy, "spec.externalTrafficPolicy", ("Cluster", "Local"))
    elif spec.external_traffic_policy:
        # The policy decides how traffic arriving at a node port is routed; without one it means nothing.
        errors.append(invalid("spec.externalTrafficPolicy", spec.external_traffic_policy,
                              "may only be set for externally-accessible services"))
    if spec.type != "ExternalName":
        errors += one_of(spec.internal_traffic_policy, "spec.internalTrafficPolicy", ("Cluster", "Local"))
    return errors


# Go's net.IP.IsLinkLocalMulticast: 224.0.0.0/24 and ff02::/16.
_LINK_LOCAL_MULTICAST = (ipaddress.ip_network("224.0.0.0/24"), ipaddress.ip_network("ff02::/16"))


def non_special_ip(ip: str, path: str) -> Errors:
    """An address traffic may be sent to on a Service's behalf: not unspecified, loopback or link-local.

    An Endpoints (or EndpointSlice) address is where every node's proxy sends a
    Service's traffic; 127.0.0.1 would reach whatever listens on the node
    itself (etcd, the kubelet) and 169.254.x.x a cloud's metadata service
    (CVE-2020-8558 class). Kubernetes' ValidateNonSpecialIP, its messages too.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return [invalid(path, ip, "must be a valid IP address")]
    errors: Errors = []
    if address.is_unspecified:
        errors.append(invalid(path, ip, f"may not be unspecified ({ip})"))
    if address.is_loopback:
        errors.append(invalid(path, ip, "may not be in the loopback range (127.0.0.0/8, ::1/128)"))
    if address.is_link_local:
        errors.append(invalid(path, ip, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"))
    if any(address in net for net in _LINK_LOCAL_MULTICAST if net.version == address.version):
        errors.append(invalid(path, ip, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"))
    return errors


def validate_endpoints(ep: core_pb2.Endpoints, old: core_pb2.Endpoints | None) -> Errors:
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
                elif not is_ipv4(address.ip):
                    errors.append(invalid(f"{ap}.ip", address.ip, "must be a valid IPv4 address"))
                else:
                    errors += non_special_ip(address.ip, f"{ap}.ip")
                if address.hostname:
                    errors += check_format(is_dns1123_label, address.hostname, f"{ap}.hostname")
                if address.node_name:
                    errors += check_format(is_dns1123_subdomain, address.node_name, f"{ap}.nodeName")
        names: set[str] = set()
        for j, port in enumerate(subset.ports):
            errors += _named_port(port, f"{p}.ports[{j}]", names, several=len(subset.ports) > 1)
    return errors


def validate_namespace(ns: core_pb2.Namespace, old: core_pb2.Namespace | None) -> Errors:
    errors: Errors = []
    for i, finalizer in enumerate(ns.spec.finalizers):
        errors += check_format(is_qualified_name, finalizer, f"spec.finalizers[{i}]")
    return errors


def validate_event(event: core_pb2.Event, old: core_pb2.Event | None) -> Errors:
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
        errors += check_format(is_config_key, key, f"{path}[{key}]")
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


def validate_config_map(cm: core_pb2.ConfigMap, old: core_pb2.ConfigMap | None) -> Errors:
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


def validate_secret(secret: core_pb2.Secret, old: core_pb2.Secret | None) -> Errors:
    errors = _data_keys(secret.data, "data") + _data_keys(secret.string_data, "stringData")
    if sum(len(v) for v in secret.data.values()) > _MAX_DATA_SIZE:
        errors.append(too_long("data", _MAX_DATA_SIZE))
    for key in _SECRET_KEYS.get(secret.type, ()):
        if key not in secret.data and key not in secret.string_data:
            errors.append(required(f"data[{key}]"))
    if old is not None:
        errors += immutable(secret.type, old.type, "type")
        errors += _immutable_data(secret, old, dict(secret.data) != dict(old.data))
    return errors
