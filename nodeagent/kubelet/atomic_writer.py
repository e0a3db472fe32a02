"""Atomic projection of ConfigMap and Secret data into a pod's volume directory.

A container reads a configMap or secret volume while the kubelet may be
rewriting it (the object changed in the API). Like the kubelet's AtomicWriter,
the files never change in place; a new version is written beside the old one
and swapped in with one rename(2) of a symlink:

    <volume>/..2026_11_24_09_30_00.123abc/      the files of one version
    <volume>/..data -> ..2026_11_24_09_30_00.123abc
    <volume>/<key>  -> ..data/<key>              what the container opens

Renaming `..data_tmp` onto `..data` is atomic, so a reader resolving
`<key>` sees either every old file or every new one, never a half-written
mix. The user-visible symlinks only point through `..data`, so they need
changing only when the set of top-level names changes. The old version
directory is removed last.

A subPath mount of such a volume is bound (by the runtime, after resolving the
symlinks) to one file of the version current at container start, so it keeps
that content: the same limitation Kubernetes documents.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DATA_DIR = "..data"
DATA_DIR_TMP = "..data_tmp"


class ProjectionError(ValueError):
    """A projected path is unsafe or unusable (absolute, escaping, or reserved `..` name)."""


@dataclass(frozen=True)
class FileProjection:
    data: bytes
    mode: int


def validate_path(path: str) -> None:
    """Refuse paths the kubelet must not write: absolute, with `..`, or starting with `..`."""
    if not path:
        raise ProjectionError("item path is empty")
    pure = PurePosixPath(path)
    if pure.is_absolute():
        raise ProjectionError(f"item path {path} must be relative")
    if any(part == ".." for part in pure.parts):
        raise ProjectionError(f"item path {path} must not contain '..'")
    if path.startswith(".."):
        raise ProjectionError(f"item path {path} must not start with '..' (reserved for the atomic writer)")


def write(volume: Path, payload: dict[str, FileProjection]) -> bool:
    """Make `volume` hold exactly `payload` (relative path -> content, mode); True if it changed."""
    for rel in payload:
        validate_path(rel)
    volume.mkdir(parents=True, exist_ok=True)
    data_link = volume / DATA_DIR
    old_version = os.readlink(data_link) if data_link.is_symlink() else ""
    if old_version and _holds(volume / old_version, payload):
        return False

    # 1. The new version, complete, in a fresh directory nobody looks at yet.
    new_dir = Path(tempfile.mkdtemp(prefix=time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()), dir=volume))
    try:
        new_dir.chmod(0o755)  # mkdtemp makes it 0700: containers running as other users must read it
        for rel, projection in payload.items():
            target = new_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            target.write_bytes(projection.data)
            target.chmod(projection.mode)
        # 2. The swap: one rename of a symlink, atomic for every reader.
        tmp_link = volume / DATA_DIR_TMP
        tmp_link.unlink(missing_ok=True)
        tmp_link.symlink_to(new_dir.name)
        os.replace(tmp_link, data_link)
    except BaseException:
        shutil.rmtree(new_dir, ignore_errors=True)
        raise

    # 3. User-visible names: add the new top-level ones, drop the ones no longer projected.
    names = {PurePosixPath(rel).parts[0] for rel in payload}
    for name in names:
        link = volume / name
        if link.is_symlink():
            continue
        if link.is_dir():
            shutil.rmtree(link)  # a plain directory left by an older kubelet's layout
        elif link.exists():
            link.unlink()
        link.symlink_to(f"{DATA_DIR}/{name}")
    for entry in volume.iterdir():
        if entry.name.startswith("..") or entry.name in names:
            continue
        if entry.is_symlink() or entry.is_file():
            entry.unlink()
        elif entry.is_dir():
            shutil.rmtree(entry)

    # 4. The old version goes last: a reader that resolved through it a moment ago still finishes.
    if old_version:
        shutil.rmtree(volume / old_version, ignore_errors=True)
    return True


def _holds(version: Path, payload: dict[str, FileProjection]) -> bool:
    """Whether the version directory already has exactly these files, contents and modes."""
    try:
        present = {str(p.relative_to(version)) for p in version.rglob("*") if p.is_file()}
        if present != set(payload):
            return False
        for rel, projection in payload.items():
            target = version / rel
            if target.stat().st_mode & 0o7777 != projection.mode or target.read_bytes() != projection.data:
                return False
    except OSError:
        return False
    return True
