"""What the bootstrap tests share: machines in a temporary root, and a `systemctl` that records its
arguments (systemd is not PID 1 here)."""

from __future__ import annotations

from pathlib import Path

from invoke import Context

from provision.bootstrap import cluster
from provision.bootstrap.host import Host


def recording_systemctl(folder: Path) -> tuple[str, Path]:
    """A `systemctl` stand-in in `folder` appending each call's arguments to a log: (its path, the log)."""
    log = folder / "systemctl.log"
    script = folder / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    script.chmod(0o755)
    return str(script), log


def machines(root: Path, systemctl: str, nodes: list[tuple[str, str, str]]) -> list[cluster.Machine]:
    """Each (name, address, role) as a machine whose `/` is `root/<name>`, managed by `systemctl`."""
    return [cluster.Machine(Host(name, Context(), root=str(root / name), systemctl=systemctl), name, address, role)
            for name, address, role in nodes]
