"""Table columns of networking.k8s.io/v1 Ingress and IngressClass (Kubernetes' printIngress, printIngressClass).

An Ingress shows its class (`<none>` before one is chosen), up to three hosts
(`*` when its rules name none), the addresses its controller wrote (cut to 16
characters unless wide, as kubectl cuts load-balancer addresses) and the ports
it opens: 80, and 443 too once it has TLS entries. An IngressClass shows its
controller and its parameters as `Kind[.apiGroup]/name`.
"""

from __future__ import annotations

from controlplane.printers.table import AGE, NAME, Cell, GenerateOptions, TableColumnDefinition, TableConvertor
from controlplane.printers.text import NONE, age
from proto import networking_pb2

_MAX_HOSTS = 3
_LOAD_BALANCER_WIDTH = 16  # kubectl's loadBalancerWidth


def hosts_text(rules: list[networking_pb2.IngressRule]) -> str:
    """The first three hosts named (formatHosts), then `+ N more...` counted in rules; `*` when none."""
    hosts: list[str] = []
    more = False
    for rule in rules:
        if len(hosts) == _MAX_HOSTS:
            more = True
        if not more and rule.host:
            hosts.append(rule.host)
    if not hosts:
        return "*"
    text = ",".join(hosts)
    return f"{text} + {len(rules) - _MAX_HOSTS} more..." if more else text


def address_text(status: networking_pb2.IngressLoadBalancerStatus, wide: bool) -> str:
    """The ingress points' IPs and hostnames, comma-separated (ingressLoadBalancerStatusStringer)."""
    text = ",".join(point.ip or point.hostname for point in status.ingress if point.ip or point.hostname)
    if not wide and len(text) > _LOAD_BALANCER_WIDTH:
        return text[:_LOAD_BALANCER_WIDTH - 3] + "..."
    return text


def ports_text(ing: networking_pb2.Ingress) -> str:
    return "80, 443" if ing.spec.tls else "80"


def parameters_text(ic: networking_pb2.IngressClass) -> str:
    if not ic.spec.HasField("parameters"):
        return NONE
    params = ic.spec.parameters
    kind = f"{params.kind}.{params.api_group}" if params.HasField("api_group") else params.kind
    return f"{kind}/{params.name}"


def _ingress_cells(ing: networking_pb2.Ingress, o: GenerateOptions) -> list[Cell]:
    class_name = ing.spec.ingress_class_name if ing.spec.HasField("ingress_class_name") else NONE
    return [ing.metadata.name, class_name, hosts_text(list(ing.spec.rules)),
            address_text(ing.status.load_balancer, o.wide), ports_text(ing), age(ing, o.now)]


def _ingress_class_cells(ic: networking_pb2.IngressClass, o: GenerateOptions) -> list[Cell]:
    return [ic.metadata.name, ic.spec.controller, parameters_text(ic), age(ic, o.now)]


INGRESS = TableConvertor[networking_pb2.Ingress]((
    NAME,
    TableColumnDefinition("Class", description="The name of the IngressClass resource that should be used for "
                          "this Ingress"),
    TableColumnDefinition("Hosts", description="Hosts that incoming requests are matched against before the "
                          "ingress rule"),
    TableColumnDefinition("Address", description="Address is a list containing ingress points for the "
                          "load-balancer"),
    TableColumnDefinition("Ports", description="Ports of TLS configurations that open"),
    AGE,
), _ingress_cells)

INGRESS_CLASS = TableConvertor[networking_pb2.IngressClass]((
    NAME,
    TableColumnDefinition("Controller", description="Controller that is responsible for handling this class"),
    TableColumnDefinition("Parameters", description="A reference to a resource with additional parameters"),
    AGE,
), _ingress_class_cells)
