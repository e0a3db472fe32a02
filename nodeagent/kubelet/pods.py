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
image pull errors: the runtime is asked every time, so a restarted kubelet
simply carries on (`attempt` in the CRI metadata is the restart count).
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from client import Client
from client.informer import Store, split_key
from nodeagent.kubelet import status as podstatus
from nodeagent.kubelet.backoff import Backoff
from nodeagent.kubelet.cgroups import remove_cgroups
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.lifecycle import run_pre_stop
from nodeagent.kubelet.node import now_timestamp
from nodeagent.kubelet.probes import ProbeManager, ProbeTarget
from nodeagent.kubelet.runtime import (
    LABEL_CONTAINER_NAME,
    LABEL_MANAGED,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    CRIError,
    Runtime,
)
from nodeagent.kubelet.volumes import ConfigError, Volumes
from proto import core_pb2, cri_pb2
from proto.errors import Conflict, NotFound
from proto.quantity import int_value, milli_value

log = logging.getLogger(__name__)

CPU_PERIOD = 100_000  # microseconds: CFS quota is expressed against this period
MIN_SHARES = 2  # what a pod without a cpu request gets (BestEffort), as in the kubelet
DEFAULT_GRACE = 30
ORPHAN_GRACE = 2


class NetworkNotReady(Exception):
    """The node has no pod CIDR yet, so sandboxes cannot get an IP: retry later."""


