"""The volume manager: every volume a pod's containers mount is ready before the pod may start.

Before the kubelet creates a pod's sandbox it sets up each volume the
containers mount (`set_up`), by type:

| volume | on the node | module |
|---|---|---|
| emptyDir | <pod>/volumes/empty-dir/<name>, a tmpfs for medium Memory | emptydir.py |
| hostPath | the node's path, checked against `type` | hostpath.py |
| configMap, secret | <pod>/volumes/{configmap,secret}/<name>, swapped atomically; secrets on tmpfs | projection.py |
| projected (token, configMap, secret, downwardAPI) | <pod>/volumes/projected/<name>, on tmpfs | projected.py |
| persistentVolumeClaim | its bound volume's hostPath or local directory (a local-path one made here) | claims.py |
| persistentVolumeClaim of an nfs volume | the export mounted at <pod>/volumes/nfs/<name> | nfs.py |
| nfs | the export mounted at <pod>/volumes/nfs/<name> by the node's NFS client | nfs.py |
| anything else | not provided by this kubelet | — |

If any cannot be set up, none of the pod starts: `VolumesNotReady` carries
one `MountError` per volume (`MountVolume.SetUp failed for volume "data" :
configmap "app" not found`), which the pod sync records as FailedMount events
while the pod stays Pending. It tries again with exponential back-off (0.5 s
doubling to about 2 min, Kubernetes' figures; config), and every
`volume_mount_timeout` of waiting it also says `Unable to attach or mount
volumes: ...: timed out waiting for the condition`. The moment the volume can
be set up (the ConfigMap is created), the next try succeeds and the pod starts.

While the pod runs, configMap, secret and projected volumes follow their objects
(`refresh`; a projected token is requested again at 80% of its lifetime),
disk-backed emptyDirs are measured against their sizeLimit (`storage_over_limit`),
and each container's mounts — subPaths bound safely (subpath.py), the binds
released once the container started — come from `mounts`. When the pod goes, `tear_down` detaches every mount under its
directory and removes it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from client import Client
from nodeagent.kubelet.volumes import claims, emptydir, hostpath, mounts, nfs, projected, projection, subpath
from nodeagent.kubelet.volumes.errors import ConfigError, MountError, SetUpError, VolumesNotReady
from proto import core_pb2
from proto.errors import ApiError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plugin:
    """What the kubelet knows about one volume type (by its Volume field)."""

    name: str  # Kubernetes' plugin name
    directory: str  # where its volumes live under <pod>/volumes; "" for a node path (hostPath)
    read_only: bool  # containers always get it read-only
    sub_path_dirs: bool  # a missing subPath may be made as a directory in it


PLUGINS = {
    "empty_dir": Plugin("kubernetes.io/empty-dir", "empty-dir", read_only=False, sub_path_dirs=True),
    "host_path": Plugin("kubernetes.io/host-path", "", read_only=False, sub_path_dirs=True),
    "config_map": Plugin("kubernetes.io/configmap", "configmap", read_only=True, sub_path_dirs=False),
    "secret": Plugin("kubernetes.io/secret", "secret", read_only=True, sub_path_dirs=False),
    "projected": Plugin("kubernetes.io/projected", "projected", read_only=True, sub_path_dirs=False),
    "nfs": Plugin("kubernetes.io/nfs", "nfs", read_only=False, sub_path_dirs=True),
    # The claim's volume is a node directory, as hostPath; where, only the set-up learns (claims.py).
    "persistent_volume_claim": Plugin("kubernetes.io/persistent-claim", "", read_only=False, sub_path_dirs=True),
}


def source_of(volume: core_pb2.Volume) -> str:
    """The Volume field that says the volume's type ("empty_dir", "nfs", ...), or "" if none is set."""
    return next((field.name for field, _ in volume.ListFields() if field.name != "name"), "")


def unsupported(volume: core_pb2.Volume, source: str) -> str:
    """Why this kubelet cannot provide a volume of a type it has no plugin for."""
    if source:
        name = volume.DESCRIPTOR.fields_by_name[source].json_name
        return f"no volume plugin matched: {name} volumes are not supported on this node yet"
    return "no volume plugin matched"


