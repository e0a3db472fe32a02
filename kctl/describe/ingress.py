"""Describing an Ingress as kubectl's IngressDescriber does: address, class, default backend, TLS, rules.

Each backend shows the Service port it names and, in parentheses, the
endpoints behind it (read from the Service's EndpointSlices, up to kubectl's
few, `<error: ...>` when the Service is missing), so a user sees at once
whether a rule leads anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from client.endpointslices import port_endpoints, usable
from controlplane.printers.text import NONE
from kctl.describe.section import Section, annotation_lines, pairs
from proto import core_pb2, discovery_pb2, networking_pb2

_SHOWN = 3  # kubectl lists this many endpoints, then "+ N more..."
DEFAULT_BACKEND = "<default>"

Lookup = Callable[[str], tuple[core_pb2.Service | None, Sequence[discovery_pb2.EndpointSlice]]]


def backend_text(backend: networking_pb2.IngressBackend, lookup: Lookup) -> str:
    """`svc:port (ip:port,...)`, as kubectl's describeBackend."""
    if backend.HasField("resource"):
        ref = backend.resource
        group = f"{ref.api_group}/" if ref.HasField("api_group") and ref.api_group else ""
        return f"APIGroup: {group.rstrip('/') or '<none>'}, Kind: {ref.kind}, Name: {ref.name}"
    service = backend.service
    port = service.port.name or str(service.port.number)
    svc, slices = lookup(service.name)
    if svc is None:
        return f"{service.name}:{port} (<error: services \"{service.name}\" not found>)"
    for sp in svc.spec.ports:
        if (service.port.name and sp.name == service.port.name) or sp.port == service.port.number:
            found = [f"{e.ip}:{e.port}" for e in usable(port_endpoints(slices, sp.name))]
            shown = ",".join(found[:_SHOWN]) + (f" + {len(found) - _SHOWN} more..." if len(found) > _SHOWN else "")
            return f"{service.name}:{port} ({shown or NONE})"
    return f"{service.name}:{port} (<none>)"


def describe_ingress(ing: networking_pb2.Ingress, lookup: Lookup) -> Section:
    s = Section()
    meta, spec = ing.metadata, ing.spec
    s.kv(0, "Name", meta.name)
    s.many(0, "Labels", pairs(meta.labels))
    s.kv(0, "Namespace", meta.namespace)
    s.kv(0, "Address", ",".join(p.ip or p.hostname for p in ing.status.load_balancer.ingress))
    s.kv(0, "Ingress Class", spec.ingress_class_name if spec.HasField("ingress_class_name") else NONE)
    s.kv(0, "Default backend", backend_text(spec.default_backend, lookup) if spec.HasField("default_backend")
         else DEFAULT_BACKEND)
    if spec.tls:
        s.header(0, "TLS:")
        for tls in spec.tls:
            hosts = ",".join(tls.hosts)
            s.lines(1, [f"{tls.secret_name or 'SNI routes'} terminates {hosts}".rstrip()])
    rows = [["Host", "Path", "Backends"]]
    for rule in spec.rules:
        rows.append([rule.host or "*", "", ""])
        for path in rule.http.paths:
            rows.append(["", path.path or "/", backend_text(path.backend, lookup)])
    if not spec.rules:
        rows.append(["*", "*", backend_text(spec.default_backend, lookup) if spec.HasField("default_backend")
                     else DEFAULT_BACKEND])
    s.header(0, "Rules:")
    s.table(1, rows)
    s.many(0, "Annotations", annotation_lines(meta.annotations))
    return s
