"""One machine the bootstrap works on, seen only through Invoke's `Context.run`.

`invoke.Context` runs commands here; `fabric.Connection` (a subclass) runs them
over SSH. Everything the bootstrap does to a machine — write a file, run
systemctl, install wheels — goes through `Host.run`, so the same steps turn a
VM, an SSH server or a test's temporary folder into a node.

`root` prefixes every path the steps name ("/" on a real node, a temporary
folder in tests); `systemctl` is the command that manages units (a stand-in
script in tests, where there is no systemd). File writes compare SHA-256
digests first and only write what differs: running the bootstrap twice
changes nothing, and callers learn which files changed (so they restart only
the units that read them).
"""

from __future__ import annotations

import base64
import hashlib
import io
import posixpath
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from provision.provider import ProvisionError

ARG_CHUNK = 60_000  # base64 characters per command line


class Runner(Protocol):
    """What the steps need of a machine: invoke.Context and fabric.Connection both fit."""

    def run(self, command: str, **kwargs: Any) -> Any: ...


class BootstrapError(ProvisionError):
    """A bootstrap step failed on a machine (the message names the machine and the command)."""


@dataclass
class Host:
    """A machine and how to act on it."""

    name: str
    c: Runner
    root: str = "/"
    sudo: bool = False
    systemctl: str = "systemctl"

    def path(self, path: str) -> str:
        """Where `path` (absolute, as on a real node) is on this machine."""
        return posixpath.join(self.root, path.lstrip("/"))

    def run(self, command: str, *, stdin: str | None = None, check: bool = True, timeout: float | None = None) -> str:
        wrapped = f"sudo -n sh -c {shlex.quote(command)}" if self.sudo else command
        kwargs: dict[str, Any] = {"hide": True, "warn": True, "pty": False}
        # Never our own stdin (a terminal, a trigger's, pytest's): only what the step sends.
        kwargs["in_stream"] = io.StringIO(stdin) if stdin is not None else False
        if timeout is not None:
            kwargs["timeout"] = timeout
        result = self.c.run(wrapped, **kwargs)
        if check and result.exited != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise BootstrapError(f"{self.name}: `{command[:120]}` exited {result.exited}: {' | '.join(detail)}")
        return str(result.stdout)

    def digests(self, paths: list[str]) -> dict[str, str]:
        """SHA-256 of each path that exists on the machine, in one round trip."""
        if not paths:
            return {}
        out = self.run("sha256sum -- " + " ".join(shlex.quote(self.path(p)) for p in paths) + " 2>/dev/null; true")
        by_full = {self.path(p): p for p in paths}
        found = {}
        for line in out.splitlines():
            digest, _, full = line.partition("  ")
            if full in by_full:
                found[by_full[full]] = digest
        return found

    def sync_files(self, files: dict[str, tuple[bytes, int]]) -> set[str]:
        """Make each path hold its content (with its mode); returns the paths that were written."""
        have = self.digests(sorted(files))
        changed = {p for p, (data, _) in files.items() if have.get(p) != hashlib.sha256(data).hexdigest()}
        # Inline base64 in the command line, not stdin: invoke feeds stdin one byte per 10 ms. Small
        # files share one command (one SSH round trip); one argument holds at most 128 KiB (MAX_ARG_STRLEN).
        script: list[str] = []
        for path in sorted(changed):
            data, mode = files[path]
            full = shlex.quote(self.path(path))
            tmp = shlex.quote(f"{self.path(path)}.flotilla-new")
            encoded = base64.b64encode(data).decode()
            chunks = [encoded[i:i + ARG_CHUNK] for i in range(0, len(encoded), ARG_CHUNK)] or [""]
            script.append(f"mkdir -p {shlex.quote(posixpath.dirname(self.path(path)))} && : > {tmp}")
            script += [f"printf %s {chunk} | base64 -d >> {tmp}" for chunk in chunks]
            script.append(f"chmod {mode:o} {tmp} && mv -f {tmp} {full}")
        batch: list[str] = []
        for line in [*script, ""]:
            if batch and (not line or sum(map(len, batch)) + len(line) > ARG_CHUNK):
                self.run(" && ".join(batch))
                batch = []
            if line:
                batch.append(line)
        return changed

    def put_text(self, path: str, text: str, mode: int = 0o644) -> bool:
        """Write one file if its content differs; True when it was written."""
        return bool(self.sync_files({path: (text.encode(), mode)}))

    def put_local_files(self, files: dict[str, Path]) -> set[str]:
        """Copy large local files (wheels, image archives) to the machine, those whose digest differs."""
        have = self.digests(sorted(files))
        changed = {p for p, local in files.items() if have.get(p) != _file_digest(local)}
        put = getattr(self.c, "put", None)  # fabric.Connection has SFTP; invoke.Context is this machine
        for path in sorted(changed):
            full = self.path(path)
            self.run(f"mkdir -p {shlex.quote(posixpath.dirname(full))}")
            if put is None:
                shutil.copyfile(files[path], full)
                continue
            staged = f"/tmp/flotilla-upload-{hashlib.sha256(path.encode()).hexdigest()[:12]}"
            put(str(files[path]), staged)
            self.run(f"mv -f {shlex.quote(staged)} {shlex.quote(full)}")
        return changed

    def read_text(self, path: str) -> str | None:
        out = self.run(f"cat {shlex.quote(self.path(path))} 2>/dev/null || echo -n __absent__")
        return None if out == "__absent__" else out


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
