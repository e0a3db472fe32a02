"""`kctl etcd snapshot save|restore`: back up and restore the cluster's etcd (on the master).

Both talk to etcd (or its files) directly, not through the apiserver: they are
operator tools for the machine that runs etcd. The etcd endpoint defaults to
the local cluster's (`kctl cluster up`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from kctl.errors import CliError
from provision import etcd_backup, local


def _default_endpoint(cluster: str) -> str:
    state = local.load_state(cluster)
    if state is None:
        raise CliError(f'no local cluster "{cluster}": pass --endpoints http://HOST:PORT')
    return state.etcd_url


@click.group("etcd")
def etcd() -> None:
    """Operate the cluster's etcd (run on the master)."""


@etcd.group("snapshot")
def snapshot() -> None:
    """Save or restore etcd snapshots."""


@snapshot.command("save")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--endpoints", default="", help="etcd client URL (default: the local cluster's)")
@click.option("--cluster", default="flotilla", show_default=True, help="local cluster whose etcd to use")
def save(file: Path, endpoints: str, cluster: str) -> None:
    """Write a consistent snapshot of etcd to FILE."""
    endpoint = endpoints or _default_endpoint(cluster)
    try:
        size, digest = asyncio.run(etcd_backup.save(endpoint, file))
    except (OSError, RuntimeError) as exc:
        raise CliError(f"snapshot failed: {exc}") from None
    click.echo(f"Snapshot saved at {file} ({size} bytes, sha256 {digest[:16]}…)")


@snapshot.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="new, empty etcd data directory to create")
@click.option("--name", default="flotilla", show_default=True, help="the restored member's name")
@click.option("--initial-advertise-peer-urls", "peer_url", default="http://127.0.0.1:2380", show_default=True)
def restore(file: Path, data_dir: Path, name: str, peer_url: str) -> None:
    """Turn snapshot FILE into an etcd data directory; start etcd on it to recover the cluster."""
    try:
        etcd_backup.restore(file, data_dir, name=name, peer_url=peer_url)
    except (OSError, RuntimeError) as exc:
        raise CliError(str(exc)) from None
    click.echo(f"Restored {file} into {data_dir}: start etcd with --data-dir {data_dir}")
