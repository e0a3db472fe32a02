"""Validation of networking.k8s.io/v1 Ingress and IngressClass, with Kubernetes' paths and messages.

An Ingress routes by host and path: a rule's host is a DNS name or a wildcard
whose first label is `*` (never an IP), each path names its pathType, and
Exact and Prefix paths are absolute and free of `//`, `/./` and `/../` (a
proxy would read them differently than the user meant). A backend is a
Service (by name, with a port name or number, never both) or another resource,
never both. An Ingress with neither rules nor a default backend routes nothing
and is refused. An IngressClass names its controller as a domain-prefixed path
that never changes. As pkg/apis/networking/validation.
"""

from __future__ import annotations

import ipaddress
import re

from controlplane.apiserver.validation.field import Errors, forbidden, invalid, one_of, required, too_long
from controlplane.apiserver.validation.meta import (
    _DNS1123_SUBDOMAIN,
    immutable,
    is_dns1035_label,
    is_dns1123_subdomain,
    is_port_name,
    is_port_num,
    regex_error,
)
from proto import networking_pb2
from proto.wellknown import ANNOTATION_INGRESS_CLASS

PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")  # sorted, as Kubernetes lists its sets
# What an Exact or Prefix path may not contain or end with (validateIngressHTTPPath).
INVALID_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
INVALID_PATH_SUFFIXES = ("/..", "/.")
PARAMETER_SCOPES = ("Cluster", "Namespace")
MAX_CONTROLLER_LENGTH = 250
_WILDCARD_SUBDOMAIN = r"\*\." + _DNS1123_SUBDOMAIN
_DOMAIN_PREFIXED_PATH = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/\S+")


def is_wildcard_dns1123_subdomain(value: str) -> list[str]:
    """IsWildcardDNS1123Subdomain: `*.` then a DNS subdomain (`*.example.com`)."""
    errs = ["must be no more than 253 characters"] if len(value) > 253 else []
    if not re.fullmatch(_WILDCARD_SUBDOMAIN, value):
        errs.append(regex_error(
            "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must "
            "consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character",
            _WILDCARD_SUBDOMAIN, "*.example.com"))
    return errs


def host_errors(host: str) -> list[str]:
    """What is wrong with `host` as a rule's or TLS entry's host: a name or a `*.` wildcard."""
    return is_wildcard_dns1123_subdomain(host) if "*" in host else is_dns1123_subdomain(host)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def validate_ingress_backend(backend: networking_pb2.IngressBackend, path: str) -> Errors:
    has_service, has_resource = backend.HasField("service"), backend.HasField("resource")
    if has_service and has_resource:
        return [invalid(path, "", "cannot set both resource and service backends")]
    if has_resource:
        errors: Errors = []
        ref = backend.resource
        if not ref.kind:
            errors.append(required(f"{path}.resource.kind", ""))
        if not ref.name:
            errors.append(required(f"{path}.resource.name", ""))
        return errors
    if not has_service:
        return [invalid(path, "", "resource or service backend is required")]
    service = backend.service
    errors = []
    if not service.name:
        errors.append(required(f"{path}.service.name", ""))
    else:
        errors += [invalid(f"{path}.service.name", service.name, m) for m in is_dns1035_label(service.name)]
    port = service.port
    if port.name and port.number:
        errors.append(invalid(path, "", "cannot set both port name & port number"))
    elif port.name:
        errors += [invalid(f"{path}.service.port.name", port.name, m) for m in is_port_name(port.name)]
    elif port.number:
        errors += [invalid(f"{path}.service.port.number", port.number, m) for m in is_port_num(port.number)]
    else:
        errors.append(required(path, "port name or number is required"))
    return errors


def validate_http_path(http_path: networking_pb2.HTTPIngressPath, path: str) -> Errors:
    errors: Errors = []
    value = http_path.path
    if not http_path.HasField("path_type"):
        errors.append(required(f"{path}.pathType", "pathType must be specified"))
    elif http_path.path_type in ("Exact", "Prefix"):
        if not value.startswith("/"):
            errors.append(invalid(f"{path}.path", value, "must be an absolute path"))
        errors += [invalid(f"{path}.path", value, f"must not contain '{s}'")
                   for s in INVALID_PATH_SEQUENCES if s in value]
        errors += [invalid(f"{path}.path", value, f"cannot end with '{s}'")
                   for s in INVALID_PATH_SUFFIXES if value.endswith(s)]
    elif http_path.path_type == "ImplementationSpecific":
        if value and not value.startswith("/"):
            errors.append(invalid(f"{path}.path", value, "must be an absolute path"))
    else:
        errors += one_of(http_path.path_type, f"{path}.pathType", PATH_TYPES)
    return errors + validate_ingress_backend(http_path.backend, f"{path}.backend")


