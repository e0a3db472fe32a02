"""Container lifecycle hooks: `preStop`, run before a deleted pod's containers are told to stop.

When a pod is deleted gracefully, Kubernetes runs each container's
`lifecycle.preStop` handler — a command in the container (`exec`) or an HTTP
GET (`httpGet`, to the pod's IP unless `host` says otherwise) — and only then
sends SIGTERM; hook and SIGTERM share the pod's grace period. Its everyday use
is `preStop: exec: [sleep, "5"]`: the endpoints controller and every node's
proxy withdraw the pod meanwhile, so a server that stops accepting at SIGTERM
loses no request during a rolling update.

Hooks of all containers run at once, each bounded by the grace period; a hook
that fails or times out is reported (event `FailedPreStopHook`) and the
containers are stopped all the same, as in the kubelet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nodeagent.kubelet.probes import _http_get, _port
from nodeagent.kubelet.runtime import Runtime
from proto import core_pb2, cri_pb2

log = logging.getLogger(__name__)

Recorder = Callable[[core_pb2.Pod, str, str, str], object]


class HookError(Exception):
    """A hook ran but failed (non-zero exit, an HTTP error)."""


async def run_pre_stop(runtime: Runtime, pod: core_pb2.Pod, running: dict[str, str], grace: float,
                       record: Recorder) -> float:
    """Run the preStop hooks of `pod`'s running containers (name → container id); the seconds it took."""
    started = time.monotonic()
    hooks = [(c, running[c.name]) for c in pod.spec.containers
             if c.name in running and c.lifecycle.HasField("pre_stop")]
    if not hooks or grace <= 0:
        return 0.0
    results = await asyncio.gather(*(asyncio.wait_for(_run(runtime, pod, c, cid, grace), grace)
                                     for c, cid in hooks), return_exceptions=True)
    for (container, _), result in zip(hooks, results, strict=True):
        if isinstance(result, BaseException):
            why = "timed out" if isinstance(result, TimeoutError) else str(result)
            message = f"PreStopHook failed for container {container.name}: {why}"
            log.warning("%s/%s: %s", pod.metadata.namespace, pod.metadata.name, message)
            record(pod, "Warning", "FailedPreStopHook", message)
    return time.monotonic() - started


async def _run(runtime: Runtime, pod: core_pb2.Pod, container: core_pb2.Container, container_id: str,
               grace: float) -> None:
    handler = container.lifecycle.pre_stop
    if handler.HasField("exec"):
        reply: cri_pb2.ExecSyncResponse = await runtime.exec_sync(container_id, list(handler.exec.command), grace)
        if reply.exit_code != 0:
            raise HookError(f"command exited {reply.exit_code}: {reply.stderr.decode(errors='replace').strip()}")
    elif handler.HasField("http_get"):
        get = handler.http_get
        if not await _http_get(get.host or pod.status.pod_ip, _port(get.port, container), get.path or "/",
                               [(h.name, h.value) for h in get.http_headers]):
            raise HookError(f"HTTP GET {get.path or '/'} did not answer 2xx/3xx")
    else:
        log.warning("%s: preStop handler of %s has no action the kubelet supports", pod.metadata.name,
                    container.name)
