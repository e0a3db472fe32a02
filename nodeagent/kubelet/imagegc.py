"""Image garbage collection: the kubelet keeps its image filesystem under the high threshold.

Kubernetes' image GC manager (pkg/kubelet/images/image_gc_manager.go), in the
same shape. Every `image_gc_period` the kubelet lists the node's images and
notes, per image, when it was first seen and when it was last used: images
of the node's containers (running or exited: they may be restarted) are used
*now*, and the sandbox (pause) image, which containerd pins, is never
touched. Then, when the image filesystem's usage is at or above
`image_gc_high_threshold` percent (--image-gc-high-threshold, default 85),
it removes unused images, least recently used first (then the first seen
first), skipping any younger than `image_gc_min_age`, until usage falls to
`image_gc_low_threshold` (--image-gc-low-threshold, default 80). Not freeing
enough is a Warning event on the Node, `FreeDiskSpaceFailed`, as in Kubernetes.

The image filesystem is the one holding the kubelet's root directory (the
containerd of a Flotilla node keeps its content and snapshots beside it, so
nodefs and imagefs are one filesystem); `fs_stats` can say otherwise (tests).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nodeagent.kubelet.diskpressure import existing
from nodeagent.kubelet.runtime import CRIError, Runtime
from proto import cri_pb2

log = logging.getLogger(__name__)

# (capacity, available) bytes of the image filesystem.
FsStats = Callable[[], Awaitable[tuple[int, int]]]


@dataclass
class ImageRecord:
    """What the manager knows of one image: when first seen, when last used, its size."""

    first_detected: float
    last_used: float
    size: int


def is_pinned(image: cri_pb2.Image) -> bool:
    """The sandbox image: containerd pins the one its config names (our CRI subset lacks the `pinned` flag)."""
    return any(tag.rsplit(":", 1)[0].endswith("/pause") or tag.startswith("pause:") for tag in image.repo_tags)


def statvfs_stats(path: str) -> FsStats:
    async def stats() -> tuple[int, int]:
        st = await asyncio.to_thread(os.statvfs, existing(path))
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    return stats


class ImageGCManager:
    """Detects images and their use; frees the image filesystem down to the low threshold when over the high."""

    def __init__(self, runtime: Runtime, *, high_threshold: int, low_threshold: int, min_age: float,
                 fs_stats: FsStats, record: Callable[[str, str, str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not 0 <= low_threshold <= high_threshold <= 100:
            raise ValueError(f"image GC thresholds: want 0 <= low ({low_threshold}) <= high ({high_threshold}) <= 100")
        self.runtime = runtime
        self.high, self.low, self.min_age = high_threshold, low_threshold, min_age
        self.fs_stats = fs_stats
        self.record = record  # (type, reason, message) -> an event on the Node
        self.clock = clock
        self.images: dict[str, ImageRecord] = {}

    async def detect_images(self) -> set[str]:
        """Refresh the records; the IDs of images in use (containers' and pinned ones)."""
        now = self.clock()
        in_use = {c.image_ref for c in await self.runtime.list_containers() if c.image_ref}
        listed = await self.runtime.list_images()
        in_use |= {i.id for i in listed if is_pinned(i)}
        # A container's image_ref may be the image's ID or a name@digest: match either.
        for image in listed:
            if any(ref in in_use for ref in (*image.repo_tags, *image.repo_digests)):
                in_use.add(image.id)
        for image in listed:
            record = self.images.setdefault(image.id, ImageRecord(now, 0.0, image.size))
            record.size = image.size
            if image.id in in_use:
                record.last_used = now
        for gone in set(self.images) - {i.id for i in listed}:
            del self.images[gone]
        return in_use

    async def garbage_collect(self) -> int:
        """Free space if usage is at or over the high threshold; the bytes freed."""
        capacity, available = await self.fs_stats()
        if capacity <= 0:
            return 0
        usage = 100 - available * 100 // capacity
        if usage < self.high:
            return 0
        to_free = capacity * (100 - self.low) // 100 - available
        log.info("image filesystem usage %d%% >= %d%%: freeing %d bytes (down to %d%%)",
                 usage, self.high, to_free, self.low)
        freed = await self.free_space(to_free)
        if freed < to_free:
            message = (f"Failed to garbage collect required amount of images. Attempted to free {to_free} bytes, "
                       f"but only found {freed} bytes eligible to free.")
            log.warning(message)
            if self.record is not None:
                self.record("Warning", "FreeDiskSpaceFailed", message)
        return freed

    async def free_space(self, to_free: int) -> int:
        """Remove unused images, least recently used (then first seen) first, until `to_free` bytes are gone."""
        in_use = await self.detect_images()
        now = self.clock()
        candidates = sorted(((r, i) for i, r in self.images.items() if i not in in_use),
                            key=lambda pair: (pair[0].last_used, pair[0].first_detected))
        freed = 0
        for record, image_id in candidates:
            if freed >= to_free:
                break
            if now - record.first_detected < self.min_age:
                continue  # just pulled: a pod may be about to use it
            try:
                await self.runtime.remove_image(image_id)
            except CRIError as err:
                log.warning("removing image %s: %s", image_id, err)
                continue
            log.info("removed image %s (%d bytes, last used %.0fs ago)", image_id, record.size,
                     now - record.last_used if record.last_used else -1)
            del self.images[image_id]
            freed += record.size
        return freed

    async def reclaim(self, to_free: int) -> int:
        """Free `to_free` bytes of unused images now: a disk eviction threshold is crossed (the eviction
        manager's node-level reclaim, before any pod is evicted)."""
        if self.record is not None:
            self.record("Warning", "EvictionThresholdMet", "Attempting to reclaim ephemeral-storage")
        return await self.free_space(to_free)

    async def run(self, period: float) -> None:
        """Detect every `period` seconds and collect when over the threshold, as the kubelet's GC loop."""
        while True:
            try:
                await self.garbage_collect()
            except (CRIError, OSError) as err:
                log.warning("image garbage collection failed: %s", err)
                if self.record is not None:
                    self.record("Warning", "ImageGCFailed", str(err))
            await asyncio.sleep(period)