class ImageError(Exception):
    """The container's image cannot be had; `reason` is what its status shows (ErrImagePull, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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


def pod_key_of_labels(labels: dict[str, str] | object) -> str | None:
    get = getattr(labels, "get")  # noqa: B009 - protobuf maps and dicts alike
    ns, name = get(LABEL_POD_NAMESPACE, ""), get(LABEL_POD_NAME, "")
    return f"{ns}/{name}" if ns and name else None


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
    backoff: Backoff = field(init=False)
    volumes: Volumes = field(init=False)
    _pull_errors: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    _graces: dict[str, int] = field(default_factory=dict)
    _pull_failed_at: dict[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.volumes = Volumes(self.client, self.config.root_dir)
        self.backoff = Backoff(initial=self.config.backoff_initial, maximum=self.config.backoff_max,
                               reset=self.config.backoff_reset)

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
        if pod is None:
            return
        uid = pod.metadata.uid
        rp = runtime_pods.get(uid, RuntimePod(uid))
        self._graces[uid] = _grace_of(pod)
        if pod.metadata.HasField("deletion_timestamp"):
            await self.terminate(pod, rp)
        elif pod.status.phase in podstatus.TERMINAL_PHASES:
            await self._stop_finished(rp)
        else:
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
        await asyncio.to_thread(remove_cgroups, self._cgroup_parent(rp.uid))
        await asyncio.to_thread(shutil.rmtree, self._pod_dir(rp.uid), True)
        self.backoff.forget_pod(rp.uid)
        self.volumes.forget(rp.uid)
        for key in [k for k in self._pull_errors if k[0] == rp.uid]:
            del self._pull_errors[key]
        for pull_key in [k for k in self._pull_failed_at if k[0] == rp.uid]:
            del self._pull_failed_at[pull_key]

    async def _stop_quietly(self, container_id: str, grace: int) -> None:
        try:
            await self.runtime.stop_container(container_id, grace)
        except CRIError as err:
            log.warning("stopping container %s: %s", container_id[:12], err)

    async def _stop_finished(self, rp: RuntimePod) -> None:
        """A pod that Succeeded or Failed keeps its containers (for logs) but not its sandbox."""
        self.probes.stop_pod(rp.uid)
        for sandbox in rp.sandboxes:
            if sandbox.state == cri_pb2.SANDBOX_READY:
                await _ignore_not_found(self.runtime.stop_pod_sandbox(sandbox.id))

    # ---------------------------------------------------------------- converging

    async def _converge(self, pod: core_pb2.Pod, rp: RuntimePod) -> None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        sandbox_config = self.sandbox_config(pod, attempt=len(rp.sandboxes))
        sandbox = rp.ready_sandbox()
        if sandbox is None:
            if _all_done(pod, rp):
                await self._write_status(pod, rp, "")  # nothing will run again: just report it
                return
            if not pod.spec.host_network and not self.network_ready():
                raise NetworkNotReady("the node's pod network is not ready (no pod CIDR yet)")
            await self.volumes.prepare(pod)
            start = time.monotonic()
            try:
                sandbox_id = await self.runtime.run_pod_sandbox(sandbox_config)
            except CRIError as err:
                self.record(pod, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {err.details}")
                raise
            log.info("started sandbox %s for %s in %.2fs", sandbox_id[:12], key, time.monotonic() - start)
        else:
            sandbox_id = sandbox.id
            sandbox_config.metadata.attempt = sandbox.metadata.attempt
            # ConfigMap and Secret volumes follow their objects while the pod runs (atomic swap).
            await self.volumes.refresh(pod)
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
        await self._write_status(pod, rp, pod_ip, holds)

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
        uid = pod.metadata.uid
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        # Failed pulls back off like crashing containers: syncs in between do not pull again.
        pull_key = (uid, f"image:{spec.name}")
        waiting = self.backoff.remaining(pull_key, self._pull_failed_at.get(pull_key, 0.0))
        if waiting > 0 and (uid, spec.name) in self._pull_errors:
            self.requeue_after(key, waiting + 0.05)
            return ("ImagePullBackOff", f'Back-off pulling image "{spec.image}"')
        try:
            image = await self.ensure_image(spec)
        except ImageError as err:
            # The first failure shows ErrImagePull, the retries after it ImagePullBackOff.
            reason = err.reason
            if reason == "ErrImagePull" and (uid, spec.name) in self._pull_errors:
                reason = "ImagePullBackOff"
            self._pull_errors[(uid, spec.name)] = (reason, str(err))
            self._pull_failed_at[pull_key] = time.time()
            self.backoff.next(pull_key, time.time())
            self.requeue_after(key, self.backoff.delay(pull_key) + 0.05)
            log.warning("image %s for %s/%s: %s", spec.image, pod.metadata.name, spec.name, err)
            self.record(pod, "Warning", "Failed", f"Failed to pull image \"{spec.image}\": {err}")
            return (reason, str(err))
        self._pull_errors.pop((uid, spec.name), None)
        try:
            env = await self.environment(pod, spec, pod_ip)
        except ConfigError as err:
            self.requeue_after(f"{pod.metadata.namespace}/{pod.metadata.name}", self.config.backoff_initial)
            return (err.reason, str(err))
        self.record(pod, "Normal", "Pulled", f"Container image \"{image}\" is present on the node")
        config = self.container_config(pod, spec, image, attempt, env)
        container_id = await self.runtime.create_container(sandbox_id, config, sandbox_config)
        self.record(pod, "Normal", "Created", f"Created container {spec.name}")
        try:
            await self.runtime.start_container(container_id)
        except CRIError as err:
            # The instance stays, exited with the runtime's reason: the next sync restarts it per policy.
            log.warning("starting container %s of %s: %s", spec.name, pod.metadata.name, err)
            self.record(pod, "Warning", "Failed", f"Error: {err.details}")
            return None
        self.record(pod, "Normal", "Started", f"Started container {spec.name}")
        return None

    async def ensure_image(self, spec: core_pb2.Container) -> str:
        """The image reference to run, pulled per imagePullPolicy."""
        policy = spec.image_pull_policy or ("Always" if _tag(spec.image) == "latest" else "IfNotPresent")
        candidates = self.image_candidates(spec.image)
        if policy != "Always":
            for name in candidates:
                if await self.runtime.image_present(name):
                    return name
            if policy == "Never":
                raise ImageError("ErrImageNeverPull",
                                 f'container image "{spec.image}" is not present with pull policy of Never')
        last: CRIError | None = None
        for name in candidates:
            try:
                await self.runtime.pull_image(name)
                return name
            except CRIError as err:
                last = err
        # A locally built image cannot be pulled but may be present: Always means "check", not "fail".
        for name in candidates:
            if await self.runtime.image_present(name):
                return name
        raise ImageError("ErrImagePull", f"pulling {spec.image}: {last.details if last else 'no candidates'}")

    def image_candidates(self, image: str) -> list[str]:
        """Short names ("nginx") try the cluster registry first, then the usual docker.io rules."""
        first = image.split("/", 1)[0]
        registry_given = "/" in image and ("." in first or ":" in first or first == "localhost")
        if registry_given or not self.config.cluster_registry:
            return [image]
        # docker.io's layout, which the cluster registry keeps: official images ("nginx") live under library/.
        path = image if "/" in image else f"library/{image}"
        return [f"{self.config.cluster_registry}/{path}", image]

    # ---------------------------------------------------------------- CRI configs

    def _pod_dir(self, uid: str) -> Path:
        return self.volumes.pod_dir(uid)

    def _cgroup_parent(self, uid: str) -> str:
        return f"{self.config.cgroup_root.rstrip('/')}/pod{uid}"

    def sandbox_config(self, pod: core_pb2.Pod, attempt: int) -> cri_pb2.PodSandboxConfig:
        meta = pod.metadata
        config = cri_pb2.PodSandboxConfig(
            metadata=cri_pb2.PodSandboxMetadata(name=meta.name, uid=meta.uid, namespace=meta.namespace,
                                                attempt=attempt),
            # A pod in the node's network namespace has the node's hostname (runc refuses to set one).
            hostname="" if pod.spec.host_network else pod.spec.hostname or meta.name,
            log_directory=str(self._pod_dir(meta.uid) / "logs"),
            labels=_labels(pod))
        config.linux.cgroup_parent = self._cgroup_parent(meta.uid)
        if pod.spec.host_network:
            config.linux.security_context.namespace_options.network = cri_pb2.NODE
        for c in pod.spec.containers:
            for port in c.ports:
                if port.host_port:
                    config.port_mappings.add(protocol=cri_pb2.Protocol.Value(port.protocol or "TCP"),
                                             container_port=port.container_port, host_port=port.host_port,
                                             host_ip=port.host_ip)
        self._dns(pod, config.dns_config)
        return config

    def _dns(self, pod: core_pb2.Pod, dns: cri_pb2.DNSConfig) -> None:
        """The pod's resolv.conf, by dnsPolicy, as the kubelet writes it.

        ClusterFirst (the default) points the pod at cluster DNS with Kubernetes' search
        path (`<ns>.svc.<domain> svc.<domain> <domain>`, ndots:5) unless the pod uses the
        host's network; ClusterFirstWithHostNet does so even then; Default leaves the
        node's resolv.conf; None uses only the pod's own dnsConfig, which the others add to.
        """
        policy = pod.spec.dns_policy or "ClusterFirst"
        cluster_first = (policy == "ClusterFirst" and not pod.spec.host_network) or policy == "ClusterFirstWithHostNet"
        if cluster_first and self.config.cluster_dns:
            domain = self.config.cluster_domain
            dns.servers.extend(self.config.cluster_dns)
            dns.searches.extend([f"{pod.metadata.namespace}.svc.{domain}", f"svc.{domain}", domain])
            dns.options.append("ndots:5")
        if pod.spec.HasField("dns_config"):
            own = pod.spec.dns_config
            dns.servers.extend(own.nameservers)
            dns.searches.extend(own.searches)
            dns.options.extend(o.name + (f":{o.value}" if o.HasField("value") else "") for o in own.options)

    def container_config(self, pod: core_pb2.Pod, spec: core_pb2.Container, image: str, attempt: int,
                         env: dict[str, str]) -> cri_pb2.ContainerConfig:
        config = cri_pb2.ContainerConfig(
            metadata=cri_pb2.ContainerMetadata(name=spec.name, attempt=attempt),
            image=cri_pb2.ImageSpec(image=image),
            command=[_expand(a, env) for a in spec.command],
            args=[_expand(a, env) for a in spec.args],
            working_dir=spec.working_dir,
            envs=[cri_pb2.KeyValue(key=k, value=v) for k, v in env.items()],
            labels={**_labels(pod), LABEL_CONTAINER_NAME: spec.name},
            log_path=f"{spec.name}/{attempt}.log",
            stdin=spec.stdin, stdin_once=spec.stdin_once, tty=spec.tty)
        config.mounts.extend(cri_pb2.Mount(host_path=host, container_path=path, readonly=read_only)
                             for host, path, read_only in self.volumes.mounts(pod, spec))
        resources = config.linux.resources
        requests, limits = spec.resources.requests, spec.resources.limits
        cpu_request = requests.get("cpu") or limits.get("cpu")
        resources.cpu_shares = max(MIN_SHARES, milli_value(cpu_request) * 1024 // 1000) if cpu_request else MIN_SHARES
        if "cpu" in limits:
            resources.cpu_period = CPU_PERIOD
            resources.cpu_quota = max(1000, milli_value(limits["cpu"]) * CPU_PERIOD // 1000)
        if "memory" in limits:
            resources.memory_limit_in_bytes = int_value(limits["memory"])
        security = spec.security_context
        if security.HasField("privileged"):
            config.linux.security_context.privileged = security.privileged
        if security.HasField("run_as_user"):
            config.linux.security_context.run_as_user.value = security.run_as_user
        if security.HasField("read_only_root_filesystem"):
            config.linux.security_context.readonly_rootfs = security.read_only_root_filesystem
        return config

    async def environment(self, pod: core_pb2.Pod, spec: core_pb2.Container, pod_ip: str) -> dict[str, str]:
        """The container's environment: envFrom first, then env (values, field and key references)."""
        fields = {"metadata.name": pod.metadata.name, "metadata.namespace": pod.metadata.namespace,
                  "metadata.uid": pod.metadata.uid, "spec.nodeName": pod.spec.node_name,
                  "spec.serviceAccountName": pod.spec.service_account_name,
                  "status.podIP": pod_ip, "status.hostIP": self.config.node_ip}
        namespace = pod.metadata.namespace
        env: dict[str, str] = {}
        for source in spec.env_from:
            if source.HasField("config_map_ref"):
                data = await self.volumes.config_map(namespace, source.config_map_ref.name, False)
            else:
                optional = source.secret_ref.optional if source.secret_ref.HasField("optional") else False
                data = await self.volumes.secret(namespace, source.secret_ref.name, optional)
            env.update({source.prefix + k: v.decode(errors="replace") for k, v in data.items()})
        for var in spec.env:
            ref = var.value_from
            if not var.HasField("value_from"):
                env[var.name] = _expand(var.value, env)
            elif ref.HasField("field_ref"):
                env[var.name] = fields.get(ref.field_ref.field_path, "")
            elif ref.HasField("config_map_key_ref") or ref.HasField("secret_key_ref"):
                key_ref = ref.config_map_key_ref if ref.HasField("config_map_key_ref") else ref.secret_key_ref
                optional = key_ref.optional if key_ref.HasField("optional") else False
                lookup = self.volumes.config_map if ref.HasField("config_map_key_ref") else self.volumes.secret
                data = await lookup(namespace, key_ref.name, optional)
                if key_ref.key in data:
                    env[var.name] = data[key_ref.key].decode(errors="replace")
                elif not optional:
                    raise ConfigError(f"couldn't find key {key_ref.key} in {key_ref.name}")
        return env

    # ---------------------------------------------------------------- status

    async def _write_status(self, pod: core_pb2.Pod, rp: RuntimePod, pod_ip: str,
                            holds: dict[str, tuple[str, str]] | None = None) -> None:
        holds = holds or {}
        policy = pod.spec.restart_policy or "Always"
        init_policy = "Never" if policy == "Never" else "OnFailure"
        init_views = [await self._view(pod, spec, rp, holds, init_policy) for spec in pod.spec.init_containers]
        initialized = all(podstatus.succeeded(v) for v in init_views)
        views = [await self._view(pod, spec, rp, holds, policy) for spec in pod.spec.containers]
        if not initialized:
            for view in views:
                view.waiting_reason = view.waiting_reason or "PodInitializing"
        new = core_pb2.PodStatus()
        new.CopyFrom(pod.status)
        new.phase = podstatus.phase(views, policy) if initialized else podstatus.init_phase(init_views)
        new.host_ip = self.config.node_ip
        del new.host_ips[:]
        new.host_ips.add(ip=self.config.node_ip)
        if pod_ip:
            new.pod_ip = pod_ip
            del new.pod_ips[:]
            new.pod_ips.add(ip=pod_ip)
        if not new.HasField("start_time"):
            new.start_time.CopyFrom(now_timestamp())
        del new.container_statuses[:]
        new.container_statuses.extend(podstatus.container_status(v) for v in views)
        del new.init_container_statuses[:]
        new.init_container_statuses.extend(podstatus.container_status(v) for v in init_views)
        all_ready = bool(views) and all(s.ready for s in new.container_statuses)
        if new.phase in podstatus.TERMINAL_PHASES:
            all_ready = False
        conditions = podstatus.conditions(list(pod.status.conditions), initialized=initialized,
                                          containers_ready=all_ready, now=now_timestamp())
        del new.conditions[:]
        new.conditions.extend(conditions)
        if new == pod.status:
            return
        updated = core_pb2.Pod()
        updated.CopyFrom(pod)
        updated.status.CopyFrom(new)
        try:
            await self.client.update_status(updated)
        except Conflict:
            fresh = await self.client.get(core_pb2.Pod, pod.metadata.name, pod.metadata.namespace)
            if fresh.metadata.uid != pod.metadata.uid:
                return
            fresh.status.CopyFrom(new)
            await self.client.update_status(fresh)
        if new.phase != pod.status.phase:
            log.info("pod %s/%s is %s", pod.metadata.namespace, pod.metadata.name, new.phase)

    async def _view(self, pod: core_pb2.Pod, spec: core_pb2.Container, rp: RuntimePod,
                    holds: dict[str, tuple[str, str]], policy: str) -> podstatus.ContainerView:
        instances = rp.instances(spec.name)
        latest = await self._status_or_none(instances[0].id) if instances else None
        previous = await self._status_or_none(instances[1].id) if len(instances) > 1 else None
        view = podstatus.ContainerView(spec, latest, previous)
        hold = holds.get(spec.name) or self._pull_errors.get((pod.metadata.uid, spec.name))
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


def _labels(pod: core_pb2.Pod) -> dict[str, str]:
    return {LABEL_POD_UID: pod.metadata.uid, LABEL_POD_NAME: pod.metadata.name,
            LABEL_POD_NAMESPACE: pod.metadata.namespace, LABEL_MANAGED: "true"}


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


def _tag(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return ""
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command, args and env values; unknown references stay."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def _seconds(value: float) -> str:
    return f"{value:g}s"


async def _ignore_not_found(call: Awaitable[None]) -> None:
    try:
        await call
    except CRIError as err:
        if err.code != grpc.StatusCode.NOT_FOUND:
            log.warning("%s", err)
