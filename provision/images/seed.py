"""A cluster registry that starts with the base images: a seed storage made once, linked into each cluster's.

Pushing the base images (pause, busybox, nginx, debian, the Python client:
160 MB) into every new cluster registry costs an upload and the registry's
hashing of every blob, each `cluster up` — seconds on a quiet machine,
minutes on a loaded one. The images only change when their recipes do, so the
first `up` after a change pushes them once into a seed storage under
/var/cache/flotilla/registry-seed/<hash of their manifests> (a throwaway
docker-registry on loopback does the writing, so the layout is distribution's
own), and every local cluster's registry storage starts as a copy of it. The
blobs (`blobs/sha256/xx/<digest>/data`) are content-addressed and never
rewritten, so they are hard links (one copy on disk for all clusters); the
small link files a registry may rewrite (tags) are copied. The pushes that
follow find every blob and only write the manifests.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from provision.images import registry
from provision.images.distribution import push
from provision.images.oci import OCIImage
from provision.processes import Process, free_port, wait_until

SEEDS = Path("/var/cache/flotilla/registry-seed")
log = logging.getLogger(__name__)


def seed_key(images: dict[str, OCIImage]) -> str:
    return hashlib.sha256("\n".join(f"{n} {i.digest}" for n, i in sorted(images.items())).encode()).hexdigest()[:24]


def make_seed(images: dict[str, OCIImage], mount_from: tuple[str, ...]) -> Path:
    """The seed storage holding `images` (made now if it is not there yet)."""
    seed = SEEDS / seed_key(images)
    if (seed / "docker").is_dir():
        return seed
    SEEDS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="making-", dir=SEEDS))
    try:
        address = f"127.0.0.1:{free_port()}"
        process = Process("registry-seed", registry.argv(registry.write_config(work, address)), work / "registry.log")
        process.start()
        try:
            wait_until(lambda: registry.ready(address), "seed registry /v2/", process)
            for name, image in images.items():
                repository, _, tag = name.partition(":")
                push(image, registry=address, repository=repository, tag=tag, mount_from=mount_from)
        finally:
            process.stop()
        if not seed.exists():  # another `up` may have made it meanwhile: theirs is the same
            (work / "storage").rename(seed)
        for stale in SEEDS.iterdir():  # an older recipe's seed is never used again
            if stale != seed and not stale.name.startswith("making-"):
                shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return seed


def copy_seed(seed: Path, storage: Path) -> None:
    """Fill a (new) registry storage from `seed`: blobs hard-linked (copied across filesystems), the rest copied."""
    for source in sorted(seed.rglob("*")):
        target = storage / source.relative_to(seed)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.name == "data" and "blobs" in source.parts:
                try:
                    os.link(source, target)
                    continue
                except OSError:
                    pass  # another filesystem: copy
            shutil.copy2(source, target)


def seed_storage(images: dict[str, OCIImage], storage: Path, mount_from: tuple[str, ...]) -> bool:
    """Give a cluster's registry storage the base images from the seed; False (and logged) when it cannot."""
    try:
        copy_seed(make_seed(images, mount_from), storage)
        return True
    except (OSError, RuntimeError) as err:
        log.warning("seeding the registry storage %s failed (%s): pushing instead", storage, err)
        return False
