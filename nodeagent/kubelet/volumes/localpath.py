"""Local-path cleanup: a deleted local-path volume's directory is removed from this node.

The local-path provisioner (controlplane/controllers/localpath.py) makes no
directory itself: the kubelet makes `<nodePath>/pvc-<uid>` when it first
mounts the volume (claims.py). When the volume object is deleted — its claim
was deleted and its reclaim policy is Delete — nothing in the control plane
can reach the node's disk, so the kubelet cleans up: every `period` (10 s; and once
at start, which also catches deletions made while it was down) it lists the
directories under each local-path root (the default, and every `nodePath` of a
flotilla.dev/local-path StorageClass) and removes each `pvc-*` one whose
volume no longer exists and that no pod on this node still mounts.

Directories are listed before the volumes are, so a volume created meanwhile
(whose directory can only appear after it exists) is never taken for a
deleted one.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from client import Client
from proto import core_pb2, storage_pb2
from proto.errors import ApiError
from proto.wellknown import LOCAL_PATH_DEFAULT_NODE_PATH, LOCAL_PATH_NODE_PATH, LOCAL_PATH_PROVISIONER

log = logging.getLogger(__name__)

PREFIX = "pvc-"


def _stale(roots: Iterable[Path]) -> list[Path]:
    found = []
    for root in roots:
        if root.is_dir():
            found += [entry for entry in root.iterdir() if entry.name.startswith(PREFIX) and entry.is_dir()
                      and not entry.is_symlink()]
    return found


class LocalPathCleaner:
    def __init__(self, client: Client, in_use: Callable[[], set[str]], *, period: float = 10.0) -> None:
        """`in_use` names the directories mounted by pods of this node (never removed)."""
        self.client = client
        self.in_use = in_use
        self.period = period

    async def roots(self) -> set[Path]:
        classes = (await self.client.list(storage_pb2.StorageClass)).items
        return {Path(LOCAL_PATH_DEFAULT_NODE_PATH)} | {
            Path(sc.parameters[LOCAL_PATH_NODE_PATH]) for sc in classes
            if sc.provisioner == LOCAL_PATH_PROVISIONER and sc.parameters.get(LOCAL_PATH_NODE_PATH)}

    async def clean_once(self) -> list[Path]:
        """Remove the directories of deleted local-path volumes; returns what was removed."""
        candidates = await asyncio.to_thread(_stale, await self.roots())
        if not candidates:
            return []
        volumes = {pv.metadata.name for pv in (await self.client.list(core_pb2.PersistentVolume)).items}
        used = self.in_use()
        removed = []
        for directory in candidates:
            if directory.name in volumes or str(directory) in used:
                continue
            await asyncio.to_thread(shutil.rmtree, directory, True)
            log.info("removed %s: its local-path volume was deleted", directory)
            removed.append(directory)
        return removed

    async def run(self) -> None:
        while True:
            try:
                await self.clean_once()
            except (ApiError, OSError) as err:
                log.warning("local-path cleanup: %s", err)
            await asyncio.sleep(self.period)
