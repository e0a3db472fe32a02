"""systemd units for Flotilla's daemons on a provisioned machine.

Each daemon is one `flotilla-<name>.service` whose ExecStart is the argv the
components module computes (the same argv the local provider supervises), with
`Restart=always` so systemd does what provision/supervisor.py does locally.
There is no `Type=`: every unit is `simple`, so `systemctl enable --now`
returns once the daemon is forked, never waiting for it to be ready (an etcd
member of a new cluster is ready only once a quorum of masters runs).
A `Unit` also names the files its daemon reads: when one of them changes, the
bootstrap restarts that unit and no other.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

UNIT_DIR = "/etc/systemd/system"


@dataclass(frozen=True)
class Unit:
    """One daemon as a systemd service."""

    name: str  # the daemon: "apiserver" -> flotilla-apiserver.service
    argv: list[str]
    reads: tuple[str, ...] = ()  # files whose change restarts it
    after: tuple[str, ...] = ()  # daemons it starts after (and needs)
    environment: dict[str, str] = field(default_factory=dict)
    # containerd and etcd keep state that must outlive a restart of the unit: kill only the main process.
    kill_mode: str = "control-group"

    @property
    def service(self) -> str:
        return f"flotilla-{self.name}.service"

    @property
    def path(self) -> str:
        return f"{UNIT_DIR}/{self.service}"

    def text(self) -> str:
        after = " ".join(f"flotilla-{a}.service" for a in self.after)
        lines = ["[Unit]", f"Description=Flotilla {self.name}", f"After=network.target {after}".rstrip(),
                 # Never give up (systemd's default stops a unit after 5 starts in 10 s): an apiserver whose
                 # etcd waits for the other masters' members may fail for minutes while they boot.
                 "StartLimitIntervalSec=0"]
        if after:
            lines.append(f"Wants={after}")
        lines += ["", "[Service]"]
        lines += [f"Environment={shlex.quote(f'{k}={v}')}" for k, v in sorted(self.environment.items())]
        lines += [
            f"ExecStart={shlex.join(self.argv)}",
            "Restart=always",
            # Like the local supervisor: back within a second, but not a busy loop.
            "RestartSec=1",
            f"KillMode={self.kill_mode}",
            "LimitNOFILE=1048576",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
        return "\n".join(lines)
