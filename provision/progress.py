"""How `up` talks to a person: the phases as they go, and the summary at the end.

A provider reports through `Progress` (phase started, phase done with what it
made, a step inside a phase); kctl renders it on the console with a spinner
(kctl/cluster.py), and where no terminal is there — a CI log, Vagrant's
trigger — `LineProgress` prints one plain line per phase. `summary` says what
the user got: the nodes (role, address, pod CIDR, status), the kubeconfig,
where the logs are and what to type next, the same for every provider.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Protocol

from rich.console import Console
from rich.table import Table

from client import config as clientconfig
from provision import components
from provision.provider import Cluster


class Progress(Protocol):
    """Told as `up` goes: each phase's start, steps inside it, and what it made when it is done."""

    def phase(self, name: str) -> None: ...

    def step(self, detail: str) -> None:
        """Progress inside the current phase: one machine's step, a count of Nodes Ready."""
        ...

    def done(self, detail: str) -> None: ...


class Quiet:
    """No report (library callers, benchmarks)."""

    def phase(self, name: str) -> None:
        pass

    def step(self, detail: str) -> None:
        pass

    def done(self, detail: str) -> None:
        pass


class LineProgress:
    """One plain line per phase, `name: detail (1.2s)`, so logs and tests read cleanly; steps as indented lines."""

    def __init__(self) -> None:
        self.name = ""
        self.started = 0.0

    def phase(self, name: str) -> None:
        self.name, self.started = name, time.monotonic()

    def step(self, detail: str) -> None:
        print(f"  {detail}", flush=True)

    def done(self, detail: str) -> None:
        print(f"{self.name}: {detail} ({self.elapsed():.1f}s)", flush=True)
        self.name = ""

    def failed(self) -> None:
        """The phase in progress did not finish (an error or Ctrl-C): say which, on stderr."""
        if self.name:
            print(f"{self.name} failed after {self.elapsed():.1f}s", file=sys.stderr, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class Summary:
    """What the end of `up` shows: a title, a table of the nodes, then notes (kubeconfig, logs, next commands)."""

    title: str
    header: tuple[str, ...]
    rows: list[list[str]]
    notes: list[str]


def summary(cluster: Cluster, statuses: dict[str, str], seconds: float) -> Summary:
    """The summary of a cluster that is up; `statuses` from phases.node_statuses."""
    rows = [[n.name, n.role, n.address, n.pod_cidr, statuses.get(n.name, "Unknown")] for n in cluster.nodes]
    return Summary(f'cluster "{cluster.name}" is up in {seconds:.1f}s: apiserver https://{cluster.api_server}',
                   ("NAME", "ROLE", "INTERNAL-IP", "POD-CIDR", "STATUS"), rows,
                   [f"kubeconfig: {cluster.kubeconfig} (admin, client certificate); context "
                    f"{components.context_name(cluster.name)} set in {clientconfig.write_path()} for kubectl and kctl",
                    f"logs: {cluster.logs}",
                    "next (kctl takes the same commands):", "  kubectl get nodes -o wide",
                    "  kubectl run nginx --image=nginx", f"  {cluster.down_command}"])


def show(console: Console, shown: Summary) -> None:
    """The summary through rich: the nodes as a table (Ready in green, anything else in yellow), then the notes.

    (kctl prints it as a plain kubectl-style table when its output is not a terminal.)
    """
    table = Table(*shown.header, title=shown.title, title_justify="left", header_style="bold")
    for row in shown.rows:
        table.add_row(*row[:-1], f"[green]{row[-1]}[/]" if row[-1] == "Ready" else f"[yellow]{row[-1]}[/]")
    console.print(table)
    for line in shown.notes:
        console.print(line, highlight=False)
