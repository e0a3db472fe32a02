"""configMap and secret volumes: an object's keys as files, and the same data for environment variables.

The files of a volume are computed from the object (`payload`): every key at
its own name, or only the listed `items` at their paths, each file with the
item's `mode`, else the volume's `defaultMode`, else 0644 — Kubernetes'
defaults. A key the volume lists but the object lacks fails the volume
(`configmap references non-existent config key: x`), unless the volume is
`optional`; so does a missing object (`configmap "x" not found`). The files
are then swapped in atomically (atomic_writer.py).

A secret volume lives on a tmpfs of its own, as in Kubernetes, so its values
never reach the node's disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from client import Client
from nodeagent.kubelet import atomic_writer
from nodeagent.kubelet.atomic_writer import FileProjection
from nodeagent.kubelet.volumes import emptydir, mounts
from nodeagent.kubelet.volumes.errors import ConfigError, SetUpError
from proto import core_pb2
from proto.errors import NotFound

DEFAULT_MODE = 0o644  # ConfigMapVolumeSourceDefaultMode / SecretVolumeSourceDefaultMode
SECRET_DIR_MODE = 0o755  # the tmpfs root: containers running as any user can reach their files


@dataclass(frozen=True)
class Source:
    """What one configMap or secret volume asks for, whichever kind it is."""

    kind: str  # "configmap" or "secret": Kubernetes' words in its messages
    name: str
    items: Iterable[core_pb2.KeyToPath]
    default_mode: int
    optional: bool

    @classmethod
    def of(cls, volume: core_pb2.Volume) -> Source:
        is_config_map = volume.HasField("config_map")
        source = volume.config_map if is_config_map else volume.secret
        return cls(kind="configmap" if is_config_map else "secret",
                   name=volume.config_map.name if is_config_map else volume.secret.secret_name,
                   items=list(source.items),
                   default_mode=source.default_mode if source.HasField("default_mode") else DEFAULT_MODE,
                   optional=source.optional if source.HasField("optional") else False)


class ObjectData:
    """Reads ConfigMaps and Secrets from the API as bytes per key (volumes and env share it)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def config_map(self, namespace: str, name: str, optional: bool) -> tuple[dict[str, bytes], bool]:
        """The ConfigMap's keys, and whether it is immutable; ConfigError if missing and not optional."""
        try:
            found = await self.client.get(core_pb2.ConfigMap, name, namespace)
        except NotFound:
            if optional:
                return {}, False
            raise ConfigError(f'configmap "{name}" not found') from None
        data = {k: v.encode() for k, v in found.data.items()}
        data.update(found.binary_data)
        return data, found.immutable

    async def secret(self, namespace: str, name: str, optional: bool) -> tuple[dict[str, bytes], bool]:
        """The Secret's keys, and whether it is immutable; ConfigError if missing and not optional."""
        try:
            found = await self.client.get(core_pb2.Secret, name, namespace)
        except NotFound:
            if optional:
                return {}, False
            raise ConfigError(f'secret "{name}" not found') from None
        data = dict(found.data)
        data.update({k: v.encode() for k, v in found.string_data.items()})
        return data, found.immutable


async def project(objects: ObjectData, pod: core_pb2.Pod, volume: core_pb2.Volume, path: Path) -> tuple[bool, bool]:
    """Write one configMap or secret volume from its object: (files changed, object immutable).

    SetUpError, in Kubernetes' words, when the object or a listed key is missing and the volume is not optional.
    """
    source = Source.of(volume)
    fetch = objects.config_map if source.kind == "configmap" else objects.secret
    try:
        data, immutable = await fetch(pod.metadata.namespace, source.name, source.optional)
    except ConfigError as err:
        raise SetUpError(str(err)) from None
    files = payload(source, data)
    if source.kind == "secret":
        await asyncio.to_thread(secret_tmpfs, pod, path)
    try:
        changed = await asyncio.to_thread(atomic_writer.write, path, files)
    except (atomic_writer.ProjectionError, OSError) as err:
        raise SetUpError(str(err)) from None
    return changed, immutable


def payload(source: Source, data: dict[str, bytes]) -> dict[str, FileProjection]:
    """The files the volume holds: every key at its own name, or only the listed items at their paths."""
    if not source.items:
        return {key: FileProjection(value, source.default_mode) for key, value in data.items()}
    files: dict[str, FileProjection] = {}
    for item in source.items:
        if item.key not in data:
            if source.optional:
                continue
            what = "config" if source.kind == "configmap" else "secret"
            prefix = "configmap " if source.kind == "configmap" else ""
            raise SetUpError(f"{prefix}references non-existent {what} key: {item.key}")
        files[item.path] = FileProjection(data[item.key], item.mode if item.HasField("mode") else source.default_mode)
    return files


def secret_tmpfs(pod: core_pb2.Pod, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if not mounts.is_mount_point(path.resolve()):
        mounts.mount_tmpfs(path, size=emptydir.tmpfs_size(pod, None), mode=SECRET_DIR_MODE)
