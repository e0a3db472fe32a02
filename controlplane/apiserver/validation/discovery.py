"""Validation of discovery.k8s.io/v1 EndpointSlice, with Kubernetes' paths and messages.

A slice says what its addresses are (IPv4, IPv6 or FQDN, fixed once created)
and every address must be one: an IP every node's proxy may send a Service's
traffic to (never unspecified, loopback or link-local: `non_special_ip`, shared
with Endpoints), or a domain name of at least two labels. A slice holds at most
1000 endpoints of 1 to 100 addresses each and at most 100 uniquely named
ports; node names, hostnames, zone hints and application protocols are checked
as their own kinds check them (pkg/apis/discovery/validation).
"""

from __future__ import annotations

import ipaddress

from controlplane.apiserver.validation.core import non_special_ip
from controlplane.apiserver.validation.field import (
    Errors,
    check_format,
    duplicate,
    invalid,
    required,
    too_many,
    unsupported,
)
from controlplane.apiserver.validation.meta import (
    immutable,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_ipv4,
    is_label_value,
    is_qualified_name,
)
from controlplane.apiserver.validation.podspec import PROTOCOLS
from proto import discovery_pb2

ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")  # sorted, as Kubernetes lists its sets
MAX_ENDPOINTS = 1000
MAX_ADDRESSES = 100
# The published API says 100 ports per slice (the endpointslice controller never needs more
# than a Service has); Kubernetes' own check has since grown to 20000.
MAX_PORTS = 100
MAX_ZONE_HINTS = 8



def _is_ipv6(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def fully_qualified_domain_name(name: str, path: str) -> Errors:
    """IsFullyQualifiedDomainName: a DNS subdomain of at least two labels; one trailing dot allowed."""
    if not name:
        return [required(path)]
    name = name.removesuffix(".")
    if errors := is_dns1123_subdomain(name):
        return [invalid(path, name, ",".join(errors))]
    labels = name.split(".")
    if len(labels) < 2:
        return [invalid(path, name, "should be a domain with at least two segments separated by dots")]
    for label in labels:
        if errors := is_dns1123_label(label):
            return [invalid(path, label, ",".join(errors))]
    return []


def _address(address: str, address_type: str, path: str) -> Errors:
    """One address, read as the slice's type says; an unknown type was refused already."""
    if address_type == "IPv4":
        if not is_ipv4(address):
            return [invalid(path, address, "must be a valid IPv4 address")]
        return non_special_ip(address, path)
    if address_type == "IPv6":
        if not _is_ipv6(address):
            return [invalid(path, address, "must be a valid IPv6 address")]
        return non_special_ip(address, path)
    if address_type == "FQDN":
        return fully_qualified_domain_name(address, path)
    return []


def _hints(hints: discovery_pb2.EndpointHints, path: str) -> Errors:
    zones_path = f"{path}.forZones"
    if len(hints.for_zones) > MAX_ZONE_HINTS:
        return [too_many(zones_path, len(hints.for_zones), MAX_ZONE_HINTS)]
    errors: Errors = []
    seen: set[str] = set()
    for i, zone in enumerate(hints.for_zones):
        p = f"{zones_path}[{i}].name"
        if zone.name in seen:
            errors.append(duplicate(p, zone.name))
        seen.add(zone.name)
        errors += check_format(is_label_value, zone.name, p)
    return errors


def _endpoints(endpoints: list[discovery_pb2.Endpoint], address_type: str) -> Errors:
    if len(endpoints) > MAX_ENDPOINTS:
        return [too_many("endpoints", len(endpoints), MAX_ENDPOINTS)]
    errors: Errors = []
    for i, endpoint in enumerate(endpoints):
        p = f"endpoints[{i}]"
        if not endpoint.addresses:
            errors.append(required(f"{p}.addresses", "must contain at least 1 address"))
        elif len(endpoint.addresses) > MAX_ADDRESSES:
            errors.append(too_many(f"{p}.addresses", len(endpoint.addresses), MAX_ADDRESSES))
        for j, address in enumerate(endpoint.addresses):
            errors += _address(address, address_type, f"{p}.addresses[{j}]")
        if endpoint.HasField("node_name"):
            errors += check_format(is_dns1123_subdomain, endpoint.node_name, f"{p}.nodeName")
        if endpoint.HasField("hostname"):
            errors += check_format(is_dns1123_label, endpoint.hostname, f"{p}.hostname")
        if endpoint.HasField("hints"):
            errors += _hints(endpoint.hints, f"{p}.hints")
    return errors


def _ports(ports: list[discovery_pb2.EndpointSlice.EndpointPort]) -> Errors:
    if len(ports) > MAX_PORTS:
        return [too_many("ports", len(ports), MAX_PORTS)]
    errors: Errors = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        p = f"ports[{i}]"
        # Defaulting gave every port a name ("") and a protocol (TCP); only an explicit "" protocol is left.
        if port.name:
            errors += check_format(is_dns1123_label, port.name, f"{p}.name")
        if port.name in names:
            errors.append(duplicate(f"{p}.name", port.name))
        names.add(port.name)
        if not port.HasField("protocol"):
            errors.append(required(f"{p}.protocol"))
        elif port.protocol not in PROTOCOLS:
            errors.append(unsupported(f"{p}.protocol", port.protocol, PROTOCOLS))
        if port.HasField("app_protocol"):
            errors += check_format(is_qualified_name, port.app_protocol, f"{p}.appProtocol")
    return errors


def validate_endpoint_slice(eps: discovery_pb2.EndpointSlice, old: discovery_pb2.EndpointSlice | None) -> Errors:
    errors: Errors = []
    if not eps.address_type:
        errors.append(required("addressType"))
    elif eps.address_type not in ADDRESS_TYPES:
        errors.append(unsupported("addressType", eps.address_type, ADDRESS_TYPES))
    errors += _endpoints(list(eps.endpoints), eps.address_type)
    errors += _ports(list(eps.ports))
    if old is not None:
        # Consumers keep one table per address family; a slice may not move between them.
        errors += immutable(eps.address_type, old.address_type, "addressType")
    return errors