def used_volumes(pod: core_pb2.Pod) -> list[core_pb2.Volume]:
    """The volumes some container mounts, in spec order (an unused volume is not set up, as in Kubernetes)."""
    named = {m.name for c in list(pod.spec.init_containers) + list(pod.spec.containers) for m in c.volume_mounts}
    return [v for v in pod.spec.volumes if v.name in named]


@dataclass
class _Waiting:
    """A pod whose volumes are not ready: when it first failed, and when to try again."""

    since: float
    delay: float
    next_try: float
    timeout_from: float  # the start of the current WaitForAttachAndMount window


class Volumes:
    def __init__(self, client: Client, root_dir: str, *, backoff_initial: float = 0.5,
                 backoff_max: float = 122.0, mount_timeout: float = 123.0,
                 storage_check_period: float = 10.0) -> None:
        self.root_dir = Path(root_dir)
        self.objects = projection.ObjectData(client)
        self.tokens = projected.TokenManager(client)  # projected service-account tokens, kept fresh
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.mount_timeout = mount_timeout
        self.storage_check_period = storage_check_period
        # Pod uid -> names of its volumes whose source is immutable (projected once, never re-fetched).
        self._immutable: dict[str, set[str]] = {}
        self._waiting: dict[str, _Waiting] = {}
        self._storage_checked: dict[str, float] = {}
        # (pod uid, volume name) -> the node directory of a claim's volume, learnt at set-up.
        self._claims: dict[tuple[str, str], claims.ClaimVolume] = {}
        self.client = client

    def claim_paths(self) -> set[str]:
        """The node directories of the claims' volumes pods here mount (local-path cleanup spares them)."""
        return {str(claim.path) for claim in self._claims.values()}

    def pod_dir(self, uid: str) -> Path:
        return self.root_dir / "pods" / uid

    def pod_uids_on_disk(self) -> list[str]:
        """The uids of every pod with a directory on this node."""
        pods = self.root_dir / "pods"
        return [entry.name for entry in pods.iterdir() if entry.is_dir()] if pods.is_dir() else []

    def path(self, pod: core_pb2.Pod, volume: core_pb2.Volume) -> Path | None:
        """Where the volume's files are on the node, or None for a type this kubelet does not provide."""
        source = source_of(volume)
        plugin = PLUGINS.get(source)
        if plugin is None:
            return None
        if source == "host_path":
            return Path(volume.host_path.path)
        if source == "persistent_volume_claim":
            claim = self._claims.get((pod.metadata.uid, volume.name))
            return claim.path if claim is not None else None
        return self.pod_dir(pod.metadata.uid) / "volumes" / plugin.directory / volume.name

    # ---------------------------------------------------------------- before the sandbox

    async def set_up(self, pod: core_pb2.Pod) -> None:
        """Make every volume the containers mount ready (and the pod's log directory); VolumesNotReady if not."""
        (self.pod_dir(pod.metadata.uid) / "logs").mkdir(parents=True, exist_ok=True)
        volumes = used_volumes(pod)
        failures: list[MountError] = []
        for volume in volumes:
            try:
                await self._set_up_one(pod, volume)
            except SetUpError as err:
                failures.append(MountError(volume.name, str(err)))
        if failures:
            raise VolumesNotReady(failures, [v.name for v in volumes])
        self._waiting.pop(pod.metadata.uid, None)

    async def _set_up_one(self, pod: core_pb2.Pod, volume: core_pb2.Volume) -> None:
        source = source_of(volume)
        if source == "persistent_volume_claim":
            try:
                pv, claim = await claims.resolve(self.client, pod, volume)
            except ApiError as err:
                raise SetUpError(str(err)) from None
            if pv.spec.HasField("nfs"):
                # Mounted per pod, as an inline nfs volume: under the pod's directory, torn down with it.
                claim = claims.ClaimVolume(self.pod_dir(pod.metadata.uid) / "volumes" / "nfs" / volume.name,
                                           claim.read_only or pv.spec.nfs.read_only)
                await asyncio.to_thread(nfs.set_up, pv.spec.nfs.server, pv.spec.nfs.path, claim.path,
                                        read_only=claim.read_only, options=list(pv.spec.mount_options))
            else:
                await asyncio.to_thread(claims.set_up, pv, claim)
            self._claims[(pod.metadata.uid, volume.name)] = claim
            return
        path = self.path(pod, volume)
        if path is None:
            raise SetUpError(unsupported(volume, source))
        if source == "empty_dir":
            await asyncio.to_thread(emptydir.set_up, pod, volume.empty_dir, path)
        elif source == "host_path":
            await asyncio.to_thread(hostpath.set_up, path, volume.host_path.type)
        elif source == "nfs":
            await asyncio.to_thread(nfs.set_up, volume.nfs.server, volume.nfs.path, path,
                                    read_only=volume.nfs.read_only, options=[])
        else:
            await self._project(pod, volume, path)

    async def _project(self, pod: core_pb2.Pod, volume: core_pb2.Volume, path: Path) -> bool:
        if volume.HasField("projected"):
            return await projected.project(self.objects, self.tokens, pod, volume, path)
        changed, immutable = await projection.project(self.objects, pod, volume, path)
        if immutable:
            # An immutable object can only be deleted and re-created: never fetched again for this pod.
            self._immutable.setdefault(pod.metadata.uid, set()).add(volume.name)
        return changed

    def retry_in(self, uid: str, now: float | None = None) -> float:
        """Seconds until the pod's volumes may be tried again (0: now)."""
        waiting = self._waiting.get(uid)
        if waiting is None:
            return 0.0
        return max(0.0, waiting.next_try - (time.monotonic() if now is None else now))

    def set_up_failed(self, uid: str, now: float | None = None) -> tuple[float, bool]:
        """Record a failed try: (seconds until the next, whether a whole mount timeout has now passed)."""
        now = time.monotonic() if now is None else now
        waiting = self._waiting.get(uid)
        if waiting is None:
            waiting = self._waiting[uid] = _Waiting(now, 0.0, now, now)
        waiting.delay = min(waiting.delay * 2, self.backoff_max) if waiting.delay else self.backoff_initial
        waiting.next_try = now + waiting.delay
        timed_out = now - waiting.timeout_from >= self.mount_timeout
        if timed_out:
            waiting.timeout_from = now
        return waiting.delay, timed_out

    # ---------------------------------------------------------------- while the pod runs

    async def refresh(self, pod: core_pb2.Pod) -> None:
        """Re-project the running pod's configMap and secret volumes from the objects as they are now.

        A failure (the object was deleted, a key went missing) leaves the files as they were and
        is only logged: the pod keeps running on its last good configuration.
        """
        immutable = self._immutable.get(pod.metadata.uid, set())
        for volume in used_volumes(pod):
            if source_of(volume) not in ("config_map", "secret", "projected") or volume.name in immutable:
                continue
            path = self.path(pod, volume)
            assert path is not None
            try:
                if await self._project(pod, volume, path):
                    log.info("pod %s/%s: volume %s updated from its %s", pod.metadata.namespace,
                             pod.metadata.name, volume.name, source_of(volume))
            except (SetUpError, ApiError) as err:
                # Not this sync's business to fail for: the pod runs on, the next sync tries again.
                log.warning("pod %s/%s: volume %s not refreshed: %s", pod.metadata.namespace,
                            pod.metadata.name, volume.name, err)

    async def storage_over_limit(self, pod: core_pb2.Pod, now: float | None = None) -> str | None:
        """The eviction message if an emptyDir holds more than its sizeLimit (checked once a period)."""
        now = time.monotonic() if now is None else now
        uid = pod.metadata.uid
        if now - self._storage_checked.get(uid, float("-inf")) < self.storage_check_period:
            return None
        self._storage_checked[uid] = now
        for volume in pod.spec.volumes:
            if volume.HasField("empty_dir") and volume.empty_dir.size_limit:
                path = self.path(pod, volume)
                assert path is not None
                message = await asyncio.to_thread(emptydir.exceeded, volume.name, volume.empty_dir, path)
                if message:
                    return message
        return None

    async def mounts(self, pod: core_pb2.Pod, spec: core_pb2.Container) -> list[tuple[str, str, bool]]:
        """(host path, container path, read-only) for each of the container's volume mounts.

        ConfigError (CreateContainerConfigError) when a subPath cannot be used safely.
        """
        volumes = {v.name: v for v in pod.spec.volumes}
        result = []
        for index, vm in enumerate(spec.volume_mounts):
            volume = volumes.get(vm.name)
            path = self.path(pod, volume) if volume is not None else None
            if volume is None or path is None:
                # set_up refused such a pod already; a spec changed under us must not start half-mounted.
                raise ConfigError(f'volume "{vm.name}" of container "{spec.name}" is not set up')
            plugin = PLUGINS[source_of(volume)]
            host = path
            if vm.sub_path:
                host = self.pod_dir(pod.metadata.uid) / "volume-subpaths" / vm.name / spec.name / str(index)
                try:
                    await asyncio.to_thread(subpath.prepare, path, vm.sub_path, host, create=plugin.sub_path_dirs)
                except subpath.SubPathError as err:
                    # The detail may describe the node's filesystem: it goes to the log, not the pod.
                    log.warning("pod %s/%s: subPath %s of volume %s for container %s: %s", pod.metadata.namespace,
                                pod.metadata.name, vm.sub_path, vm.name, spec.name, err)
                    raise ConfigError(f'failed to prepare subPath for volumeMount "{vm.name}" of container '
                                      f'"{spec.name}"') from None
            claim = self._claims.get((pod.metadata.uid, vm.name))
            read_only = vm.read_only or plugin.read_only or (claim is not None and claim.read_only)
            result.append((str(host), vm.mount_path, read_only))
        return result

    async def release_sub_paths(self, pod: core_pb2.Pod, spec: core_pb2.Container) -> None:
        """Detach the container's subPath binds from the node once the runtime has started (or failed) it.

        The container's mount namespace keeps its own copy; none is left on the node, so nothing
        removing the kubelet's directories (a node torn down without the kubelet) can reach through
        one into a hostPath. A restarted container is bound afresh.
        """
        targets = self.pod_dir(pod.metadata.uid) / "volume-subpaths"
        for index, vm in enumerate(spec.volume_mounts):
            if vm.sub_path:
                await asyncio.to_thread(mounts.unmount_all_under, targets / vm.name / spec.name / str(index))

    # ---------------------------------------------------------------- ConfigMap and Secret data for env

    async def config_map(self, namespace: str, name: str, optional: bool) -> dict[str, bytes]:
        return (await self.objects.config_map(namespace, name, optional))[0]

    async def secret(self, namespace: str, name: str, optional: bool) -> dict[str, bytes]:
        return (await self.objects.secret(namespace, name, optional))[0]

    # ---------------------------------------------------------------- after the pod

    async def tear_down_volumes(self, uid: str) -> None:
        """A pod that finished (or was evicted) gives back its volumes' space; its logs stay."""
        pod_dir = self.pod_dir(uid)
        for part in ("volumes", "volume-subpaths"):
            if (pod_dir / part).exists():
                await asyncio.to_thread(_remove, pod_dir / part)

    async def tear_down(self, uid: str) -> None:
        """The pod is gone: detach every mount under its directory, remove it, forget it."""
        await asyncio.to_thread(_remove, self.pod_dir(uid))
        self._immutable.pop(uid, None)
        self._waiting.pop(uid, None)
        self._storage_checked.pop(uid, None)
        self.tokens.forget(uid)
        for key in [k for k in self._claims if k[0] == uid]:
            del self._claims[key]


def _remove(directory: Path) -> None:
    # Mounts first: removing the tree must never reach through a mount into what it holds.
    detached = mounts.unmount_all_under(directory)
    if detached:
        log.debug("detached %s", ", ".join(detached))
    if mounts.unmount_all_under(directory):
        # Something re-mounted in between (or a detach silently failed): a hostPath bind could be under
        # here, so nothing is removed this time; the next sync tries again.
        raise OSError(f"mounts remain under {directory}; not removing it")
    shutil.rmtree(directory, ignore_errors=True)
