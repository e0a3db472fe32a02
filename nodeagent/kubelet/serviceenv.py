"""The service environment variables every container starts with (Kubernetes' envvars.FromServices).

Before a container's own envFrom and env (which may use them in `$(VAR)` and override
them), the kubelet sets, for the `kubernetes` Service of `default` always and — with
`enableServiceLinks` (the default) — for every Service of the pod's namespace that has
a cluster IP:

    <NAME>_SERVICE_HOST=10.96.0.1          <NAME>_SERVICE_PORT=443   (the first port)
    <NAME>_SERVICE_PORT_<PORT NAME>=443    (each named port)
    <NAME>_PORT=tcp://10.96.0.1:443        and, for each port, Docker-link style:
    <NAME>_PORT_443_TCP=tcp://10.96.0.1:443, ..._PROTO=tcp, ..._PORT=443, ..._ADDR=10.96.0.1

<NAME> is the Service's name upper-cased with `-` as `_`. A Service of the pod's own
namespace wins over the master's `kubernetes` of the same name, as in the kubelet.
"""

from __future__ import annotations

from collections.abc import Iterable

from client import Client
from proto import core_pb2
from proto.errors import NotFound

MASTER_NAMESPACE = "default"
MASTER_SERVICE = "kubernetes"


def _name(text: str) -> str:
    return text.upper().replace("-", "_")


def has_cluster_ip(service: core_pb2.Service) -> bool:
    return service.spec.cluster_ip not in ("", "None")


def from_services(services: Iterable[core_pb2.Service]) -> dict[str, str]:
    """The variables of these Services (each with a cluster IP), in Kubernetes' names."""
    env: dict[str, str] = {}
    for service in services:
        if not has_cluster_ip(service) or not service.spec.ports:
            continue
        name, ip = _name(service.metadata.name), service.spec.cluster_ip
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(service.spec.ports[0].port)
        for port in service.spec.ports:
            if port.name:
                env[f"{name}_SERVICE_PORT_{_name(port.name)}"] = str(port.port)
        first = service.spec.ports[0]
        env[f"{name}_PORT"] = f"{(first.protocol or 'TCP').lower()}://{ip}:{first.port}"
        for port in service.spec.ports:
            protocol = port.protocol or "TCP"
            prefix = f"{name}_PORT_{port.port}_{protocol.upper()}"
            env[prefix] = f"{protocol.lower()}://{ip}:{port.port}"
            env[f"{prefix}_PROTO"] = protocol.lower()
            env[f"{prefix}_PORT"] = str(port.port)
            env[f"{prefix}_ADDR"] = ip
    return env


async def for_pod(client: Client, pod: core_pb2.Pod) -> dict[str, str]:
    """The service variables of `pod` (ApiError if the Services cannot be read: the container waits)."""
    links = pod.spec.enable_service_links if pod.spec.HasField("enable_service_links") else True
    services: dict[str, core_pb2.Service] = {}
    try:
        master = await client.get(core_pb2.Service, MASTER_SERVICE, MASTER_NAMESPACE)
        services[master.metadata.name] = master
    except NotFound:
        pass
    if links or pod.metadata.namespace == MASTER_NAMESPACE:
        listed = (await client.list(core_pb2.Service, pod.metadata.namespace)).items
        for service in listed:
            if links or service.metadata.name == MASTER_SERVICE:
                services[service.metadata.name] = service
    return from_services(sorted(services.values(), key=lambda s: s.metadata.name))



