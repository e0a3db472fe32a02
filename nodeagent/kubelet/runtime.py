"""The kubelet's side of the CRI: a typed asyncio client for containerd's runtime.v1 API.

Everything the kubelet does to containers goes through here, over the same gRPC
API the real kubelet uses (proto/cri.proto). The kubelet keeps no record of its
own of what runs: sandboxes and containers carry labels naming their pod, and
the runtime is the record. That is what lets a restarted kubelet adopt the pods
it started before: `pod_labels` writes the record, `group_by_uid` and
`pod_key_of_labels` read it back (kubecontainer.Pod and kuberuntime's labels.go).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from proto import core_pb2, cri_pb2, cri_pb2_grpc

# Labels set on every sandbox and container the kubelet creates.
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
LABEL_MANAGED = "flotilla.io/managed"

# A container ID as Kubernetes shows it in status.
CONTAINER_ID_PREFIX = "containerd://"


class CRIError(Exception):
    """A CRI call failed; `code` is the gRPC status."""

    def __init__(self, method: str, err: grpc.RpcError) -> None:
        self.code: grpc.StatusCode = err.code()
        self.details: str = err.details() or ""
        super().__init__(f"CRI {method}: {self.code.name}: {self.details}")


class Runtime:
    """One channel to containerd; every method is one CRI call."""

    def __init__(self, socket: str, *, timeout: float = 60.0) -> None:
        self.socket = socket
        self._channel = grpc.aio.insecure_channel(f"unix://{socket}")
        self._runtime = cri_pb2_grpc.RuntimeServiceStub(self._channel)
        self._images = cri_pb2_grpc.ImageServiceStub(self._channel)
        self.timeout = timeout

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, name: str, request: object, timeout: float | None = None) -> object:
        stub = self._images if name in ("PullImage", "ImageStatus", "ListImages", "RemoveImage") else self._runtime
        try:
            return await getattr(stub, name)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise CRIError(name, err) from None

    # ---------------------------------------------------------------- runtime

    async def version(self) -> cri_pb2.VersionResponse:
        reply = await self._call("Version", cri_pb2.VersionRequest(version="v1"), timeout=5)
        assert isinstance(reply, cri_pb2.VersionResponse)
        return reply

    async def status(self) -> cri_pb2.RuntimeStatus:
        reply = await self._call("Status", cri_pb2.StatusRequest(), timeout=5)
        assert isinstance(reply, cri_pb2.StatusResponse)
        return reply.status

    # ---------------------------------------------------------------- sandboxes

    async def run_pod_sandbox(self, config: cri_pb2.PodSandboxConfig) -> str:
        reply = await self._call("RunPodSandbox", cri_pb2.RunPodSandboxRequest(config=config))
        assert isinstance(reply, cri_pb2.RunPodSandboxResponse)
        return reply.pod_sandbox_id

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        await self._call("StopPodSandbox", cri_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        await self._call("RemovePodSandbox", cri_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))

    async def pod_sandbox_status(self, sandbox_id: str) -> cri_pb2.PodSandboxStatus:
        reply = await self._call("PodSandboxStatus", cri_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id))
        assert isinstance(reply, cri_pb2.PodSandboxStatusResponse)
        return reply.status

    async def pod_sandbox_info(self, sandbox_id: str) -> dict[str, str]:
        """The runtime's verbose details of a sandbox (containerd: "info" holds JSON with its pid)."""
        request = cri_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True)
        reply = await self._call("PodSandboxStatus", request)
        assert isinstance(reply, cri_pb2.PodSandboxStatusResponse)
        return dict(reply.info)

    async def list_pod_sandboxes(self, labels: dict[str, str] | None = None) -> list[cri_pb2.PodSandbox]:
        request = cri_pb2.ListPodSandboxRequest(filter=cri_pb2.PodSandboxFilter(label_selector=labels or {}))
        reply = await self._call("ListPodSandbox", request)
        assert isinstance(reply, cri_pb2.ListPodSandboxResponse)
        return list(reply.items)

    # ---------------------------------------------------------------- containers

    async def create_container(self, sandbox_id: str, config: cri_pb2.ContainerConfig,
                               sandbox_config: cri_pb2.PodSandboxConfig) -> str:
        reply = await self._call("CreateContainer", cri_pb2.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox_config))
        assert isinstance(reply, cri_pb2.CreateContainerResponse)
        return reply.container_id

    async def start_container(self, container_id: str) -> None:
        await self._call("StartContainer", cri_pb2.StartContainerRequest(container_id=container_id))

    async def stop_container(self, container_id: str, grace: int) -> None:
        # containerd waits `grace` seconds after the stop signal before SIGKILL.
        await self._call("StopContainer", cri_pb2.StopContainerRequest(container_id=container_id, timeout=grace),
                         timeout=grace + 30)

    async def remove_container(self, container_id: str) -> None:
        await self._call("RemoveContainer", cri_pb2.RemoveContainerRequest(container_id=container_id))

    async def list_containers(self, labels: dict[str, str] | None = None) -> list[cri_pb2.Container]:
        request = cri_pb2.ListContainersRequest(filter=cri_pb2.ContainerFilter(label_selector=labels or {}))
        reply = await self._call("ListContainers", request)
        assert isinstance(reply, cri_pb2.ListContainersResponse)
        return list(reply.containers)

    async def container_status(self, container_id: str) -> cri_pb2.ContainerStatus:
        reply = await self._call("ContainerStatus", cri_pb2.ContainerStatusRequest(container_id=container_id))
        assert isinstance(reply, cri_pb2.ContainerStatusResponse)
        return reply.status

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: float) -> cri_pb2.ExecSyncResponse:
        request = cri_pb2.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=max(1, int(timeout)))
        reply = await self._call("ExecSync", request, timeout=timeout + 10)
        assert isinstance(reply, cri_pb2.ExecSyncResponse)
        return reply

    async def exec_url(self, container_id: str, cmd: list[str], *, stdin: bool, tty: bool) -> str:
        """Where containerd's streaming server will run `cmd` interactively (CRI Exec; see streaming.py)."""
        request = cri_pb2.ExecRequest(container_id=container_id, cmd=cmd, tty=tty, stdin=stdin, stdout=True,
                                      stderr=not tty)  # a terminal has one output stream
        reply = await self._call("Exec", request)
        assert isinstance(reply, cri_pb2.ExecResponse)
        return reply.url

    async def attach_url(self, container_id: str, *, stdin: bool, tty: bool) -> str:
        """Where containerd's streaming server joins the container's own stdio (CRI Attach; see streaming.py)."""
        request = cri_pb2.AttachRequest(container_id=container_id, stdin=stdin, tty=tty, stdout=True,
                                        stderr=not tty)  # a terminal has one output stream
        reply = await self._call("Attach", request)
        assert isinstance(reply, cri_pb2.AttachResponse)
        return reply.url

    async def list_container_stats(self) -> list[cri_pb2.ContainerStats]:
        reply = await self._call("ListContainerStats", cri_pb2.ListContainerStatsRequest())
        assert isinstance(reply, cri_pb2.ListContainerStatsResponse)
        return list(reply.stats)

    # ---------------------------------------------------------------- images

    async def image_present(self, image: str) -> bool:
        reply = await self._call("ImageStatus", cri_pb2.ImageStatusRequest(image=cri_pb2.ImageSpec(image=image)))
        assert isinstance(reply, cri_pb2.ImageStatusResponse)
        return reply.HasField("image")

    async def pull_image(self, image: str, auth: cri_pb2.AuthConfig | None = None) -> str:
        """Pull `image`, with `auth` (a pod's imagePullSecret for its registry) when given."""
        request = cri_pb2.PullImageRequest(image=cri_pb2.ImageSpec(image=image), auth=auth)
        reply = await self._call("PullImage", request, timeout=600)
        assert isinstance(reply, cri_pb2.PullImageResponse)
        return reply.image_ref

    async def remove_image(self, image: str) -> None:
        await self._call("RemoveImage", cri_pb2.RemoveImageRequest(image=cri_pb2.ImageSpec(image=image)))

    async def list_images(self) -> list[cri_pb2.Image]:
        reply = await self._call("ListImages", cri_pb2.ListImagesRequest())
        assert isinstance(reply, cri_pb2.ListImagesResponse)
        return list(reply.images)


