"""`kctl cluster up|down|status|list`: make and remove Flotilla clusters.

The commands are a thin face over the providers in provision/; the local
provider (provision/local.py) makes a master and N worker nodes on this
machine, each worker a network namespace on a private bridge.
"""

from __future__ import annotations

import signal
import sys
import time

import click

from provision import local


@click.group("cluster")
def cluster() -> None:
    """Create, inspect and delete clusters (local provider)."""


@cluster.command("up")
@click.option("--name", default="flotilla", show_default=True, help="cluster name")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 99), help="worker nodes")
@click.option("--subnet", default=local.DEFAULT_SUBNET, show_default=True, help="the nodes' private network")
@click.option("--bridge", default=local.DEFAULT_BRIDGE, show_default=True, help="host bridge joining the nodes")
@click.option("--pod-network", default=local.DEFAULT_POD_NETWORK, show_default=True,
              help="pod addresses; worker i gets the i-th /24")
@click.option("--api-port", default=local.DEFAULT_API_PORT, show_default=True, type=int)
@click.option("--etcd-port", default=local.DEFAULT_ETCD_PORT, show_default=True, type=int)
def up(name: str, workers: int, subnet: str, bridge: str, pod_network: str, api_port: int, etcd_port: int) -> None:
    """Start a cluster on this machine, wait for its nodes to be Ready, and point kctl at it."""
    # SIGTERM (a CI job's timeout) unwinds like Ctrl-C, so a half-made cluster is taken down again.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    state = local.up(name, workers=workers, subnet=subnet, bridge=bridge, pod_network=pod_network,
                     api_port=api_port, etcd_port=etcd_port)
    click.echo(f'cluster "{name}" is up in {time.monotonic() - started:.1f}s: apiserver {state.api_address}, '
               f"master (DNS) {state.master_address} on {state.bridge}")
    for node in state.node_infos():
        click.echo(f"  node {node.name}: {node.address}, pods {node.pod_cidr}")
    click.echo(f"kubeconfig: {state.kubeconfig} (copied to kctl's default config)")
    click.echo(f"logs: {local.cluster_dir(name) / 'logs'}")
    click.echo("next: kctl get nodes; kctl run nginx --image=nginx; kctl cluster down --name " + name)


@cluster.command("down")
@click.option("--name", default="flotilla", show_default=True)
def down(name: str) -> None:
    """Stop a cluster and remove everything it made."""
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
