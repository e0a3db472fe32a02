"""hostPath: a file or directory of the node itself, checked against the volume's `type` first.

Kubernetes' hostPath type checker, before any container sees the path:

| type | the path must be | when it is missing |
|---|---|---|
| "" (unset) | anything | left to the runtime (containerd makes a directory) |
| DirectoryOrCreate | a directory | made, mode 0755, parents too |
| Directory | a directory | FailedMount |
| FileOrCreate | not a directory | made empty, mode 0644 (its parent must exist) |
| File | not a directory | FailedMount |
| Socket / CharDevice / BlockDevice | that kind of file | FailedMount |

The messages are Kubernetes' own (`hostPath type check failed: /x is not a
directory`), so what users search for finds the answer. Symbolic links are
followed, as the runtime follows them when it bind-mounts the path.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from nodeagent.kubelet.volumes.errors import SetUpError

_KINDS: dict[str, tuple[Callable[[int], bool], str]] = {
    "Directory": (stat.S_ISDIR, "a directory"),
    "File": (lambda mode: not stat.S_ISDIR(mode), "a file"),
    "Socket": (stat.S_ISSOCK, "a socket file"),
    "CharDevice": (stat.S_ISCHR, "a character device"),
    "BlockDevice": (stat.S_ISBLK, "a block device"),
}
_CREATE = {"DirectoryOrCreate": "Directory", "FileOrCreate": "File"}


def set_up(path: Path, type_: str) -> None:
    """Check (and for the *OrCreate types make) the host path; SetUpError when it is not what `type_` says."""
    if not type_:
        return
    kind = _CREATE.get(type_, type_)
    if kind not in _KINDS:
        raise SetUpError(f"{type_} is an invalid volume type")
    if type_ in _CREATE and not os.path.lexists(path):
        _create(path, directory=kind == "Directory")
        return
    is_kind, description = _KINDS[kind]
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is None or not is_kind(mode):
        raise SetUpError(f"hostPath type check failed: {path} is not {description}")


def _create(path: Path, *, directory: bool) -> None:
    try:
        if directory:
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
        else:
            # Only the file: Kubernetes does not make a FileOrCreate path's parent directories.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
    except OSError as err:
        verb = "mkdir" if directory else "open"
        raise SetUpError(f"{verb} {path}: {(err.strerror or str(err)).lower()}") from None
