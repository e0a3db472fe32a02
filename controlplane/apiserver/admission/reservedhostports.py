"""ReservedHostPorts: no pod takes a hostPort the control plane listens on, in any namespace.

Pod Security's baseline forbids hostPorts altogether, but a namespace labelled
`privileged` (kube-system, or one an admin opened) may use them — and a pod
holding hostPort 2379 or 6443 on the master would sit in front of etcd or the
apiserver for every client on the node network. This plugin refuses those
ports everywhere, for pods and for workloads' pod templates (whose pods would
only fail later), as a field error in Kubernetes' words:

    pods "p" is forbidden: spec.containers[0].ports[0].hostPort: Forbidden: port 6443 is reserved for the control plane

The ports are Flotilla's defaults (etcd 2379/2380 and the local clusters'
12379/12380, the apiserver's HTTPS 6443, gRPC token port 6444 and gRPC certificate port 6445, the kubelet's 10250, the
image registry's 5000); the apiserver's `--reserved-host-ports` replaces the
list with the ports its cluster really uses (`Chain.set_reserved_host_ports`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from controlplane.apiserver.admission.interface import CREATE, UPDATE, Request
from controlplane.apiserver.admission.podsecurity.admission import pod_template
from proto import core_pb2
from proto.errors import Forbidden

NAME = "ReservedHostPorts"
DEFAULT_RESERVED_HOST_PORTS = frozenset({2379, 2380, 5000, 6443, 6444, 6445, 10250, 12379, 12380})


def reserved_ports_used(spec: core_pb2.PodSpec, reserved: frozenset[int], path: str) -> list[str]:
    """Field errors, one per container port whose hostPort is reserved."""
    errors = []
    for field, containers in (("initContainers", spec.init_containers), ("containers", spec.containers)):
        for i, container in enumerate(containers):
            for j, port in enumerate(container.ports):
                if port.host_port in reserved:
                    errors.append(f"{path}.{field}[{i}].ports[{j}].hostPort: Forbidden: "
                                  f"port {port.host_port} is reserved for the control plane")
    return errors


class ReservedHostPorts:
    NAME = NAME

    def __init__(self, ports: Iterable[int] = DEFAULT_RESERVED_HOST_PORTS) -> None:
        self.ports = frozenset(ports)

    @asynccontextmanager
    async def validate(self, request: Request) -> AsyncIterator[None]:
        if request.operation in (CREATE, UPDATE) and self.ports:
            errors: list[str] = []
            if isinstance(request.obj, core_pb2.Pod) and request.subresource in ("", "ephemeralcontainers"):
                errors = reserved_ports_used(request.obj.spec, self.ports, "spec")
            elif not request.subresource and (template := pod_template(request.obj)) is not None:
                errors = reserved_ports_used(template.spec, self.ports, "spec.template.spec")
            if errors:
                name = request.obj.metadata.name  # type: ignore[attr-defined]
                raise Forbidden(f'{request.kind.qualified_resource} "{name}" is forbidden: ' + ", ".join(errors))
        yield
