"""pods/log, exec, attach and portforward: the apiserver's forwarding of node-only calls to kubelets.

A container's log file and its namespaces exist only on its node, so the
apiserver looks up the pod's node, finds that node's kubelet from its status
(the InternalIP address and daemonEndpoints.kubeletEndpoint.Port, both written
by the kubelet when it registers) and forwards the call to the kubelet API
(proto/kubelet.proto), streaming logs back as they come. Users need no route
to the nodes, only to the apiserver — as with `kubectl logs` and `kubectl exec`
(`exec -i/-t`, attach and each port-forward connection are bidirectional
streams, forwarded message by message). Kubelet errors (a container not found,
not running) pass through with their gRPC status. The HTTP transport checks
the pod and container first (`target`), so those errors reach kubectl as a
Status before its connection is upgraded, as Kubernetes answers them.

With `KubeletClientTLS` (the apiserver's --kubelet-client-certificate,
--kubelet-client-key and --kubelet-certificate-authority) the apiserver dials
kubelets over TLS, checks each one's serving certificate against the cluster CA
(for the node's address) and presents its own client certificate; without it
the channel is plaintext, for tests whose kubelets have no PKI.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from controlplane.apiserver.registry import Registry
from proto import core_pb2, kinds, kubelet_pb2, kubelet_pb2_grpc
from proto.errors import BadRequest, Unavailable, from_rpc_error

Request = TypeVar("Request")


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

    async def target(self, namespace: str, name: str, container: str | None = "", *, running: bool = True,
                     what: str = "exec into") -> tuple[core_pb2.Pod, str]:
        """The pod and the container a stream is for, or the error Kubernetes answers before connecting.

        An empty `container` means the pod's only one (kubectl fills it in from the
        default-container annotation itself), None no container (port-forward);
        `running` refuses a pod that has finished.
        """
        pod = await self.registry.get(kinds.resolve("pods"), namespace, name)
        assert isinstance(pod, core_pb2.Pod)
        names = [c.name for c in pod.spec.containers]
        if container is None:
            container = ""
        elif not container:
            if len(names) != 1:
                raise BadRequest(f"a container name must be specified for pod {name}, "
                                 f"choose one of: [{' '.join(names)}]")
            container = names[0]
        elif container not in names and container not in (c.name for c in pod.spec.init_containers):
            raise BadRequest(f"container {container} is not valid for pod {name}")
        if running and pod.status.phase in ("Succeeded", "Failed"):
            raise BadRequest(f"cannot {what} a container in a completed pod; current phase is {pod.status.phase}")
        if not pod.spec.node_name:
            raise BadRequest(f"pod {name} does not have a host assigned")
        return pod, container

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

    async def open_logs(self, request: kubelet_pb2.LogsRequest) -> AsyncGenerator[kubelet_pb2.LogChunk, None]:
        """A log stream whose kubelet has found the container; its errors are raised here, before any output.

        The kubelet sends its headers once the container is found, so a follow on an empty
        log starts at once and a wrong container fails as an ordinary error (an HTTP Status).
        """
        stub = await self._kubelet(request.namespace, request.pod)
        call = stub.Logs(request)
        try:
            await call.initial_metadata()
            if call.done():  # over before it began: read it out, so its status raises
                early = [chunk async for chunk in call]
            else:
                early = []
        except grpc.RpcError as err:
            call.cancel()
            raise from_rpc_error(err) from None
        return _chunks(call, early)

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
        async for reply in _bidi(stub.ExecStream, kubelet_pb2.ExecStreamRequest(start=start), requests):
            yield reply

    async def attach_stream(self, start: kubelet_pb2.ExecStart,
                            requests: AsyncIterator[kubelet_pb2.ExecStreamRequest]
                            ) -> AsyncGenerator[kubelet_pb2.ExecStreamReply, None]:
        """Attach to a running container's stdio: the same frames as an exec, without a command."""
        stub = await self._kubelet(start.namespace, start.pod)
        async for reply in _bidi(stub.Attach, kubelet_pb2.ExecStreamRequest(start=start), requests):
            yield reply

    async def port_forward(self, start: kubelet_pb2.PortForwardStart,
                           requests: AsyncIterator[kubelet_pb2.PortForwardRequest]
                           ) -> AsyncGenerator[kubelet_pb2.PortForwardReply, None]:
        """One connection to a port on the pod's loopback: the caller's bytes in, the pod's out."""
        stub = await self._kubelet(start.namespace, start.pod)
        async for reply in _bidi(stub.PortForward, kubelet_pb2.PortForwardRequest(start=start), requests):
            yield reply

    async def exec(self, request: kubelet_pb2.ExecRequest) -> kubelet_pb2.ExecReply:
        stub = await self._kubelet(request.namespace, request.pod)
        timeout = (request.timeout_seconds or 60) + 10
        reply: kubelet_pb2.ExecReply = await stub.Exec(request, timeout=timeout)
        return reply


async def _bidi(method: Callable[..., Any], first: Request, requests: AsyncIterator[Request]
                ) -> AsyncGenerator[Any, None]:
    """A bidirectional call: `first`, then `requests` as they come; replies as they come."""
    async def forward() -> AsyncIterator[Request]:
        yield first
        async for request in requests:
            yield request
    call = method(forward())
    try:
        async for reply in call:
            yield reply
    finally:
        call.cancel()  # the user went away: the kubelet ends the session


async def _chunks(call: Any, early: list[kubelet_pb2.LogChunk]) -> AsyncGenerator[kubelet_pb2.LogChunk, None]:
    try:
        for chunk in early:
            yield chunk
        async for chunk in call:
            yield chunk
    finally:
        call.cancel()
