"""`kctl cluster up|down|status|list`: make and remove Flotilla clusters.

The commands are a thin face over the providers in provision/; the local
provider (provision/local.py) makes a master and N worker nodes on this
machine, each worker a network namespace on a private bridge. `up` reports
each phase as it goes (a spinner and a tick with rich on a terminal, one plain
line per phase otherwise, so logs and tests read cleanly) and ends with a
summary: the nodes, the kubeconfig, what to type next.
"""

from __future__ import annotations

import signal
import sys
import time

import click
from rich.console import Console
from rich.status import Status
from rich.table import Table

from kctl.printers import format_table
from provision import local


class ConsoleProgress:
    """local.Progress on the console: rich spinner and ticks on a terminal, plain lines when not."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.name = ""
        self.started = 0.0
        self.spinner: Status | None = None

    def phase(self, name: str) -> None:
        self.name, self.started = name, time.monotonic()
        if self.console.is_terminal:
            self.spinner = self.console.status(f"[bold]{name}[/]…")
            self.spinner.start()

    def done(self, detail: str) -> None:
        self._stop()
        took = f"({time.monotonic() - self.started:.1f}s)"
        if self.console.is_terminal:
            self.console.print(f"[green]✓[/] [bold]{self.name:<15}[/] {detail} [dim]{took}[/]", highlight=False)
        else:
            click.echo(f"{self.name}: {detail} {took}")
        self.name = ""

    def failed(self) -> None:
        """The phase in progress did not finish (an error or Ctrl-C): say which."""
        self._stop()
        if self.name:
            message = f"{self.name} failed after {time.monotonic() - self.started:.1f}s"
            if self.console.is_terminal:
                self.console.print(f"[red]✗[/] {message}", highlight=False)
            else:
                click.echo(message, err=True)

    def _stop(self) -> None:
        if self.spinner is not None:
            self.spinner.stop()
            self.spinner = None


def summary(console: Console, state: local.ClusterState, seconds: float) -> None:
    """Nodes (role, address, pod CIDR, status), the kubeconfig, and the next commands."""
    statuses = local.node_statuses(state)
    rows = [[n.name, "control-plane" if n.control_plane else "worker", n.address, n.pod_cidr,
             statuses.get(n.name, "Unknown")] for n in state.node_infos()]
    header = ["NAME", "ROLE", "INTERNAL-IP", "POD-CIDR", "STATUS"]
    lines = [f'cluster "{state.name}" is up in {seconds:.1f}s: apiserver https://{state.api_address}',
             f"kubeconfig: {state.kubeconfig} (admin, client certificate; copied to kctl's default config)",
             f"logs: {local.cluster_dir(state.name) / 'logs'}",
             "next:", "  kctl get nodes -o wide", "  kctl run nginx --image=nginx",
             f"  kctl cluster down --name {state.name}"]
    if not console.is_terminal:
        click.echo("\n".join([lines[0], *format_table([header, *rows], indent="  "), *lines[1:]]))
        return
    table = Table(*header, title=lines[0], title_justify="left", header_style="bold")
    for row in rows:
        row[-1] = f"[green]{row[-1]}[/]" if row[-1] == "Ready" else f"[yellow]{row[-1]}[/]"
        table.add_row(*row)
    console.print(table)
    for line in lines[1:]:
        console.print(line, highlight=False)


PROVIDER_OPTION = click.option("--provider", type=click.Choice(["local", "ssh"]), default="local",
                               show_default=True, help="local: network namespaces here; ssh: existing machines")
INVENTORY_OPTION = click.option("--inventory", type=click.Path(exists=True, dir_okay=False),
                                help="--provider ssh: YAML of hosts (name, address, user, key_file, role)")


def _ssh(action: str, inventory: str | None) -> None:
    """The SSH provider (provision/ssh.py): the same bootstrap as Vagrant's, on the inventory's machines."""
    from provision import ssh
    from provision.bootstrap.cluster import summary as ssh_summary
    from provision.bootstrap.host import BootstrapError

    if not inventory:
        raise click.UsageError("--provider ssh needs --inventory hosts.yaml")
    try:
        hosts = ssh.load_inventory(inventory)
        if action == "up":
            click.echo(ssh_summary(ssh.up(hosts)))
        else:
            ssh.down(hosts)
            click.echo(f'cluster "{hosts.name}" removed from {len(hosts.hosts)} machines')
    except (ssh.InventoryError, BootstrapError) as err:
        raise click.ClickException(str(err)) from err


@click.group("cluster")
def cluster() -> None:
    """Create, inspect and delete clusters (local provider)."""


@cluster.command("up")
@click.option("--name", default="flotilla", show_default=True, help="cluster name")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 99), help="worker nodes")
@click.option("--subnet", default=local.DEFAULT_SUBNET, show_default=True, help="the nodes' private network")
@click.option("--bridge", default=local.DEFAULT_BRIDGE, show_default=True, help="host bridge joining the nodes")
@click.option("--pod-network", default=local.DEFAULT_POD_NETWORK, show_default=True,
              help="pod addresses; the master gets the first /24, worker i the i-th after it")
@click.option("--api-port", default=local.DEFAULT_API_PORT, show_default=True, type=int,
              help="apiserver port on the master address (client certificates); bearer tokens on the next one")
@click.option("--etcd-port", default=local.DEFAULT_ETCD_PORT, show_default=True, type=int)
@PROVIDER_OPTION
@INVENTORY_OPTION
def up(name: str, workers: int, subnet: str, bridge: str, pod_network: str, api_port: int, etcd_port: int,
       provider: str, inventory: str | None) -> None:
    """Start a cluster on this machine, wait for its nodes to be Ready, and point kctl at it.

    With --provider ssh: bootstrap the machines of an --inventory file over SSH instead.
    """
    if provider == "ssh":
        _ssh("up", inventory)
        return
    # SIGTERM (a CI job's timeout) unwinds like Ctrl-C, so a half-made cluster is taken down again.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    console = Console()
    progress = ConsoleProgress(console)
    started = time.monotonic()
    try:
        state = local.up(name, workers=workers, subnet=subnet, bridge=bridge, pod_network=pod_network,
                         api_port=api_port, etcd_port=etcd_port, progress=progress)
    except BaseException:
        progress.failed()
        raise
    summary(console, state, time.monotonic() - started)


@cluster.command("down")
@click.option("--name", default="flotilla", show_default=True)
@PROVIDER_OPTION
@INVENTORY_OPTION
def down(name: str, provider: str, inventory: str | None) -> None:
    """Stop a cluster and remove everything it made."""
    if provider == "ssh":
        _ssh("down", inventory)
        return
    if not local.down(name):
        raise click.ClickException(f'cluster "{name}" not found')
    click.echo(f'cluster "{name}" deleted')


@cluster.command("status")
@click.option("--name", default="flotilla", show_default=True)
def status(name: str) -> None:
    """Show whether each component of a cluster runs."""
    components = local.status(name)
    if not components:
        raise click.ClickException(f'cluster "{name}" not found')
    width = max(len(c) for c in components)
    click.echo(f"{'COMPONENT'.ljust(width)}   STATUS")
    for component, alive in components.items():
        click.echo(f"{component.ljust(width)}   {'Running' if alive else 'Stopped'}")


@cluster.command("list")
def list_clusters() -> None:
    """List the clusters made on this machine."""
    for name in local.names():
        click.echo(name)