def validate_rule(rule: networking_pb2.IngressRule, path: str) -> Errors:
    errors: Errors = []
    if rule.host:
        if _is_ip(rule.host):
            errors.append(invalid(f"{path}.host", rule.host, "must be a DNS name, not an IP address"))
        errors += [invalid(f"{path}.host", rule.host, m) for m in host_errors(rule.host)]
    if rule.HasField("http"):
        if not rule.http.paths:
            errors.append(required(f"{path}.http.paths"))
        for i, http_path in enumerate(rule.http.paths):
            errors += validate_http_path(http_path, f"{path}.http.paths[{i}]")
    return errors


def validate_tls(tls: networking_pb2.IngressTLS, path: str) -> Errors:
    errors: Errors = []
    for j, host in enumerate(tls.hosts):
        errors += [invalid(f"{path}.hosts[{j}]", host, m) for m in host_errors(host)]
    if tls.secret_name:
        errors += [invalid(f"{path}.secretName", tls.secret_name, m) for m in is_dns1123_subdomain(tls.secret_name)]
    return errors


def validate_ingress_spec(spec: networking_pb2.IngressSpec) -> Errors:
    errors: Errors = []
    if not spec.rules and not spec.HasField("default_backend"):
        errors.append(invalid("spec.rules", [], "either `defaultBackend` or `rules` must be specified"))
    if spec.HasField("default_backend"):
        errors += validate_ingress_backend(spec.default_backend, "spec.defaultBackend")
    for i, rule in enumerate(spec.rules):
        errors += validate_rule(rule, f"spec.rules[{i}]")
    for i, tls in enumerate(spec.tls):
        errors += validate_tls(tls, f"spec.tls[{i}]")
    if spec.HasField("ingress_class_name"):
        errors += [invalid("spec.ingressClassName", spec.ingress_class_name, m)
                   for m in is_dns1123_subdomain(spec.ingress_class_name)]
    return errors


def validate_ingress_status(status: networking_pb2.IngressStatus) -> Errors:
    errors: Errors = []
    for i, point in enumerate(status.load_balancer.ingress):
        path = f"status.loadBalancer.ingress[{i}]"
        if point.ip and not _is_ip(point.ip):
            errors.append(invalid(f"{path}.ip", point.ip, "must be a valid IP address"))
        if point.hostname:
            errors += [invalid(f"{path}.hostname", point.hostname, m) for m in is_dns1123_subdomain(point.hostname)]
            if _is_ip(point.hostname):
                errors.append(invalid(f"{path}.hostname", point.hostname, "must be a DNS name, not an IP address"))
    return errors


def validate_ingress(ing: networking_pb2.Ingress, old: networking_pb2.Ingress | None) -> Errors:
    errors = validate_ingress_spec(ing.spec) + validate_ingress_status(ing.status)
    annotation = ing.metadata.annotations.get(ANNOTATION_INGRESS_CLASS)
    # A new Ingress names its class one way only (an old one may carry both from before).
    if old is None and annotation is not None and ing.spec.HasField("ingress_class_name"):
        errors.append(invalid(f"annotations.{ANNOTATION_INGRESS_CLASS}", annotation,
                              "can not be set when the class field is also set"))
    return errors


def validate_parameters(params: networking_pb2.IngressClassParametersReference, path: str) -> Errors:
    errors: Errors = []
    if not params.kind:
        errors.append(required(f"{path}.kind"))
    if not params.name:
        errors.append(required(f"{path}.name"))
    scope = params.scope if params.HasField("scope") else "Cluster"
    errors += one_of(scope, f"{path}.scope", PARAMETER_SCOPES)
    if scope == "Namespace" and not params.namespace:
        errors.append(required(f"{path}.namespace", "`parameters.scope` is set to 'Namespace'"))
    if scope == "Cluster" and params.HasField("namespace"):
        errors.append(forbidden(f"{path}.namespace", "`parameters.scope` is set to 'Cluster'"))
    if params.namespace:
        errors += [invalid(f"{path}.namespace", params.namespace, m) for m in is_dns1123_subdomain(params.namespace)]
    return errors


def validate_ingress_class(ic: networking_pb2.IngressClass, old: networking_pb2.IngressClass | None) -> Errors:
    errors: Errors = []
    controller = ic.spec.controller
    if not controller:
        errors.append(required("spec.controller"))
    elif len(controller) > MAX_CONTROLLER_LENGTH:
        errors.append(too_long("spec.controller", MAX_CONTROLLER_LENGTH))
    elif not _DOMAIN_PREFIXED_PATH.fullmatch(controller):
        errors.append(invalid("spec.controller", controller, 'must be a domain-prefixed path (such as "acme.io/foo")'))
    if ic.spec.HasField("parameters"):
        errors += validate_parameters(ic.spec.parameters, "spec.parameters")
    if old is not None:
        errors += immutable(ic.spec.controller, old.spec.controller, "spec.controller")
    return errors
