"""pods/log and pods/exec: the apiserver's forwarding of node-only calls to kubelets.

A container's log file and its namespaces exist only on its node, so the
apiserver looks up the pod's node, finds that node's kubelet from its status
(the InternalIP address and daemonEndpoints.kubeletEndpoint.Port, both written
by the kubelet when it registers) and forwards the call to the kubelet API
(proto/kubelet.proto), streaming logs back as they come. Users need no route
to the nodes, only to the apiserver — as with `kubectl logs` and `kubectl exec`
(`exec -i/-t` is a bidirectional stream, forwarded message by message).
Kubelet errors (a container not found, not running) pass through with their
gRPC status.

With `KubeletClientTLS` (the apiserver's --kubelet-client-certificate,
--kubelet-client-key and --kubelet-certificate-authority) the apiserver dials
kubelets over TLS, checks each one's serving certificate against the cluster CA
(for the node's address) and presents its own client certificate; without it
the channel is plaintext, for tests whose kubelets have no PKI.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import grpc

from controlplane.apiserver.registry import Registry
from proto import core_pb2, kinds, kubelet_pb2, kubelet_pb2_grpc
from proto.errors import BadRequest, Unavailable


@dataclass(frozen=True)
class KubeletClientTLS:
    """The apiserver's client certificate and key for kubelets, and the CA their serving certificates chain to."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca_pem, private_key=self.key_pem,
                                            certificate_chain=self.cert_pem)


class KubeletProxy:
    def __init__(self, registry: Registry, tls: KubeletClientTLS | None = None) -> None:
        self.registry = registry
        self.tls = tls
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
            channel = self._channels[target] = (grpc.aio.secure_channel(target, self.tls.credentials()) if self.tls
                                                else grpc.aio.insecure_channel(target))
        return kubelet_pb2_grpc.KubeletStub(channel)

    async def logs(self, request: kubelet_pb2.LogsRequest) -> AsyncIterator[kubelet_pb2.LogChunk]:
        stub = await self._kubelet(request.namespace, request.pod)
        call = stub.Logs(request)
        try:
            async for chunk in call:
                yield chunk
        finally:
            call.cancel()

    async def exec_stream(self, start: kubelet_pb2.ExecStart,
                          requests: AsyncIterator[kubelet_pb2.ExecStreamRequest]
                          ) -> AsyncGenerator[kubelet_pb2.ExecStreamReply, None]:
        """An interactive exec: `start`, then the caller's stdin and resizes, to the pod's kubelet."""
        stub = await self._kubelet(start.namespace, start.pod)

        async def forward() -> AsyncIterator[kubelet_pb2.ExecStreamRequest]:
            yield kubelet_pb2.ExecStreamRequest(start=start)
            async for request in requests:
                yield request
        call = stub.ExecStream(forward())
        try:
            async for reply in call:
                yield reply
        finally:
            call.cancel()  # the user went away: the kubelet ends the session

    async def exec(self, request: kubelet_pb2.ExecRequest) -> kubelet_pb2.ExecReply:
        stub = await self._kubelet(request.namespace, request.pod)
        timeout = (request.timeout_seconds or 60) + 10
        reply: kubelet_pb2.ExecReply = await stub.Exec(request, timeout=timeout)
        return reply
