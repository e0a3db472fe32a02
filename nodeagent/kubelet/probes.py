"""Probes: the kubelet's checks of whether a container is alive, ready and started.

One asyncio task per (container instance, probe kind) runs the probe every
periodSeconds after initialDelaySeconds, and turns raw outcomes into a result
only after successThreshold successes or failureThreshold failures in a row, as
the kubelet's prober workers do. Results are read by the pod sync:

- liveness failed  -> the container is killed and restarted per restartPolicy;
- startup failed   -> the same; until startup succeeds, liveness and readiness wait;
- readiness        -> the container's `ready` and so the pod's Ready condition,
                      which the endpoints controller follows.

A changed result puts the pod's key on the pod work queue (`on_change`), so a
sync happens at once rather than at the next periodic resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nodeagent.kubelet.runtime import CRIError, Runtime
from proto import core_pb2

log = logging.getLogger(__name__)

LIVENESS, READINESS, STARTUP = "liveness", "readiness", "startup"


@dataclass
class _Worker:
    container_id: str
    task: asyncio.Task[None]


@dataclass
class ProbeTarget:
    """What a probe needs to know about one running container instance."""

    pod_key: str
    pod_uid: str
    pod_ip: str
    container: core_pb2.Container
    container_id: str
    started_at: float  # wall clock, seconds
    was_ready: bool = False  # the API's last word, so an adopted container does not flap to unready

    @property
    def pod(self) -> core_pb2.Pod:
        """Enough of the pod to name it in an Event."""
        pod = core_pb2.Pod()
        pod.metadata.namespace, _, pod.metadata.name = self.pod_key.partition("/")
        pod.metadata.uid = self.pod_uid
        return pod


@dataclass
class ProbeManager:
    runtime: Runtime
    on_change: Callable[[str], None]
    default_period: float = 10.0
    default_timeout: float = 1.0
    # Records an Event about a pod (type, reason, message), e.g. Unhealthy when a probe fails.
    record: Callable[[core_pb2.Pod, str, str, str], None] = lambda *_: None
    _workers: dict[tuple[str, str, str], _Worker] = field(default_factory=dict)
    _results: dict[tuple[str, str], bool] = field(default_factory=dict)

    # ---------------------------------------------------------------- results

    def ready(self, container_id: str, container: core_pb2.Container) -> bool:
        if not self.started(container_id, container):
            return False
        if not container.HasField("readiness_probe"):
            return True
        return self._results.get((container_id, READINESS), False)

    def started(self, container_id: str, container: core_pb2.Container) -> bool:
        if not container.HasField("startup_probe"):
            return True
        return self._results.get((container_id, STARTUP), False)

    def failed(self, container_id: str) -> str:
        """"liveness" or "startup" if that probe has failed this container, else ""."""
        for kind in (LIVENESS, STARTUP):
            if self._results.get((container_id, kind)) is False:
                return kind
        return ""

    # ---------------------------------------------------------------- workers

    def ensure(self, target: ProbeTarget) -> None:
        """Run this container instance's probes (a new instance replaces the old workers)."""
        spec = target.container
        for kind, probe, present in ((LIVENESS, spec.liveness_probe, spec.HasField("liveness_probe")),
                                     (READINESS, spec.readiness_probe, spec.HasField("readiness_probe")),
                                     (STARTUP, spec.startup_probe, spec.HasField("startup_probe"))):
            if not present:
                continue
            key = (target.pod_uid, target.container.name, kind)
            worker = self._workers.get(key)
            if worker is not None and worker.container_id == target.container_id:
                continue
            if worker is not None:
                worker.task.cancel()
            if kind == READINESS:
                self._results[(target.container_id, kind)] = target.was_ready
            task = asyncio.get_running_loop().create_task(self._run(kind, probe, target),
                                                          name=f"probe {kind} {target.pod_key}/{target.container.name}")
            self._workers[key] = _Worker(target.container_id, task)

    def stop_container(self, pod_uid: str, name: str) -> None:
        for kind in (LIVENESS, READINESS, STARTUP):
            worker = self._workers.pop((pod_uid, name, kind), None)
            if worker is not None:
                worker.task.cancel()
                self._results.pop((worker.container_id, kind), None)

    def stop_pod(self, pod_uid: str) -> None:
        for uid, name, _ in [k for k in self._workers if k[0] == pod_uid]:
            self.stop_container(uid, name)

    def stop_all(self) -> None:
        for worker in self._workers.values():
            worker.task.cancel()
        self._workers.clear()

    async def _run(self, kind: str, probe: core_pb2.Probe, target: ProbeTarget) -> None:
        period = probe.period_seconds or self.default_period
        timeout = probe.timeout_seconds or self.default_timeout
        success_threshold = probe.success_threshold or 1
        failure_threshold = probe.failure_threshold or 3
        delay = target.started_at + probe.initial_delay_seconds - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        successes = failures = 0
        key = (target.container_id, kind)
        while True:
            if kind != STARTUP and not self.started(target.container_id, target.container):
                await asyncio.sleep(period)
                continue
            ok = await self._probe_once(probe, target, timeout)
            if not ok:
                self.record(target.pod, "Warning", "Unhealthy", f"{kind.capitalize()} probe failed")
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            before = self._results.get(key)
            if successes >= success_threshold:
                self._results[key] = True
            elif failures >= failure_threshold:
                self._results[key] = False
            if self._results.get(key) != before:
                log.info("%s probe of %s/%s: %s", kind, target.pod_key, target.container.name,
                         "success" if self._results.get(key) else "failure")
                self.on_change(target.pod_key)
            if kind != READINESS and self._results.get(key) is False:
                return  # the container is being killed; its successor gets a new worker
            if kind == STARTUP and self._results.get(key):
                return  # startup probes stop once they succeed
            await asyncio.sleep(period)

    async def _probe_once(self, probe: core_pb2.Probe, target: ProbeTarget, timeout: float) -> bool:
        try:
            if probe.HasField("exec"):
                reply = await self.runtime.exec_sync(target.container_id, list(probe.exec.command), timeout)
                return reply.exit_code == 0
            if probe.HasField("http_get"):
                get = probe.http_get
                port = _port(get.port, target.container)
                return await asyncio.wait_for(_http_get(get.host or target.pod_ip, port, get.path or "/",
                                                        [(h.name, h.value) for h in get.http_headers]), timeout)
            if probe.HasField("tcp_socket"):
                port = _port(probe.tcp_socket.port, target.container)
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(probe.tcp_socket.host or target.pod_ip, port), timeout)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return True
        except (OSError, TimeoutError, CRIError, ValueError) as err:
            log.debug("probe of %s/%s failed: %s", target.pod_key, target.container.name, err)
            return False
        log.warning("probe of %s/%s has no handler the kubelet supports", target.pod_key, target.container.name)
        return True


def _port(value: str, container: core_pb2.Container) -> int:
    """An IntOrString port: a number, or the name of one of the container's ports."""
    if value.isdigit():
        return int(value)
    for port in container.ports:
        if port.name == value:
            return port.container_port
    raise ValueError(f"no container port named {value!r}")


async def _http_get(host: str, port: int, path: str, headers: list[tuple[str, str]]) -> bool:
    """An HTTP/1.1 GET; any status from 200 to 399 is success, as in the kubelet."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: flotilla-probe\r\n"
                     f"{extra}Connection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split()
        return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
