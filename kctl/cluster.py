"""`kctl cluster up|down|status|list|add-worker|remove-worker`: make, change and remove Flotilla clusters.

The commands are a thin face over the providers in provision/, each behind
one Protocol (provision/provider.py) and picked by `--provider`: local
(the default: a master and N worker nodes on this machine, each worker a
network namespace on a private bridge), ssh (an inventory's machines) and
vagrant (the Vagrantfile's VMs). `up` reports each phase as it goes (a spinner
and a tick with rich on a terminal, one plain line per phase otherwise, so
logs and tests read cleanly) and ends with a summary: the nodes, the
kubeconfig, what to type next.

`add-worker` and `remove-worker` change a running cluster's workers, for the
providers that can (provision.provider.Workers: the local one), with the same
progress lines and a table of the nodes after. remove-worker drains the node
first exactly as `kctl drain --ignore-daemonsets --delete-emptydir-data
--force` would (kubeadm's advice before removing a node): evictions, so
PodDisruptionBudgets are honoured; the provider then deletes the Node and the
machine's daemons.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.status import Status

from client import config as clientconfig
from kctl.commands import nodes
from kctl.errors import CliError
from kctl.printers import format_table
from proto import core_pb2
from proto.errors import NotFound
from provision import phases, progress
from provision.provider import PROVIDERS, Cluster, Options, Provider, ProvisionError, provider, workers

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


def summary(console: Console, cluster: Cluster, seconds: float, *, title: str = "") -> None:
    """Nodes (role, address, pod CIDR, status), the kubeconfig, and the next commands (`up`); with `title`, the
    nodes alone under it (add-worker, remove-worker)."""
    shown = progress.summary(cluster, phases.node_statuses(cluster.kubeconfig), seconds)
    if title:
        shown = dataclasses.replace(shown, title=title, notes=[])
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
@click.option("--masters", default=DEFAULTS.masters, show_default=True, type=click.IntRange(1, 7),
              help="control-plane nodes; more than one: each a node of its own with an etcd member and the whole "
                   "control plane, the API at one virtual IP (local provider)")
@click.option("--api-vip", default="", help="--masters > 1: the API's virtual IP (default: the subnet's last "
                                             "usable address)")
@click.option("--subnet", default=DEFAULTS.subnet, show_default=True, help="the nodes' private network")
@click.option("--bridge", default=DEFAULTS.bridge, show_default=True, help="host bridge joining the nodes")
@click.option("--pod-network", default=DEFAULTS.pod_network, show_default=True,
              help="pod addresses; the master gets the first /24, worker i the i-th after it")
@click.option("--api-port", default=DEFAULTS.api_port, show_default=True, type=int,
              help="the Kubernetes API (HTTPS, kubectl's) on the master address; gRPC with bearer tokens on "
                   "the next port, gRPC with client certificates (kctl, the daemons) on the one after")
@click.option("--etcd-port", default=DEFAULTS.etcd_port, show_default=True, type=int)
@click.option("--offline/--online", default=None,
              help="air-gapped: nodes pull images only from the cluster registry, never Docker Hub "
                   "(default: online, unless $FLOTILLA_OFFLINE=1 or the ssh inventory's `offline: true`)")
@provider_options
def up(name: str, workers: int, masters: int, api_vip: str, subnet: str, bridge: str, pod_network: str,
       api_port: int, etcd_port: int, offline: bool | None, kind: str, inventory: str | None,
       vagrant_root: str) -> None:
    """Start a cluster, wait for its nodes to be Ready, and point kubectl and kctl at it.

    The local provider makes it on this machine; --provider ssh bootstraps the machines of an --inventory
    file over SSH, --provider vagrant the Vagrantfile's VMs.
    """
    # SIGTERM (a CI job's timeout) unwinds like Ctrl-C, so a half-made cluster is taken down again.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if kind != "local" and (masters != DEFAULTS.masters or api_vip):
        # Machines are the inventory's (or the Vagrantfile's): a flag here would be silently ignored.
        where = ("list the masters (role: master) and api_vip in the inventory" if kind == "ssh" else
                 "set FLOTILLA_MASTERS=3 for `vagrant up` (the API's VIP is then <network>.10)")
        raise click.UsageError(f"--masters and --api-vip are for the local provider; with --provider {kind}, "
                               f"{where}")
    console = Console()
    shown = ConsoleProgress(console)
    started = time.monotonic()
    try:
        made = _provider(kind, name=name, workers=workers, masters=masters, api_vip=api_vip, subnet=subnet,
                         bridge=bridge, pod_network=pod_network,
                         api_port=api_port, etcd_port=etcd_port, inventory=inventory,
                         vagrant_root=vagrant_root, offline=offline).up(shown)
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


def _changing(command: Callable[[ConsoleProgress], Cluster]) -> tuple[Console, Cluster, float]:
    """Run a change of a running cluster with its progress on the console; a provider's refusal is kctl's error."""
    # SIGTERM (a CI job's timeout) unwinds like Ctrl-C, so a half-added worker is taken out again.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    console = Console()
    shown = ConsoleProgress(console)
    started = time.monotonic()
    try:
        changed = command(shown)
    except (ProvisionError, CliError) as err:
        shown.failed()
        raise click.ClickException(str(err)) from err
    except BaseException:
        shown.failed()
        raise
    return console, changed, time.monotonic() - started


@cluster.command("add-worker")
@click.option("--name", default=DEFAULTS.name, show_default=True, help="the running cluster")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 99), help="workers to add")
@provider_options
def add_worker(name: str, count: int, kind: str, inventory: str | None, vagrant_root: str) -> None:
    """Add worker nodes to a running cluster and wait until they are Ready.

    Each gets the next free address and pod CIDR, joins with a fresh bootstrap token good for it alone, and
    is labelled a worker; DaemonSets put their pods on it.
    """
    def add(shown: ConsoleProgress) -> Cluster:
        chosen = _provider(kind, name=name, inventory=inventory, vagrant_root=vagrant_root)
        return workers(chosen, "add").add_workers(count, shown)

    console, changed, seconds = _changing(add)
    summary(console, changed, seconds,
            title=f'cluster "{changed.name}": {count} worker{"s" if count > 1 else ""} added in {seconds:.1f}s, '
                  f"{len(changed.nodes)} nodes")


def _masters_of(chosen: Provider) -> Any:
    """The provider's side that adds and removes masters (the local one's), or kctl's error saying why not."""
    if not hasattr(chosen, "add_master"):
        raise CliError(f"the {chosen.kind} provider cannot add or remove masters of a running cluster")
    return chosen


