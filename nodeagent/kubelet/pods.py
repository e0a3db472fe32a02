"""Pod sync: make the runtime match one pod's spec, then report what is true.

`PodSyncer.sync(key)` is the kubelet's syncPod, called by the pod workers for a
"namespace/name" key whenever the pod changed in the API, the runtime changed
(PLEG), a probe result changed, a back-off ended, or the periodic resync came.
It reads the pod from the informer's cache and the runtime's current state
through CRI (by the labels the kubelet puts on everything), then does the one
of three things that applies:

- the pod is gone from the API, or it is an older pod of the same name: kill
  whatever of it still runs (orphans);
- the pod is being deleted: stop its containers with its grace period (SIGTERM,
  then SIGKILL), remove its sandbox, containers, cgroup and volumes, and delete
  the pod object with grace 0 — the signal the apiserver waits for;
- otherwise converge: a ready sandbox (CNI gives it the pod IP), each container
  running, restarted per restartPolicy with crash-loop back-off, killed when a
  liveness or startup probe fails — and write the pod's status if it changed.

Nothing about containers is remembered between syncs except back-off timers and
the errors of calls that failed (image pulls, sandboxes, CreateContainer): the
runtime is asked every time, so a restarted kubelet simply carries on
(`attempt` in the CRI metadata is the restart count).

A pod the runtime cannot start says why where the user looks, as Kubernetes
does — a FailedCreatePodSandBox event while the pod stays Pending, or the
container `waiting` with CreateContainerError / RunContainerError and the
runtime's message plus a `Failed` event — and is tried again after a back-off
(10 s doubling, as a crash loop), with one line in the kubelet's log per try.

This module decides and acts, as kuberuntime_manager.go's SyncPod and KillPod;
what it tells the runtime comes from sandbox.py (with dns.py), containers.py
and images.py, and what it reports from status.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from client import Client
from client.informer import Store, split_key
from nodeagent.kubelet import status as podstatus
from nodeagent.kubelet.backoff import Backoff
from nodeagent.kubelet.cgroups import node_pid_capacity, remove_cgroups, set_pids_limit
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.containers import environment, generate_container_config
from nodeagent.kubelet.eviction import EvictionManager
from nodeagent.kubelet.images import ImageError, ImageManager
from nodeagent.kubelet.lifecycle import run_pre_stop
from nodeagent.kubelet.node import now_timestamp
from nodeagent.kubelet.probes import ProbeManager, ProbeTarget
from nodeagent.kubelet.runtime import (
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    CRIError,
    Runtime,
    RuntimePod,
    group_by_uid,
)
from nodeagent.kubelet.sandbox import cgroup_parent, generate_pod_sandbox_config
from nodeagent.kubelet.volumes import ConfigError, Volumes, VolumesNotReady
from proto import core_pb2, cri_pb2
from proto.errors import Conflict, NotFound

log = logging.getLogger(__name__)

DEFAULT_GRACE = 30
START_ERROR_EXIT = 128  # the exit code containerd gives a container whose start failed (reason StartError)
ORPHAN_GRACE = 2


class NetworkNotReady(Exception):
    """The node has no pod CIDR yet, so sandboxes cannot get an IP: retry later."""


@dataclass
class RuntimeFailures:
    """Runtime calls that failed for a pod — its sandbox, a container's CreateContainer — per (uid, what).

    Keeps the message the status shows and backs the next try off as a crash loop does, so a
    pod that cannot start is neither hammered nor silent.
    """

    backoff: Backoff
    _last: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)  # -> (message, failed at)

    def holding(self, key: tuple[str, str]) -> tuple[str, float] | None:
        """(message, seconds left) while `key` waits out the back-off after its last failure."""
        last = self._last.get(key)
        if last is None:
            return None
        left = self.backoff.remaining(key, last[1])
        return (last[0], left) if left > 0 else None

    def failed(self, key: tuple[str, str], message: str) -> float:
        """Record a failure; returns the wait before the next try."""
        now = time.time()
        self.backoff.next(key, now)
        self._last[key] = (message, now)
        return self.backoff.delay(key)

    def succeeded(self, key: tuple[str, str]) -> None:
        self._last.pop(key, None)

    def forget_pod(self, uid: str) -> None:
        self.backoff.forget_pod(uid)
        for key in [k for k in self._last if k[0] == uid]:
            del self._last[key]


@dataclass
class PodSyncer:
    client: Client
    runtime: Runtime
    config: KubeletConfig
    pods: Store[core_pb2.Pod]
    probes: ProbeManager
    requeue_after: Callable[[str, float], None]
    network_ready: Callable[[], bool]
    # Records an Event about a pod (type, reason, message): `kctl describe pod` shows them.
    record: Callable[[core_pb2.Pod, str, str, str], None] = lambda *_: None
    # Admits new pods and chooses pods to evict under disk pressure (eviction.py); set once wired.
    eviction: EvictionManager | None = None
    backoff: Backoff = field(init=False)  # crash-loop back-off per (pod uid, container)
    volumes: Volumes = field(init=False)
    images: ImageManager = field(init=False)
    failures: RuntimeFailures = field(init=False)
    _graces: dict[str, int] = field(default_factory=dict)
    # Pods this kubelet evicted -> the Failed status it wrote, until the informer shows it (uid -> status).
    _evicted: dict[str, core_pb2.PodStatus] = field(default_factory=dict)
    _orphan_dirs_checked: bool = False

    def __post_init__(self) -> None:
        config = self.config
        self.volumes = Volumes(self.client, config.root_dir, backoff_initial=config.volume_backoff_initial,
                               backoff_max=config.volume_backoff_max, mount_timeout=config.volume_mount_timeout,
                               storage_check_period=config.eviction_monitoring_period)
        self.images = ImageManager(self.runtime, self.config, self.record,
                                   lambda namespace, name: self.volumes.secret(namespace, name, True))
        self.backoff = Backoff(initial=self.config.backoff_initial, maximum=self.config.backoff_max,
                               reset=self.config.backoff_reset)
        self.failures = RuntimeFailures(Backoff(initial=config.backoff_initial, maximum=config.backoff_max,
                                                reset=config.backoff_reset))

    # ---------------------------------------------------------------- entry point

    async def sync(self, key: str) -> None:
        namespace, name = split_key(key)
        pod = self.pods.get(key)
        selector = {LABEL_POD_NAMESPACE: namespace, LABEL_POD_NAME: name}
        runtime_pods = group_by_uid(await self.runtime.list_pod_sandboxes(selector),
                                    await self.runtime.list_containers(selector))
        for uid, rp in runtime_pods.items():
            if pod is None or uid != pod.metadata.uid:
                log.info("killing orphaned pod %s (uid %s)", key, uid)
                await self.kill_pod(rp, self._graces.pop(uid, ORPHAN_GRACE))
        if pod is None or not self._orphan_dirs_checked:
            # A pod gone from the API (or the first sync since start): any pod's directory left behind
            # by a pod that never got a container (force-deleted while its volumes failed, deleted
            # while the kubelet was down) goes with its mounts.
            self._orphan_dirs_checked = True
            await self._cleanup_orphaned_pod_dirs()
        if pod is None:
            return
        uid = pod.metadata.uid
        rp = runtime_pods.get(uid, RuntimePod(uid))
        self._graces[uid] = _grace_of(pod)
        if pod.metadata.HasField("deletion_timestamp"):
            await self.terminate(pod, rp)
        elif pod.status.phase in podstatus.TERMINAL_PHASES or uid in self._evicted:
            await self._stop_finished(pod, rp)
        elif self.eviction is not None and (why := self.eviction.requested(uid)):
            await self._evict(pod, rp, why)  # the eviction manager chose it: the node's disk is short
        elif self.eviction is None or await self.eviction.admit(pod, rp):
            await self._converge(pod, rp)

    # ---------------------------------------------------------------- termination

    async def terminate(self, pod: core_pb2.Pod, rp: RuntimePod) -> None:
        """Graceful deletion: stop, clean up, then remove the pod object for good."""
        grace = pod.metadata.deletion_grace_period_seconds or _grace_of(pod)
        log.info("stopping pod %s/%s (grace %ds)", pod.metadata.namespace, pod.metadata.name, grace)
        running = {c.metadata.name: c.id for c in rp.containers if c.state == cri_pb2.CONTAINER_RUNNING}
        # preStop hooks first, within the grace period; SIGTERM gets what is left (at least 2 s, as in Kubernetes).
        spent = await run_pre_stop(self.runtime, pod, running, grace, self.record)
        for name in running:
            self.record(pod, "Normal", "Killing", f"Stopping container {name}")
        await self.kill_pod(rp, max(grace - int(spent), 2) if spent else grace)
        try:
            await self.client.delete(core_pb2.Pod, pod.metadata.name, pod.metadata.namespace,
                                     grace_period_seconds=0, uid=pod.metadata.uid)
        except (NotFound, Conflict):
            pass  # already gone, or a new pod of the same name: nothing of ours to delete
        self._graces.pop(pod.metadata.uid, None)

    async def kill_pod(self, rp: RuntimePod, grace: int) -> None:
        """Stop every container (SIGTERM, SIGKILL after `grace`), then remove all traces of the pod."""
        self.probes.stop_pod(rp.uid)
        running = [c for c in rp.containers if c.state == cri_pb2.CONTAINER_RUNNING]
        await asyncio.gather(*(self._stop_quietly(c.id, grace) for c in running))
        for sandbox in rp.sandboxes:
            await _ignore_not_found(self.runtime.stop_pod_sandbox(sandbox.id))
        for container in rp.containers:
            await _ignore_not_found(self.runtime.remove_container(container.id))
        for sandbox in rp.sandboxes:
            await _ignore_not_found(self.runtime.remove_pod_sandbox(sandbox.id))
        # containerd leaves the pod-level cgroup behind under cgroups v1. (Threads: rmdir may wait
        # for the kernel to empty a cgroup, and the loop must keep serving other pods meanwhile.)
        await asyncio.to_thread(remove_cgroups, cgroup_parent(self.config, rp.uid))
        await self.volumes.tear_down(rp.uid)
        self.backoff.forget_pod(rp.uid)
        self.failures.forget_pod(rp.uid)
        self.images.forget_pod(rp.uid)
        self._evicted.pop(rp.uid, None)

    async def _cleanup_orphaned_pod_dirs(self) -> None:
        """The kubelet's cleanupOrphanedPodDirs: remove directories of pods neither in the API nor running."""
        on_disk = await asyncio.to_thread(self.volumes.pod_uids_on_disk)
        running = set(group_by_uid(await self.runtime.list_pod_sandboxes(), await self.runtime.list_containers()))
        # Read last: a pod is in the cache before any worker makes its directory, so every directory
        # listed above whose pod is still wanted is known here.
        known = {p.metadata.uid for p in self.pods.list()}
        for uid in on_disk:
            if uid not in known and uid not in running:
                log.info("removing the directory of orphaned pod %s", uid)
                await self.volumes.tear_down(uid)

    async def _stop_quietly(self, container_id: str, grace: int) -> None:
        try:
            await self.runtime.stop_container(container_id, grace)
        except CRIError as err:
            log.warning("stopping container %s: %s", container_id[:12], err)

    async def _stop_finished(self, pod: core_pb2.Pod, rp: RuntimePod) -> None:
        """A pod that Succeeded or Failed keeps its containers (for logs) but not its sandbox or volumes."""
        self.probes.stop_pod(pod.metadata.uid)
        for sandbox in rp.sandboxes:
            if sandbox.state == cri_pb2.SANDBOX_READY:
                await _ignore_not_found(self.runtime.stop_pod_sandbox(sandbox.id))
        evicted = self._evicted.get(pod.metadata.uid)
        if evicted is not None and pod.status.phase not in podstatus.TERMINAL_PHASES:
            await podstatus.update_pod_status(self.client, pod, evicted)  # the first write was lost: again
        # Nothing will run in it again: its emptyDirs, tmpfs and subPath binds go (the logs stay).
        await self.volumes.tear_down_volumes(pod.metadata.uid)

    # ---------------------------------------------------------------- converging

    async def _converge(self, pod: core_pb2.Pod, rp: RuntimePod) -> None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        sandbox_config = generate_pod_sandbox_config(pod, attempt=len(rp.sandboxes),
                                                     pod_dir=self.volumes.pod_dir(pod.metadata.uid), config=self.config)
        sandbox = rp.ready_sandbox()
        if sandbox is None:
            if _all_done(pod, rp):
                await self._report_status(pod, rp, "")  # nothing will run again: just report it
                return
            if not pod.spec.host_network and not self.network_ready():
                raise NetworkNotReady("the node's pod network is not ready (no pod CIDR yet)")
            if not await self._set_up_volumes(pod, key):
                await self._report_status(pod, rp, "")  # Pending, its containers ContainerCreating
                return
            created = await self._run_pod_sandbox(pod, key, sandbox_config)
            if created is None:
                await self._report_status(pod, rp, "")  # Pending: the events say why
                return
            sandbox_id = created
        else:
            sandbox_id = sandbox.id
            sandbox_config.metadata.attempt = sandbox.metadata.attempt
            # ConfigMap and Secret volumes follow their objects while the pod runs (atomic swap).
            await self.volumes.refresh(pod)
            message = await self.volumes.storage_over_limit(pod)
            if message:
                await self._evict(pod, rp, message)
                return
        sandbox_status = await self.runtime.pod_sandbox_status(sandbox_id)
        pod_ip = self.config.node_ip if pod.spec.host_network else sandbox_status.network.ip

        holds: dict[str, tuple[str, str]] = {}
        initialized = True
        # Init containers run one at a time, each to success, before any app container starts.
        init_policy = "Never" if pod.spec.restart_policy == "Never" else "OnFailure"
        for spec in pod.spec.init_containers:
            if await self._succeeded(rp, spec.name):
                continue
            initialized = False
            hold = await self._converge_container(pod, key, spec, rp, sandbox_id, sandbox_config, pod_ip,
                                                  policy=init_policy)
            if hold is not None:
                holds[spec.name] = hold
            break
        for spec in pod.spec.containers if initialized else []:
            hold = await self._converge_container(pod, key, spec, rp, sandbox_id, sandbox_config, pod_ip,
                                                  policy=pod.spec.restart_policy or "Always")
            if hold is not None:
                holds[spec.name] = hold
        selector = {LABEL_POD_UID: pod.metadata.uid}
        rp = group_by_uid([], await self.runtime.list_containers(selector)).get(pod.metadata.uid, RuntimePod(""))
        await self._report_status(pod, rp, pod_ip, holds)

    async def _run_pod_sandbox(self, pod: core_pb2.Pod, key: str,
                               sandbox_config: cri_pb2.PodSandboxConfig) -> str | None:
        """The pod's cgroup with its pids limits, then RunPodSandbox; None (and an event) if it failed.

        A failed sandbox is tried again after a back-off; until then the pod stays Pending.
        """
        failure_key = (pod.metadata.uid, "")
        holding = self.failures.holding(failure_key)
        if holding is not None:
            self.requeue_after(key, holding[1] + 0.05)
            return None
        start = time.monotonic()
        try:
            await asyncio.to_thread(self._ensure_pod_cgroup, pod.metadata.uid)
            sandbox_id = await self.runtime.run_pod_sandbox(sandbox_config)
        except (CRIError, OSError) as err:
            message = err.details if isinstance(err, CRIError) else f"unable to ensure pod container exists: {err}"
            delay = self.failures.failed(failure_key, message)
            log.warning("pod %s: failed to create pod sandbox (retry in %gs): %s", key, delay, message)
            self.record(pod, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {message}")
            self.requeue_after(key, delay + 0.05)
            return None
        self.failures.succeeded(failure_key)
        log.info("started sandbox %s for %s in %.2fs", sandbox_id[:12], key, time.monotonic() - start)
        return sandbox_id

    def _ensure_pod_cgroup(self, uid: str) -> None:
        """pids.max of the node's pods (capacity less the reserve) and of this pod, before anything runs in it."""
        config = self.config
        if config.system_reserved_pids >= 0:
            set_pids_limit(config.cgroup_root, node_pid_capacity() - config.system_reserved_pids)
        if set_pids_limit(cgroup_parent(config, uid), config.pod_pids_limit) is None:
            log.warning("no pids cgroup controller on this node: pod_pids_limit is not enforced")

    async def _set_up_volumes(self, pod: core_pb2.Pod, key: str) -> bool:
        """The volume manager's WaitForAttachAndMount: True when every volume is ready for the pod to start.

        Otherwise a FailedMount event per volume that is not, and another try after a back-off
        (the pod is requeued: a ConfigMap created meanwhile is found then).
        """
        uid = pod.metadata.uid
        wait = self.volumes.retry_in(uid)
        if wait > 0:
            self.requeue_after(key, wait + 0.05)
            return False
        try:
            await self.volumes.set_up(pod)
            return True
        except VolumesNotReady as err:
            for failure in err.failures:
                log.info("pod %s: %s", key, failure)
                self.record(pod, "Warning", "FailedMount", str(failure))
            delay, timed_out = self.volumes.set_up_failed(uid)
            if timed_out:
                self.record(pod, "Warning", "FailedMount", err.timeout_message())
            self.requeue_after(key, delay + 0.05)
            return False

    async def _evict(self, pod: core_pb2.Pod, rp: RuntimePod, message: str) -> None:
        """The eviction manager's evictPod for local storage: kill at once, Failed/Evicted, volumes freed."""
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        log.warning("evicting pod %s: %s", key, message)
        self.record(pod, "Warning", "Evicted", message)
        self.probes.stop_pod(pod.metadata.uid)
        running = [c for c in rp.containers if c.state == cri_pb2.CONTAINER_RUNNING]
        for container in running:
            self.record(pod, "Normal", "Killing", f"Stopping container {container.metadata.name}")
        await asyncio.gather(*(self._stop_quietly(c.id, 0) for c in running))
        for sandbox in rp.sandboxes:
            await _ignore_not_found(self.runtime.stop_pod_sandbox(sandbox.id))
        selector = {LABEL_POD_UID: pod.metadata.uid}
        rp = group_by_uid([], await self.runtime.list_containers(selector)).get(pod.metadata.uid, RuntimePod(""))
        status = await self._pod_status(pod, rp, pod.status.pod_ip)
        status = podstatus.evicted(status, message, now=now_timestamp())
        self._evicted[pod.metadata.uid] = status
        await podstatus.update_pod_status(self.client, pod, status)
        await self.volumes.tear_down_volumes(pod.metadata.uid)

    async def _converge_container(
        self, pod: core_pb2.Pod, key: str, spec: core_pb2.Container, rp: RuntimePod, sandbox_id: str,
        sandbox_config: cri_pb2.PodSandboxConfig, pod_ip: str, *, policy: str,
    ) -> tuple[str, str] | None:
        """Bring one container to where its spec wants it; returns a waiting (reason, message) if held back."""
        uid = pod.metadata.uid
        instances = rp.instances(spec.name)
        latest = instances[0] if instances else None
        if latest is not None and latest.state == cri_pb2.CONTAINER_RUNNING:
            failed = self.probes.failed(latest.id)
            if latest.pod_sandbox_id != sandbox_id:
                reason = "its sandbox was replaced"
            elif failed:
                reason = f"it failed its {failed} probe"
            else:
                status = await self.runtime.container_status(latest.id)
                was_ready = any(c.name == spec.name and c.ready and c.container_id.endswith(latest.id)
                                for c in pod.status.container_statuses)
                self.probes.ensure(ProbeTarget(key, uid, pod_ip, spec, latest.id, status.started_at / 1e9,
                                               was_ready))
                return None
            log.info("killing container %s of %s: %s", spec.name, key, reason)
            self.record(pod, "Normal", "Killing", f"Container {spec.name} {reason}, it will be killed and "
                                                  "re-created")
            self.probes.stop_container(uid, spec.name)
            await self._stop_quietly(latest.id, _grace_of(pod))
            latest = await self._refresh(latest)
        attempt = 0
        if latest is not None and latest.state == cri_pb2.CONTAINER_CREATED:
            # Created but never started (a start that failed half-way): start afresh under its
            # attempt number, which containerd's container names include.
            await _ignore_not_found(self.runtime.remove_container(latest.id))
            attempt = latest.metadata.attempt
            latest = None
            instances = instances[1:]
        if latest is not None:
            status = await self.runtime.container_status(latest.id)
            if not _should_restart(policy, status.exit_code):
                return None
            remaining = self.backoff.remaining((uid, spec.name), status.finished_at / 1e9)
            if remaining > 0:
                self.requeue_after(key, remaining + 0.05)
                self.record(pod, "Warning", "BackOff", "Back-off restarting failed container")
                return ("CrashLoopBackOff",
                        f"back-off {_seconds(self.backoff.delay((uid, spec.name)))} restarting failed "
                        f"container={spec.name} pod={pod.metadata.name}_{pod.metadata.namespace}({uid})")
            self.backoff.next((uid, spec.name), status.finished_at / 1e9)
            attempt = latest.metadata.attempt + 1
        hold = await self._start_container(pod, spec, sandbox_id, sandbox_config, attempt, pod_ip)
        if hold is not None and hold[0] == "RunContainerError" and not _should_restart(policy, START_ERROR_EXIT):
            hold = None  # it will not be tried again: its status is the StartError it ended with
        # Keep the instance before the new one (lastState, `logs --previous`); older ones go.
        for old in instances[1:]:
            await _ignore_not_found(self.runtime.remove_container(old.id))
        return hold

    async def _succeeded(self, rp: RuntimePod, name: str) -> bool:
        """Whether the newest instance of a container exited 0 (an init container that is done)."""
        instances = rp.instances(name)
        if not instances or instances[0].state != cri_pb2.CONTAINER_EXITED:
            return False
        status = await self._status_or_none(instances[0].id)
        return status is not None and status.exit_code == 0

    async def _refresh(self, container: cri_pb2.Container) -> cri_pb2.Container:
        listed = await self.runtime.list_containers({LABEL_POD_UID: container.labels[LABEL_POD_UID]})
        return next((c for c in listed if c.id == container.id), container)

    async def _start_container(self, pod: core_pb2.Pod, spec: core_pb2.Container, sandbox_id: str,
                               sandbox_config: cri_pb2.PodSandboxConfig, attempt: int,
                               pod_ip: str) -> tuple[str, str] | None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        failure_key = (pod.metadata.uid, spec.name)
        holding = self.failures.holding(failure_key)
        if holding is not None:
            # CreateContainer failed a moment ago: wait out the back-off, still saying why.
            self.requeue_after(key, holding[1] + 0.05)
            return ("CreateContainerError", holding[0])
        try:
            image = await self.images.ensure_image_exists(pod, spec)
        except ImageError as err:
            # Failed pulls back off like crashing containers: the pod is synced again when the wait ends.
            self.requeue_after(key, err.retry_after + 0.05)
            return (err.reason, str(err))
        try:
            env = await environment(pod, spec, pod_ip=pod_ip, host_ip=self.config.node_ip, volumes=self.volumes)
            mounts = await self.volumes.mounts(pod, spec)
        except ConfigError as err:
            self.requeue_after(key, self.config.backoff_initial)
            self.record(pod, "Warning", "Failed", f"Error: {err}")
            return (err.reason, str(err))
        config = generate_container_config(pod, spec, image=image, attempt=attempt, env=env, mounts=mounts)
        try:
            try:
                container_id = await self.runtime.create_container(sandbox_id, config, sandbox_config)
            except CRIError as err:
                delay = self.failures.failed(failure_key, err.details)
                self.requeue_after(key, delay + 0.05)
                return self._start_failed(pod, spec, "CreateContainerError", err)
            self.failures.succeeded(failure_key)
            self.record(pod, "Normal", "Created", f"Created container {spec.name}")
            try:
                await self.runtime.start_container(container_id)
            except CRIError as err:
                # The instance stays, exited with the runtime's StartError: the crash-loop back-off
                # and restartPolicy decide what comes next, as for a container that exited.
                return self._start_failed(pod, spec, "RunContainerError", err)
        finally:
            # The started container holds its own copy of each subPath bind; the node's goes now.
            await self.volumes.release_sub_paths(pod, spec)
        self.record(pod, "Normal", "Started", f"Started container {spec.name}")
        return None

    def _start_failed(self, pod: core_pb2.Pod, spec: core_pb2.Container, reason: str,
                      err: CRIError) -> tuple[str, str]:
        """One log line and a `Failed` event; the container waits with `reason` and the runtime's message."""
        log.warning("pod %s/%s container %s: %s: %s", pod.metadata.namespace, pod.metadata.name, spec.name,
                    reason, err.details)
        self.record(pod, "Warning", "Failed", f"Error: {err.details}")
        return (reason, err.details)

    # ---------------------------------------------------------------- status

    async def _report_status(self, pod: core_pb2.Pod, rp: RuntimePod, pod_ip: str,
                             holds: dict[str, tuple[str, str]] | None = None) -> None:
        """GetPodStatus, then generateAPIPodStatus; written only when it differs from what the pod shows."""
        new = await self._pod_status(pod, rp, pod_ip, holds)
        if new != pod.status:
            await podstatus.update_pod_status(self.client, pod, new)

    async def _pod_status(self, pod: core_pb2.Pod, rp: RuntimePod, pod_ip: str,
                          holds: dict[str, tuple[str, str]] | None = None) -> core_pb2.PodStatus:
        holds = holds or {}
        policy = pod.spec.restart_policy or "Always"
        init_policy = "Never" if policy == "Never" else "OnFailure"
        init_views = [await self._view(pod, spec, rp, holds, init_policy) for spec in pod.spec.init_containers]
        views = [await self._view(pod, spec, rp, holds, policy) for spec in pod.spec.containers]
        return podstatus.pod_status(pod, init_views, views, host_ip=self.config.node_ip, pod_ip=pod_ip,
                                    now=now_timestamp())

    async def _view(self, pod: core_pb2.Pod, spec: core_pb2.Container, rp: RuntimePod,
                    holds: dict[str, tuple[str, str]], policy: str) -> podstatus.ContainerView:
        instances = rp.instances(spec.name)
        latest = await self._status_or_none(instances[0].id) if instances else None
        previous = await self._status_or_none(instances[1].id) if len(instances) > 1 else None
        view = podstatus.ContainerView(spec, latest, previous)
        hold = holds.get(spec.name) or self.images.pull_error(pod.metadata.uid, spec.name)
        if hold is not None:
            view.waiting_reason, view.waiting_message = hold
        if latest is not None and latest.state == cri_pb2.CONTAINER_RUNNING:
            view.ready = self.probes.ready(latest.id, spec)
            view.started = self.probes.started(latest.id, spec)
        if latest is not None and latest.state == cri_pb2.CONTAINER_EXITED:
            view.will_restart = _should_restart(policy, latest.exit_code)
        return view

    async def _status_or_none(self, container_id: str) -> cri_pb2.ContainerStatus | None:
        try:
            return await self.runtime.container_status(container_id)
        except CRIError:
            return None


# ---------------------------------------------------------------- helpers


def _grace_of(pod: core_pb2.Pod) -> int:
    if pod.spec.HasField("termination_grace_period_seconds"):
        return int(pod.spec.termination_grace_period_seconds)
    return DEFAULT_GRACE


def _should_restart(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def _all_done(pod: core_pb2.Pod, rp: RuntimePod) -> bool:
    """Every container ran and exited for good (restartPolicy says none comes back)."""
    policy = pod.spec.restart_policy or "Always"
    if policy == "Always" or not rp.sandboxes:
        return False
    for spec in pod.spec.containers:
        instances = rp.instances(spec.name)
        if not instances or instances[0].state != cri_pb2.CONTAINER_EXITED:
            return False
        if policy == "OnFailure":
            return False  # the exit code decides; the normal path handles it
    return True


def _seconds(value: float) -> str:
    return f"{value:g}s"


async def _ignore_not_found(call: Awaitable[None]) -> None:
    try:
        await call
    except CRIError as err:
        if err.code != grpc.StatusCode.NOT_FOUND:
            log.warning("%s", err)
