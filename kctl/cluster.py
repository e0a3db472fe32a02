"""`kctl cluster up|down|status|list`: make and remove Flotilla clusters.

The commands are a thin face over the providers in provision/, each behind
one Protocol (provision/provider.py) and picked by `--provider`: local
(the default: a master and N worker nodes on this machine, each worker a
network namespace on a private bridge), ssh (an inventory's machines) and
vagrant (the Vagrantfile's VMs). `up` reports each phase as it goes (a spinner
and a tick with rich on a terminal, one plain line per phase otherwise, so
logs and tests read cleanly) and ends with a summary: the nodes, the
kubeconfig, what to type next.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.status import Status

from kctl.printers import format_table
from provision import phases, progress
from provision.provider import PROVIDERS, Cluster, Options, Provider, ProvisionError, provider

DEFAULTS = Options()


class ConsoleProgress:
    """provision.progress.Progress on the console: rich spinner and ticks on a terminal, plain lines when not."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.lines = progress.LineProgress()
        self.spinner: Status | None = None

    def phase(self, name: str) -> None:
        self.lines.phase(name)
        if self.console.is_terminal:
            self.spinner = self.console.status(f"[bold]{name}[/]…")
            self.spinner.start()

    def step(self, detail: str) -> None:
        if self.spinner is not None:
            self.spinner.update(f"[bold]{self.lines.name}[/]… {detail}")
        elif not self.console.is_terminal:
            self.lines.step(detail)

    def done(self, detail: str) -> None:
        self._stop()
        if not self.console.is_terminal:
            self.lines.done(detail)
            return
        took = f"({self.lines.elapsed():.1f}s)"
        self.console.print(f"[green]✓[/] [bold]{self.lines.name:<15}[/] {detail} [dim]{took}[/]", highlight=False)
        self.lines.name = ""

    def failed(self) -> None:
        """The phase in progress did not finish (an error or Ctrl-C): say which."""
        self._stop()
        if not self.console.is_terminal:
            self.lines.failed()
        elif self.lines.name:
            self.console.print(f"[red]✗[/] {self.lines.name} failed after {self.lines.elapsed():.1f}s",
                               highlight=False)

    def _stop(self) -> None:
        if self.spinner is not None:
            self.spinner.stop()
            self.spinner = None


def summary(console: Console, cluster: Cluster, seconds: float) -> None:
    """Nodes (role, address, pod CIDR, status), the kubeconfig, and the next commands."""
    shown = progress.summary(cluster, phases.node_statuses(cluster.kubeconfig), seconds)
    if console.is_terminal:
        progress.show(console, shown)
        return
    click.echo("\n".join([shown.title, *format_table([list(shown.header), *shown.rows], indent="  "),
                          *shown.notes]))


def provider_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--provider and what the SSH and Vagrant providers need to find their machines."""
    for option in reversed([
        click.option("--provider", "kind", type=click.Choice(list(PROVIDERS)), default="local", show_default=True,
                     help="local: network namespaces here; ssh: an inventory's machines; vagrant: the "
                          "Vagrantfile's VMs"),
        click.option("--inventory", type=click.Path(exists=True, dir_okay=False),
                     help="--provider ssh: YAML of hosts (name, address, user, key_file, role)"),
        click.option("--vagrant-root", default=".", show_default=True,
                     help="--provider vagrant: the folder holding the Vagrantfile"),
    ]):
        command = option(command)
    return command


def _provider(kind: str, **options: Any) -> Provider:
    given = {k: v for k, v in options.items() if v is not None}
    return provider(kind, Options(**given))


@click.group("cluster")
def cluster() -> None:
    """Create, inspect and delete clusters."""


@cluster.command("up")
@click.option("--name", default=DEFAULTS.name, show_default=True, help="cluster name (ssh: the inventory's)")
@click.option("--workers", default=DEFAULTS.workers, show_default=True, type=click.IntRange(1, 99),
              help="worker nodes")
@click.option("--subnet", default=DEFAULTS.subnet, show_default=True, help="the nodes' private network")
@click.option("--bridge", default=DEFAULTS.bridge, show_default=True, help="host bridge joining the nodes")
@click.option("--pod-network", default=DEFAULTS.pod_network, show_default=True,
              help="pod addresses; the master gets the first /24, worker i the i-th after it")
@click.option("--api-port", default=DEFAULTS.api_port, show_default=True, type=int,
              help="the Kubernetes API (HTTPS, kubectl's) on the master address; gRPC with bearer tokens on "
                   "the next port, gRPC with client certificates (kctl, the daemons) on the one after")
@click.option("--etcd-port", default=DEFAULTS.etcd_port, show_default=True, type=int)
@provider_options
def up(name: str, workers: int, subnet: str, bridge: str, pod_network: str, api_port: int, etcd_port: int,
       kind: str, inventory: str | None, vagrant_root: str) -> None:
    """Start a cluster, wait for its nodes to be Ready, and point kubectl and kctl at it.

    The local provider makes it on this machine; --provider ssh bootstraps the machines of an --inventory
    file over SSH, --provider vagrant the Vagrantfile's VMs.
    """
    # SIGTERM (a CI job's timeout) unwinds like Ctrl-C, so a half-made cluster is taken down again.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    console = Console()
    shown = ConsoleProgress(console)
    started = time.monotonic()
    try:
        made = _provider(kind, name=name, workers=workers, subnet=subnet, bridge=bridge, pod_network=pod_network,
                         api_port=api_port, etcd_port=etcd_port, inventory=inventory,
                         vagrant_root=vagrant_root).up(shown)
    except ProvisionError as err:
        shown.failed()
        raise click.ClickException(str(err)) from err
    except BaseException:
        shown.failed()
        raise
    summary(console, made, time.monotonic() - started)


@cluster.command("down")
@click.option("--name", default=DEFAULTS.name, show_default=True)
@provider_options
def down(name: str, kind: str, inventory: str | None, vagrant_root: str) -> None:
    """Stop a cluster and remove everything it made."""
    chosen = _provider(kind, name=name, inventory=inventory, vagrant_root=vagrant_root)
    try:
        removed = chosen.down()
    except ProvisionError as err:
        raise click.ClickException(str(err)) from err
    if not removed:
        raise click.ClickException(f'cluster "{name}" not found')
    click.echo(f'cluster "{chosen.name}" deleted')


@cluster.command("status")
@click.option("--name", default=DEFAULTS.name, show_default=True)
@provider_options
def status(name: str, kind: str, inventory: str | None, vagrant_root: str) -> None:
    """Show whether each component of a cluster runs."""
    try:
        components = _provider(kind, name=name, inventory=inventory, vagrant_root=vagrant_root).status()
    except ProvisionError as err:
        raise click.ClickException(str(err)) from err
    if not components:
        raise click.ClickException(f'cluster "{name}" not found')
    click.echo("\n".join(format_table([["COMPONENT", "STATUS"],
                                        *([c, "Running" if alive else "Stopped"] for c, alive in components.items())])))


@cluster.command("list")
@click.option("--provider", "kind", type=click.Choice(list(PROVIDERS)), default="local", show_default=True)
def list_clusters(kind: str) -> None:
    """List the clusters made from this machine."""
    for name in provider(kind, DEFAULTS).clusters():
        click.echo(name)
