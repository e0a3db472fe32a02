"""`kctl join HOST:PORT --token ID.SECRET --discovery-token-ca-cert-hash sha256:HEX`: a new node's first step.

The discovery itself (pin the CA, read cluster-info, write the bootstrap
kubeconfig) is client/discovery.py; this is its command line.
"""

from __future__ import annotations

from pathlib import Path

import click

from client.discovery import DEFAULT_BOOTSTRAP_KUBECONFIG, DiscoveryError, join_node
from kctl.errors import CliError


@click.command("join")
@click.argument("target", metavar="HOST:PORT")
@click.option("--token", "token_text", required=True, metavar="ID.SECRET", help="the bootstrap token")
@click.option("--discovery-token-ca-cert-hash", "pins", multiple=True, required=True, metavar="sha256:HEX",
              help="the pin of the cluster CA's public key (from `kctl token create --print-join-command`)")
@click.option("--bootstrap-kubeconfig", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_BOOTSTRAP_KUBECONFIG, show_default=True, help="where to write the bootstrap kubeconfig")
def join(target: str, token_text: str, pins: tuple[str, ...], bootstrap_kubeconfig: Path) -> None:
    """Join this machine to a cluster: verify it by its CA pin and write the kubelet's bootstrap kubeconfig."""
    try:
        server = join_node(target, token_text, pins, bootstrap_kubeconfig)
    except DiscoveryError as exc:
        raise CliError(str(exc)) from None
    click.echo(f"This node has found the cluster at {target} (CA pinned) and wrote {bootstrap_kubeconfig}.\n"
               f"Start the kubelet with --bootstrap-kubeconfig {bootstrap_kubeconfig} --kubeconfig <path>: it "
               f"will ask for its client certificate and then talk to {server}.")
