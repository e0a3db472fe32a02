"""Pod volumes on the node, and the ConfigMap and Secret data containers consume.

Each volume a pod declares becomes a directory on the node that the runtime
bind-mounts into the containers naming it (CRI `Mount`):

- emptyDir: <root_dir>/pods/<uid>/volumes/empty-dir/<name>, made when the
  sandbox is, gone when the pod is (the kubelet removes the pod directory);
- hostPath: the node path itself (DirectoryOrCreate / FileOrCreate make it);
- configMap / secret: the object's keys written as files under
  <root_dir>/pods/<uid>/volumes/{configmap,secret}/<name> when the sandbox
  starts (not refreshed while the pod runs: a simplification of the kubelet,
  which re-projects them every sync).

`ConfigError` is what the pod shows as `CreateContainerConfigError` when a
referenced ConfigMap, Secret or key is missing and not optional.
"""

from __future__ import annotations

import logging
from pathlib import Path

from proto import core_pb2
from proto.client import Client
from proto.errors import NotFound

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """A ConfigMap, Secret or key the pod needs does not exist (CreateContainerConfigError)."""

    reason = "CreateContainerConfigError"


class Volumes:
    def __init__(self, client: Client, root_dir: str) -> None:
        self.client = client
        self.root_dir = Path(root_dir)

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
            elif kind == "configMap":
                source = sources[name].config_map
                data = await self.config_map(pod.metadata.namespace, source.name,
                                             source.optional if source.HasField("optional") else False)
                _project(path, data, source.items,
                         source.default_mode if source.HasField("default_mode") else 0o644)
            elif kind == "secret":
                secret = sources[name].secret
                data = await self.secret(pod.metadata.namespace, secret.secret_name,
                                         secret.optional if secret.HasField("optional") else False)
                _project(path, data, secret.items,
                         secret.default_mode if secret.HasField("default_mode") else 0o644)

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
        try:
            found = await self.client.get(core_pb2.ConfigMap, name, namespace)
        except NotFound:
            if optional:
                return {}
            raise ConfigError(f'configmap "{name}" not found') from None
        data = {k: v.encode() for k, v in found.data.items()}
        data.update(found.binary_data)
        return data

    async def secret(self, namespace: str, name: str, optional: bool) -> dict[str, bytes]:
        try:
            found = await self.client.get(core_pb2.Secret, name, namespace)
        except NotFound:
            if optional:
                return {}
            raise ConfigError(f'secret "{name}" not found') from None
        data = dict(found.data)
        data.update({k: v.encode() for k, v in found.string_data.items()})
        return data


def _project(path: Path, data: dict[str, bytes], items: object, mode: int) -> None:
    """Write `data` as files under `path`: every key, or only the listed items at their paths."""
    path.mkdir(parents=True, exist_ok=True)
    chosen = [(i.key, i.path, i.mode if i.HasField("mode") else mode) for i in items]  # type: ignore[attr-defined]
    if not chosen:
        chosen = [(key, key, mode) for key in data]
    for key, rel, file_mode in chosen:
        if key not in data:
            raise ConfigError(f"key {key} is not in the volume's source")
        target = path / rel
        if not target.resolve().is_relative_to(path.resolve()):
            raise ConfigError(f"item path {rel} leaves the volume")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data[key])
        target.chmod(file_mode)
