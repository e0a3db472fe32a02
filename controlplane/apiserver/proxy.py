"""pods/log and pods/exec: the apiserver's forwarding of node-only calls to kubelets.

A container's log file and its namespaces exist only on its node, so the
apiserver looks up the pod's node, finds that node's kubelet from its status
(the InternalIP address and daemonEndpoints.kubeletEndpoint.Port, both written
by the kubelet when it registers) and forwards the call to the kubelet API
(proto/kubelet.proto), streaming logs back as they come. Users need no route
to the nodes, only to the apiserver — as with `kubectl logs` and `kubectl exec`.
Kubelet errors (a container not found, not running) pass through with their
gRPC status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from controlplane.apiserver.registry import Registry
from proto import core_pb2, kinds, kubelet_pb2, kubelet_pb2_grpc
from proto.errors import BadRequest, Unavailable


class KubeletProxy:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def _kubelet(self, namespace: str, name: str) -> kubelet_pb2_grpc.KubeletStub:
        pod = await self.registry.get(kinds.resolve("pods"), namespace, name)
        assert isinstance(pod, core_pb2.Pod)
        if not pod.spec.node_name:
            raise BadRequest(f"pod {name} does not have a host assigned")
        node = await self.registry.get(kinds.resolve("nodes"), "", pod.spec.node_name)
        assert isinstance(node, core_pb2.Node)
        address = next((a.address for a in node.status.addresses if a.type == "InternalIP"), "")
        port = node.status.daemon_endpoints.kubelet_endpoint.port
        if not address or not port:
            raise Unavailable(f"node {node.metadata.name} has not published its kubelet endpoint")
        target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        channel = self._channels.get(target)
        if channel is None:
            channel = self._channels[target] = grpc.aio.insecure_channel(target)
        return kubelet_pb2_grpc.KubeletStub(channel)

    async def logs(self, request: kubelet_pb2.LogsRequest) -> AsyncIterator[kubelet_pb2.LogChunk]:
        stub = await self._kubelet(request.namespace, request.pod)
        call = stub.Logs(request)
        try:
            async for chunk in call:
                yield chunk
        finally:
            call.cancel()

    async def exec(self, request: kubelet_pb2.ExecRequest) -> kubelet_pb2.ExecReply:
        stub = await self._kubelet(request.namespace, request.pod)
        timeout = (request.timeout_seconds or 60) + 10
        reply: kubelet_pb2.ExecReply = await stub.Exec(request, timeout=timeout)
        return reply
