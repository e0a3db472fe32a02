"""`kctl api-resources` and `kctl version`: what the API serves, and which versions run."""

from __future__ import annotations

from importlib import metadata

import click

from client import Client
from kctl import context, printers
from proto import kinds


@click.command("api-resources")
@click.option("--namespaced", type=click.BOOL, default=None,
              help="Only namespaced (true) or cluster-scoped (false) kinds.")
@click.option("-o", "--output", type=click.Choice(["name"]), default=None, help="Output format.")
@click.option("--no-headers", is_flag=True, help="Do not print the header row.")
@context.global_options
def api_resources(namespaced: bool | None, output: str | None, no_headers: bool) -> None:
    """List the resource types the API serves, with their short names."""
    served = sorted((k for k in kinds.KINDS if namespaced is None or k.namespaced == namespaced),
                    key=lambda k: (k.group, k.resource))
    if output == "name":
        for k in served:
            click.echo(k.qualified_resource)
        return
    rows = [] if no_headers else [["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]]
    rows += [[k.resource, ",".join(k.short_names), k.api_version, str(k.namespaced).lower(), k.kind]
             for k in served]
    click.echo("\n".join(printers.format_table(rows)))


def client_version() -> str:
    try:
        return f"v{metadata.version('flotilla')}"
    except metadata.PackageNotFoundError:
        return "v0.0.0-dev"


@click.command("version")
@click.option("--client", "client_only", is_flag=True, help="Print the client version only.")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default=None, help="Output format.")
@context.global_options
def version(client_only: bool, output: str | None) -> None:
    """Print the client and server versions."""
    data: dict[str, dict[str, str]] = {"clientVersion": {"gitVersion": client_version()}}
    if not client_only:
        async def body(client: Client) -> None:
            reply = await client.version()
            data["serverVersion"] = {"gitVersion": reply.git_version, "etcdVersion": reply.etcd_version,
                                     "platform": reply.platform}
        try:
            context.run(body)
        except Exception:
            _print_version(data, output)  # like kubectl: the client version, then why the server's is missing
            raise
    _print_version(data, output)


def _print_version(data: dict[str, dict[str, str]], output: str | None) -> None:
    if output == "yaml":
        click.echo(printers.to_yaml(data), nl=False)
    elif output == "json":
        click.echo(printers.to_json(data), nl=False)
    else:
        click.echo(f"Client Version: {data['clientVersion']['gitVersion']}")
        server = data.get("serverVersion")
        if server:
            click.echo(f"Server Version: {server['gitVersion']}")
            click.echo(f"etcd Version: {server['etcdVersion']}")
            click.echo(f"Platform: {server['platform']}")
