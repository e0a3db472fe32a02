"""subPath mounts that cannot leave their volume.

A container can write a symbolic link into a shared volume (`ln -s / evil`)
and a second container mounting `subPath: evil` would then get the node's
root: CVE-2017-1002101. As the kubelet does since, the subPath is never
handed to the runtime as a path to resolve:

1. the path is resolved once (symlinks and all) and must still lie inside the
   volume's own resolved directory;
2. the resolved path is opened one component at a time beneath the volume
   with O_PATH|O_NOFOLLOW, so a link swapped in after step 1 makes the open
   fail instead of leading elsewhere; missing directories are made the same
   way (for volumes the pod may write: emptyDir, hostPath);
3. what was opened is bind-mounted from /proc/self/fd/<fd> onto
   <pod dir>/volume-subpaths/<volume>/<container>/<index>, and that mount —
   pinned to the very file checked — is what the container gets.

The node's bind lasts only while the runtime creates and starts the container
(whose mount namespace then holds its own copy): released right after, so no
bind into a hostPath stays on the node for a tree removal to reach through. A
re-created container is bound afresh; the pod's teardown detaches any left.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from nodeagent.kubelet.volumes import mounts


class SubPathError(Exception):
    """The subPath leaves its volume, or cannot be opened or bound (the detail stays in the kubelet's log)."""


def prepare(volume: Path, sub_path: str, target: Path, *, create: bool) -> None:
    """Bind `volume`/`sub_path` at `target`, checked to stay inside `volume`; SubPathError if it cannot."""
    pure = PurePosixPath(sub_path)
    if pure.is_absolute() or ".." in pure.parts:
        raise SubPathError(f"subPath {sub_path} must be a relative path within the volume")
    base = Path(os.path.realpath(volume))
    resolved = Path(os.path.realpath(base / sub_path))
    if resolved != base and base not in resolved.parents:
        raise SubPathError(f"subPath {sub_path} resolves to {resolved}, outside the volume {base}")
    fd = _open_beneath(base, resolved.relative_to(base).parts, create=create)
    try:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        target.parent.mkdir(parents=True, exist_ok=True)
        if mounts.is_mount_point(target.resolve()):
            mounts.unmount(target)  # the previous instance's bind: this one gets the path as it is now
        if target.is_dir() and not is_dir:
            target.rmdir()
        elif target.exists() and not target.is_dir() and is_dir:
            target.unlink()
        if is_dir:
            target.mkdir(exist_ok=True)
        else:
            target.touch(exist_ok=True)
        mounts.bind(f"/proc/self/fd/{fd}", target)
    except OSError as err:
        raise SubPathError(str(err)) from None
    finally:
        os.close(fd)


def _open_beneath(base: Path, parts: tuple[str, ...], *, create: bool) -> int:
    """An O_PATH descriptor of base/parts, no component a symbolic link; directories made if `create`."""
    flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(base, flags | os.O_DIRECTORY)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        for part in parts:
            try:
                child = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise SubPathError(f"subPath component {part} does not exist in {base}") from None
                os.mkdir(part, mode, dir_fd=fd)
                child = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
                os.chmod(f"/proc/self/fd/{child}", mode)  # the volume's own mode, whatever the umask
            os.close(fd)
            fd = child
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise SubPathError(f"subPath component {part} of {base} became a symbolic link")
        return fd
    except BaseException:
        os.close(fd)
        raise
