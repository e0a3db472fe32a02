"""DenyServiceExternalIPs: no Service may claim an external IP (CVE-2020-8554).

`spec.externalIPs` makes every node's proxy capture traffic to those addresses
— any address, the master's included — for the Service's endpoints, and
Kubernetes has no way to check that the author owns them. Kubernetes ships the
plugin off; Flotilla has it on, as hardened distributions do. A Service that
already has external IPs (made before, or by an admin with the plugin off) may
keep or drop them, never add one. LoadBalancer addresses come from the
load-balancer controller's pool through `status`, which `edit` cannot write.

Turn it off with the apiserver's `--disable-admission-plugins DenyServiceExternalIPs`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from controlplane.apiserver.admission.interface import CREATE, UPDATE, Request
from proto import core_pb2
from proto.errors import Forbidden

NAME = "DenyServiceExternalIPs"


class DenyServiceExternalIPs:
    NAME = NAME

    @asynccontextmanager
    async def validate(self, request: Request) -> AsyncIterator[None]:
        if (request.operation in (CREATE, UPDATE) and not request.subresource
                and isinstance(request.obj, core_pb2.Service)):
            old = set(request.old.spec.external_ips) if isinstance(request.old, core_pb2.Service) else set()
            if not set(request.obj.spec.external_ips) <= old:
                raise Forbidden(f'{request.kind.qualified_resource} "{request.obj.metadata.name}" is forbidden: '
                                "spec.externalIPs: Forbidden: externalIPs have been disabled")
        yield
