"""`kctl cluster up|down|status|list`: make and remove Flotilla clusters.

The commands are a thin face over the providers in provision/; today the local
provider starts the control plane on this machine.
"""

from __future__ import annotations

import click

from provision import local


@click.group("cluster")
def cluster() -> None:
    """Create, inspect and delete clusters (local provider)."""


@cluster.command("up")
@click.option("--name", default="flotilla", show_default=True, help="cluster name")
@click.option("--api-port", default=local.DEFAULT_API_PORT, show_default=True, type=int)
@click.option("--etcd-port", default=local.DEFAULT_ETCD_PORT, show_default=True, type=int)
def up(name: str, api_port: int, etcd_port: int) -> None:
    """Start a cluster on this machine and point kctl at it."""
    state = local.up(name, api_port=api_port, etcd_port=etcd_port)
    click.echo(f'cluster "{name}" is up: apiserver {state.api_address}, etcd {state.etcd_url}')
    click.echo(f"kubeconfig: {state.kubeconfig} (copied to kctl's default config)")
    click.echo(f"logs: {local.cluster_dir(name) / 'logs'}")


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
