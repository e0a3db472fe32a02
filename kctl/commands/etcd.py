"""`kctl etcd snapshot save|restore`: back up and restore the cluster's etcd (on the master).

Both talk to etcd (or its files) directly, not through the apiserver: they are
operator tools for the machine that runs etcd. The etcd endpoint defaults to
the local cluster's (`kctl cluster up`). A cluster's etcd takes only TLS
clients with a certificate its own CA signed, so `save` presents the backup
client certificate from the cluster's PKI folder (`config/pki/etcd/`, root's
only) or the one `--cacert/--cert/--key` name (etcdctl's flags): without them
it refuses, and the snapshot it writes is 0600.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from controlplane.apiserver.storage import EtcdClientTLS
from kctl.errors import CliError
from kctl.printers import format_table
from provision import components, etcd_backup, etcd_members, local


def _endpoint_and_credentials(endpoints: str, cluster: str, cacert: str, cert: str,
                              key: str) -> tuple[str, EtcdClientTLS | None]:
    """The etcd to snapshot and the client certificate to show it: the flags', else the local cluster's."""
    given = [cacert, cert, key]
    if any(given) and not all(given):
        raise CliError("--cacert, --cert and --key go together")
    state = local.load_state(cluster)
    endpoint = endpoints or (state.etcd_url if state else "")
    if not endpoint:
        raise CliError(f'no local cluster "{cluster}": pass --endpoints https://HOST:PORT with --cacert, --cert '
                       "and --key")
    if all(given):
        files = (cacert, cert, key)
    elif endpoint.startswith("https://") and state is not None and endpoint in state.etcd_endpoints():
        tls = components.etcd_backup_tls(state.config_dir)
        files = (tls.ca, tls.cert, tls.key)
    elif endpoint.startswith("https://"):
        raise CliError(f"etcd at {endpoint} takes only clients with a certificate its CA signed: pass --cacert, "
                       "--cert and --key")
    else:
        return endpoint, None  # a plaintext etcd (a test's): nothing to present
    try:
        return endpoint, EtcdClientTLS.from_files(*files)
    except PermissionError as exc:
        raise CliError(f"cannot read the etcd client certificate {exc.filename}: it is the cluster admin's "
                       "(run as root on the master)") from None
    except OSError as exc:
        raise CliError(f"cannot read the etcd client certificate {exc.filename}: {exc.strerror}") from None


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
@click.option("--cacert", default="", help="etcd's CA (default: the local cluster's pki/etcd/ca.crt)")
@click.option("--cert", default="", help="a client certificate etcd's CA signed (default: the cluster's backup one)")
@click.option("--key", default="", help="its key")
def save(file: Path, endpoints: str, cluster: str, cacert: str, cert: str, key: str) -> None:
    """Write a consistent snapshot of etcd to FILE (mode 0600: it holds every Secret)."""
    endpoint, tls = _endpoint_and_credentials(endpoints, cluster, cacert, cert, key)
    try:
        size, digest = asyncio.run(etcd_backup.save(endpoint, file, tls))
    except (OSError, RuntimeError, ValueError) as exc:
        raise CliError(f"snapshot failed: {exc}") from None
    click.echo(f"Snapshot saved at {file} ({size} bytes, sha256 {digest[:16]}…)")


@snapshot.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="new, empty etcd data directory to create")
@click.option("--name", default="flotilla", show_default=True, help="the restored member's name")
@click.option("--initial-advertise-peer-urls", "peer_url", default="https://127.0.0.1:2380", show_default=True,
              help="the peer URL the restored etcd runs with (a local cluster's: https://127.0.0.1:12380)")
@click.option("--initial-cluster", default="", help="several members: NAME=PEER-URL,... naming every member of the "
                                                    "new cluster (restore the same snapshot once per member)")
def restore(file: Path, data_dir: Path, name: str, peer_url: str, initial_cluster: str) -> None:
    """Turn snapshot FILE into an etcd data directory; start etcd on it to recover the cluster."""
    if initial_cluster and f"{name}={peer_url}" not in initial_cluster.split(","):
        raise CliError(f"--initial-cluster must name this member as {name}={peer_url}")
    try:
        etcd_backup.restore(file, data_dir, name=name, peer_url=peer_url, initial_cluster=initial_cluster)
    except (OSError, RuntimeError) as exc:
        raise CliError(str(exc)) from None
    click.echo(f"Restored {file} into {data_dir}: start etcd with --data-dir {data_dir}")


@etcd.group("member")
def member() -> None:
    """Inspect the etcd cluster's members (one per master)."""


@member.command("list")
@click.option("--endpoints", default="", help="etcd client URLs, comma-separated (default: the local cluster's "
                                              "members)")
@click.option("--cluster", default="flotilla", show_default=True, help="local cluster whose etcd to use")
@click.option("--cacert", default="", help="etcd's CA (default: the local cluster's pki/etcd/ca.crt)")
@click.option("--cert", default="", help="a client certificate etcd's CA signed (default: the cluster's backup one)")
@click.option("--key", default="", help="its key")
def member_list(endpoints: str, cluster: str, cacert: str, cert: str, key: str) -> None:
    """List the members as `etcdctl member list -w table` does (asking the first member that answers)."""
    state = local.load_state(cluster)
    urls = [u for u in endpoints.split(",") if u] or (state.etcd_endpoints() if state else [])
    _, tls = _endpoint_and_credentials(urls[0] if urls else "", cluster, cacert, cert, key)
    try:
        found = asyncio.run(etcd_members.members(urls, tls))
    except etcd_members.EtcdUnreachable as exc:
        raise CliError(str(exc)) from None
    rows = [[f"{m.id:x}", m.status, m.name, ",".join(m.peer_urls), ",".join(m.client_urls),
             str(m.is_learner).lower()] for m in sorted(found, key=lambda m: m.name)]
    click.echo("\n".join(format_table([["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"], *rows])))