# ---------------------------------------------------------------- the runtime's record of pods


def pod_labels(pod: core_pb2.Pod) -> dict[str, str]:
    """The labels every sandbox and container of `pod` carries (containers add their name)."""
    return {LABEL_POD_UID: pod.metadata.uid, LABEL_POD_NAME: pod.metadata.name,
            LABEL_POD_NAMESPACE: pod.metadata.namespace, LABEL_MANAGED: "true"}


def pod_key_of_labels(labels: dict[str, str] | object) -> str | None:
    """The "namespace/name" work-queue key a sandbox or container belongs to, if it is the kubelet's."""
    get = getattr(labels, "get")  # noqa: B009 - protobuf maps and dicts alike
    ns, name = get(LABEL_POD_NAMESPACE, ""), get(LABEL_POD_NAME, "")
    return f"{ns}/{name}" if ns and name else None


@dataclass
class RuntimePod:
    """One pod uid's sandboxes and containers as the runtime lists them."""

    uid: str
    sandboxes: list[cri_pb2.PodSandbox] = field(default_factory=list)
    containers: list[cri_pb2.Container] = field(default_factory=list)

    def ready_sandbox(self) -> cri_pb2.PodSandbox | None:
        ready = [s for s in self.sandboxes if s.state == cri_pb2.SANDBOX_READY]
        return max(ready, key=lambda s: s.created_at) if ready else None

    def instances(self, name: str) -> list[cri_pb2.Container]:
        """Every instance of one container, newest (highest attempt) first."""
        found = [c for c in self.containers if c.metadata.name == name]
        return sorted(found, key=lambda c: (c.metadata.attempt, c.created_at), reverse=True)


def group_by_uid(sandboxes: list[cri_pb2.PodSandbox], containers: list[cri_pb2.Container]) -> dict[str, RuntimePod]:
    pods: dict[str, RuntimePod] = {}
    for s in sandboxes:
        uid = s.labels.get(LABEL_POD_UID, "")
        pods.setdefault(uid, RuntimePod(uid)).sandboxes.append(s)
    for c in containers:
        uid = c.labels.get(LABEL_POD_UID, "")
        pods.setdefault(uid, RuntimePod(uid)).containers.append(c)
    return pods