@cluster.command("add-master")
@click.option("--name", default=DEFAULTS.name, show_default=True, help="the running cluster (made with --masters 3)")
@provider_options
def add_master(name: str, kind: str, inventory: str | None, vagrant_root: str) -> None:
    """Add a master to a running cluster of several: its etcd member joins, then its control plane and Node."""
    def add(shown: ConsoleProgress) -> Cluster:
        chosen = _provider(kind, name=name, inventory=inventory, vagrant_root=vagrant_root)
        made: Cluster = _masters_of(chosen).add_master(shown)
        return made

    console, changed, seconds = _changing(add)
    summary(console, changed, seconds, title=f'cluster "{changed.name}": a master added in {seconds:.1f}s, '
                                             f"{len(changed.nodes)} nodes")


@cluster.command("remove-master")
@click.argument("node")
@click.option("--name", default=DEFAULTS.name, show_default=True, help="the running cluster")
@provider_options
def remove_master(node: str, name: str, kind: str, inventory: str | None, vagrant_root: str) -> None:
    """Take the master NODE out of its cluster: its etcd member first, then its daemons, Node and namespace."""
    def remove(shown: ConsoleProgress) -> Cluster:
        chosen = _provider(kind, name=name, inventory=inventory, vagrant_root=vagrant_root)
        made: Cluster = _masters_of(chosen).remove_master(node, shown)
        return made

    console, changed, seconds = _changing(remove)
    summary(console, changed, seconds, title=f'cluster "{changed.name}": {node} removed in {seconds:.1f}s, '
                                             f"{len(changed.nodes)} nodes")


def drain_for_removal(timeout: float) -> Callable[[Path, str], None]:
    """`kctl drain NODE --ignore-daemonsets --delete-emptydir-data --force` as the cluster's admin: the node is
    going, so every pod on it goes (evicted: budgets decide when), except DaemonSet pods, which leave with the
    Node. A node that never registered has nothing to drain; on a NotReady node no kubelet would ever stop an
    evicted pod (the drain would wait for ever), and its pods are unavailable already: they are left to go with
    the Node, whose deletion hands them to the pod garbage collector."""
    def drain(kubeconfig: Path, node: str) -> None:
        async def body() -> None:
            async with clientconfig.load(kubeconfig=str(kubeconfig)).client(timeout=10) as client:
                try:
                    click.echo(await nodes.set_schedulable(client, node, False))
                    registered = await client.get(core_pb2.Node, node)
                except NotFound:
                    return
                if not any(c.type == "Ready" and c.status == "True" for c in registered.status.conditions):
                    click.echo(f"Warning: node {node} is NotReady: its pods are not evicted (no kubelet would stop "
                               "them); they are deleted with the Node", err=True)
                    return
                await nodes.evict_node_pods(client, node, force=True, ignore_daemonsets=True,
                                            delete_emptydir_data=True, timeout=timeout)

        asyncio.run(body())

    return drain


@cluster.command("remove-worker")
@click.argument("node")
@click.option("--name", default=DEFAULTS.name, show_default=True, help="the running cluster")
@click.option("--timeout", type=float, default=0.0,
              help="Give up draining after this many seconds (0: wait as long as PodDisruptionBudgets make it).")
@provider_options
def remove_worker(node: str, name: str, timeout: float, kind: str, inventory: str | None, vagrant_root: str) -> None:
    """Drain the worker NODE, delete its Node and remove it from its cluster (never the master)."""
    [node] = nodes.node_names((node,))

    def remove(shown: ConsoleProgress) -> Cluster:
        chosen = _provider(kind, name=name, inventory=inventory, vagrant_root=vagrant_root)
        return workers(chosen, "remove").remove_worker(node, shown, drain_for_removal(timeout))

    console, changed, seconds = _changing(remove)
    summary(console, changed, seconds,
            title=f'cluster "{changed.name}": {node} removed in {seconds:.1f}s, {len(changed.nodes)} nodes')
