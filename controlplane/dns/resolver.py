"""What cluster DNS answers, decided from the Service, EndpointSlice and Pod caches (pure).

The names follow Kubernetes' DNS specification for Services and Pods:

- `<svc>.<ns>.svc.<domain>` A → the ClusterIP; for a headless Service
  (clusterIP None) one A record per ready endpoint of its EndpointSlices (as CoreDNS
  reads them), so clients reach pods directly.
- `<hostname>.<svc>.<ns>.svc.<domain>` A → the IP of the pod whose `hostname` and
  `subdomain` are those labels, when `<svc>` is a headless Service of its namespace
  and the pod is Ready (or the Service publishes not-ready addresses): how a
  StatefulSet's `web-0.nginx` is reached, and any pod that names a hostname and
  subdomain gets the same.
- `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV → the named port's number and the
  Service's name as target (with its A records in the additional section).
- Any other name under `<domain>` → NXDOMAIN, authoritatively: the cluster owns it.
- Names outside the domain are not ours: `resolve` returns None and the server
  forwards the query to the node's upstream resolver.

Short names (`web`, `web.default`) reach here already qualified by the pod's
resolv.conf search path, so no special case is needed for them.
"""

from __future__ import annotations

from typing import Protocol

from dnslib import QTYPE, RCODE, RR, SRV, A, DNSRecord  # type: ignore[import-untyped]

from client.endpointslices import SERVICE_INDEX, addresses
from proto import core_pb2, discovery_pb2

TTL = 5  # seconds: short, so clients notice new endpoints of headless Services quickly


HOSTNAME_INDEX = "dns-hostname"  # a pod's "<namespace>/<subdomain>/<hostname>", when it has both


class Lister(Protocol):
    """The part of an informer's `Store` the resolver reads."""

    def get_by_name(self, namespace: str, name: str) -> object | None: ...


class IndexLister(Protocol):
    """The part of the pods' `Store` the resolver reads: pods by HOSTNAME_INDEX."""

    def list_by_index(self, index_name: str, value: str) -> list[core_pb2.Pod]: ...


class SliceLister(Protocol):
    """The part of the slices' `Store` the resolver reads: a Service's slices by SERVICE_INDEX."""

    def list_by_index(self, index_name: str, value: str) -> list[discovery_pb2.EndpointSlice]: ...


def hostname_index(obj: object) -> list[str]:
    """The store index HOSTNAME_INDEX: where a pod answers in DNS, if it has a hostname and subdomain."""
    if not isinstance(obj, core_pb2.Pod) or not obj.spec.hostname or not obj.spec.subdomain:
        return []
    return [f"{obj.metadata.namespace}/{obj.spec.subdomain}/{obj.spec.hostname}".lower()]


def resolve(request: DNSRecord, services: Lister, slices: SliceLister, domain: str = "cluster.local",
            pods: IndexLister | None = None) -> DNSRecord | None:
    """The reply to `request`, or None when the name is outside the cluster domain (forward it)."""
    qname = str(request.q.qname).rstrip(".").lower()
    suffix = "." + domain.lower()
    if not (qname == domain.lower() or qname.endswith(suffix)):
        return None
    reply = request.reply()  # aa=1: for the cluster domain this server is the authority
    labels = qname[: -len(suffix)].split(".") if qname.endswith(suffix) else []
    if len(labels) < 3 or labels[-1] != "svc":
        reply.header.rcode = RCODE.NXDOMAIN
        return reply
    labels = labels[:-1]
    port_labels, (name, namespace) = labels[:-2], labels[-2:]
    svc = services.get_by_name(namespace, name)
    if not isinstance(svc, core_pb2.Service) or len(port_labels) not in (0, 1, 2):
        reply.header.rcode = RCODE.NXDOMAIN
        return reply
    if len(port_labels) == 1:
        return _hostname(reply, request, qname, port_labels[0], svc, pods)
    target = f"{name}.{namespace}.svc.{domain}."
    found = _addresses(svc, slices)
    qtype = request.q.qtype
    if not port_labels:
        if qtype in (QTYPE.A, QTYPE.ANY):
            for ip in found:
                reply.add_answer(RR(target, QTYPE.A, ttl=TTL, rdata=A(ip)))
        return reply  # other types of an existing name: NOERROR with no data
    port_name, proto = (label.removeprefix("_") for label in port_labels)
    port = next((p for p in svc.spec.ports
                 if p.name == port_name and p.protocol.lower() == proto and p.name), None)
    if port is None:
        reply.header.rcode = RCODE.NXDOMAIN
        return reply
    if qtype in (QTYPE.SRV, QTYPE.ANY):
        reply.add_answer(RR(qname + ".", QTYPE.SRV, ttl=TTL, rdata=SRV(0, 100, port.port, target)))
        for ip in found:
            reply.add_ar(RR(target, QTYPE.A, ttl=TTL, rdata=A(ip)))
    return reply


def _addresses(svc: core_pb2.Service, slices: SliceLister) -> list[str]:
    if svc.spec.cluster_ip and svc.spec.cluster_ip != "None":
        return [svc.spec.cluster_ip]
    # Ready endpoints only (publishNotReadyAddresses makes the controller mark them all ready).
    return addresses(slices.list_by_index(SERVICE_INDEX, f"{svc.metadata.namespace}/{svc.metadata.name}"))


def _hostname(reply: DNSRecord, request: DNSRecord, qname: str, hostname: str, svc: core_pb2.Service,
              pods: IndexLister | None) -> DNSRecord:
    """`<hostname>.<svc>.<ns>.svc`: the pod with that hostname whose subdomain is the headless `svc`."""
    headless = svc.spec.cluster_ip == "None"
    addresses: list[str] = []
    if headless and pods is not None:
        key = f"{svc.metadata.namespace}/{svc.metadata.name}/{hostname}"
        for pod in pods.list_by_index(HOSTNAME_INDEX, key):
            if pod.metadata.HasField("deletion_timestamp") or not pod.status.pod_ip:
                continue
            # As the Service's own name: only pods that serve, unless it publishes the rest.
            if _ready(pod) or svc.spec.publish_not_ready_addresses:
                addresses.append(pod.status.pod_ip)
    if not addresses:
        reply.header.rcode = RCODE.NXDOMAIN
        return reply
    if request.q.qtype in (QTYPE.A, QTYPE.ANY):
        for ip in sorted(set(addresses)):
            reply.add_answer(RR(qname + ".", QTYPE.A, ttl=TTL, rdata=A(ip)))
    return reply


def _ready(pod: core_pb2.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
