"""`kctl describe`: readable details of objects and their recent events."""

from __future__ import annotations

import click

from client import Client
from kctl import context, custom, resources
from kctl import describe as describer
from kctl.errors import report


@click.command("describe")
@click.argument("args", nargs=-1, required=True)
@click.option("-l", "--selector", default="", help="Describe every object matching this label selector.")
@context.global_options
def describe(args: tuple[str, ...], selector: str) -> None:
    """Show details of objects (TYPE [NAME...] or TYPE/NAME...), ending with their events."""
    if not custom.is_built_in(args[0]):  # a kind a CRD adds: served over the HTTP API only
        custom.describe(args, namespace=context.settings().current_namespace)
        return
    requests = resources.parse_requests(args)
    namespace = context.settings().current_namespace

    async def body(client: Client) -> bool:
        texts = []
        failed = []
        for request in requests:
            objs, errors = await resources.select(client, request, namespace, label_selector=selector)
            failed += errors
            for obj in objs:
                texts.append(await describer.describe(client, request.kind, obj))
        if texts:
            click.echo("\n\n".join(t.rstrip("\n") for t in texts))
        for exc in failed:
            report(exc)
        if not texts and not failed:
            click.echo(resources.no_resources(namespace, [r.kind for r in requests]), err=True)
        return not failed

    if not context.run(body):
        raise click.exceptions.Exit(1)
