"""Pod volumes on the node, and the ConfigMap and Secret data containers consume.

Each volume a pod declares becomes a directory on the node that the runtime
bind-mounts into the containers naming it (CRI `Mount`):

- emptyDir: <root_dir>/pods/<uid>/volumes/empty-dir/<name>, made when the
  sandbox is, gone when the pod is (the kubelet removes the pod directory);
- hostPath: the node path itself (DirectoryOrCreate / FileOrCreate make it);
- configMap / secret: the object's keys written as files under
  <root_dir>/pods/<uid>/volumes/{configmap,secret}/<name> when the sandbox
  starts, and re-projected on every later sync of the running pod (`refresh`),
  so a changed ConfigMap or Secret reaches the pod's files within the
  kubelet's sync period. Writes are atomic (`atomic_writer`): readers see
  the old files or the new ones, never a mix. Immutable objects are not
  fetched again, and a source that has gone keeps its last files (as in
  Kubernetes, where a volume refresh failure does not touch the pod).

`ConfigError` is what the pod shows as `CreateContainerConfigError` when a
referenced ConfigMap, Secret or key is missing and not optional.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from client import Client
from nodeagent.kubelet import atomic_writer
from nodeagent.kubelet.atomic_writer import FileProjection
from proto import core_pb2
from proto.errors import ApiError, NotFound

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """A ConfigMap, Secret or key the pod needs does not exist (CreateContainerConfigError)."""

    reason = "CreateContainerConfigError"


class Volumes:
    def __init__(self, client: Client, root_dir: str) -> None:
        self.client = client
        self.root_dir = Path(root_dir)
        # Pod uid -> names of its volumes whose source is immutable (projected once, never re-fetched).
        self._immutable: dict[str, set[str]] = {}

    def pod_dir(self, uid: str) -> Path:
        return self.root_dir / "pods" / uid

    def paths(self, pod: core_pb2.Pod) -> dict[str, tuple[Path, str]]:
        """Volume name -> (host path, kind)."""
        volumes = self.pod_dir(pod.metadata.uid) / "volumes"
        paths: dict[str, tuple[Path, str]] = {}
        for volume in pod.spec.volumes:
            if volume.HasField("host_path"):
                paths[volume.name] = (Path(volume.host_path.path), volume.host_path.type)
            elif volume.HasField("empty_dir"):
                paths[volume.name] = (volumes / "empty-dir" / volume.name, "emptyDir")
            elif volume.HasField("config_map"):
                paths[volume.name] = (volumes / "configmap" / volume.name, "configMap")
            elif volume.HasField("secret"):
                paths[volume.name] = (volumes / "secret" / volume.name, "secret")
        return paths

    async def prepare(self, pod: core_pb2.Pod) -> None:
        """Make every volume's directory (and the pod's log directory) before its sandbox starts."""
        (self.pod_dir(pod.metadata.uid) / "logs").mkdir(parents=True, exist_ok=True)
        sources = {v.name: v for v in pod.spec.volumes}
        for name, (path, kind) in self.paths(pod).items():
            if kind in ("emptyDir", "DirectoryOrCreate"):
                path.mkdir(parents=True, exist_ok=True)
                if kind == "emptyDir":
                    path.chmod(0o777)  # emptyDir is world-writable in Kubernetes
            elif kind == "FileOrCreate" and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            elif kind in ("configMap", "secret"):
                await self._project(pod, sources[name], path)

    async def refresh(self, pod: core_pb2.Pod) -> None:
        """Re-project the running pod's configMap and secret volumes from the objects as they are now.

        A failure (the object was deleted, a key went missing) leaves the files as they were and
        is only logged: the pod keeps running on its last good configuration.
        """
        sources = {v.name: v for v in pod.spec.volumes}
        for name, (path, kind) in self.paths(pod).items():
            if kind not in ("configMap", "secret") or name in self._immutable.get(pod.metadata.uid, ()):
                continue
            try:
                if await self._project(pod, sources[name], path):
                    log.info("pod %s/%s: volume %s updated from its %s", pod.metadata.namespace,
                             pod.metadata.name, name, kind)
            except (ConfigError, ApiError) as err:
                # Not this sync's business to fail for: the pod runs on, the next sync tries again.
                log.warning("pod %s/%s: volume %s not refreshed: %s", pod.metadata.namespace,
                            pod.metadata.name, name, err)

    def forget(self, uid: str) -> None:
        """The pod is gone: drop what was remembered about its volumes."""
        self._immutable.pop(uid, None)

    async def _project(self, pod: core_pb2.Pod, volume: core_pb2.Volume, path: Path) -> bool:
        """Write one configMap or secret volume from its object; True if the files changed."""
        namespace = pod.metadata.namespace
        if volume.HasField("config_map"):
            source = volume.config_map
            optional = source.optional if source.HasField("optional") else False
            data, immutable = await self._config_map(namespace, source.name, optional)
            items, mode = source.items, source.default_mode if source.HasField("default_mode") else 0o644
        else:
            secret = volume.secret
            optional = secret.optional if secret.HasField("optional") else False
            data, immutable = await self._secret(namespace, secret.secret_name, optional)
            items, mode = secret.items, secret.default_mode if secret.HasField("default_mode") else 0o644
        payload = _payload(data, items, mode)
        try:
            changed = await asyncio.to_thread(atomic_writer.write, path, payload)
        except atomic_writer.ProjectionError as err:
            raise ConfigError(str(err)) from None
        if immutable:
            # An immutable object can only be deleted and re-created: never fetched again for this pod.
            self._immutable.setdefault(pod.metadata.uid, set()).add(volume.name)
        return changed

    def mounts(self, pod: core_pb2.Pod, spec: core_pb2.Container) -> list[tuple[str, str, bool]]:
        """(host path, container path, read-only) for each of the container's volume mounts."""
        paths = self.paths(pod)
        mounts = []
        for vm in spec.volume_mounts:
            if vm.name not in paths:
                log.warning("pod %s: volume %s is of a kind the kubelet does not support yet",
                            pod.metadata.name, vm.name)
                continue
            base, kind = paths[vm.name]
            host = base / vm.sub_path if vm.sub_path else base
            if vm.sub_path and kind == "emptyDir":
                host.mkdir(parents=True, exist_ok=True)
            read_only = vm.read_only or kind in ("configMap", "secret")
            mounts.append((str(host), vm.mount_path, read_only))
        return mounts

    # ---------------------------------------------------------------- ConfigMap and Secret data

    async def config_map(self, namespace: str, name: str, optional: bool) -> dict[str, bytes]:
        return (await self._config_map(namespace, name, optional))[0]

    async def secret(self, namespace: str, name: str, optional: bool) -> dict[str, bytes]:
        return (await self._secret(namespace, name, optional))[0]

    async def _config_map(self, namespace: str, name: str, optional: bool) -> tuple[dict[str, bytes], bool]:
        """The ConfigMap's keys as bytes, and whether it is immutable."""
        try:
            found = await self.client.get(core_pb2.ConfigMap, name, namespace)
        except NotFound:
            if optional:
                return {}, False
            raise ConfigError(f'configmap "{name}" not found') from None
        data = {k: v.encode() for k, v in found.data.items()}
        data.update(found.binary_data)
        return data, found.immutable

    async def _secret(self, namespace: str, name: str, optional: bool) -> tuple[dict[str, bytes], bool]:
        """The Secret's keys as bytes, and whether it is immutable."""
        try:
            found = await self.client.get(core_pb2.Secret, name, namespace)
        except NotFound:
            if optional:
                return {}, False
            raise ConfigError(f'secret "{name}" not found') from None
        data = dict(found.data)
        data.update({k: v.encode() for k, v in found.string_data.items()})
        return data, found.immutable


def _payload(data: dict[str, bytes], items: object, mode: int) -> dict[str, FileProjection]:
    """The files a volume holds: every key at its own name, or only the listed items at their paths."""
    chosen = [(i.key, i.path, i.mode if i.HasField("mode") else mode) for i in items]  # type: ignore[attr-defined]
    if not chosen:
        chosen = [(key, key, mode) for key in data]
    payload: dict[str, FileProjection] = {}
    for key, rel, file_mode in chosen:
        if key not in data:
            raise ConfigError(f"key {key} is not in the volume's source")
        payload[rel] = FileProjection(data[key], file_mode)
    return payload
