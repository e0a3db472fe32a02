"""`kctl get`: list or fetch objects and print them as kubectl does, optionally watching.

`get pods`, `get po,svc`, `get all`, `get deploy/web`, with -n / -A, label and
field selectors, -o wide|yaml|json|name|jsonpath=TEMPLATE, --show-labels, --no-headers, and -w
to keep printing a row per change until Ctrl-C.
"""

from __future__ import annotations

import asyncio
from itertools import zip_longest

import click
from google.protobuf.message import Message

from client import Client
from kctl import context, custom, jsonpath, printers, resources
from kctl.errors import CliError, report
from proto.errors import Gone, Unavailable


@click.command("get")
@click.argument("args", nargs=-1, required=True)
@click.option("-A", "--all-namespaces", is_flag=True, help="List across all namespaces.")
@click.option("-l", "--selector", default="", help="Label selector, e.g. app=web,tier!=db.")
@click.option("--field-selector", default="", help="Field selector, e.g. spec.nodeName=node1.")
@click.option("-o", "--output", callback=lambda _c, _p, v: output_format(v), default=None,
              help=f"Output format: {', '.join(printers.OUTPUTS)} or jsonpath=TEMPLATE.")
@click.option("-w", "--watch", is_flag=True, help="After listing, print a row per change.")
@click.option("--show-labels", is_flag=True, help="Add a LABELS column.")
@click.option("--no-headers", is_flag=True, help="Do not print the header row.")
@context.global_options
def get(args: tuple[str, ...], all_namespaces: bool, selector: str, field_selector: str, output: str | None,
        watch: bool, show_labels: bool, no_headers: bool) -> None:
    """Display one or many resources (TYPE[,TYPE...] [NAME...] or TYPE/NAME...)."""
    if not custom.is_built_in(args[0]):  # a kind a CRD adds: served over the HTTP API only
        scope = "" if all_namespaces else context.settings().current_namespace
        if watch:
            custom.watch(args, namespace=scope, selector=selector, field_selector=field_selector,
                         no_headers=no_headers, wide=output == "wide")
            return
        custom.get(args, namespace=scope, output=output, selector=selector, field_selector=field_selector,
                   no_headers=no_headers)
        return
    requests = resources.parse_requests(args)
    if selector and any(r.names for r in requests):
        raise CliError("name cannot be provided when a selector is specified")
    if watch and len(requests) > 1:
        raise CliError("you may only specify a single resource type when watching")
    namespace = "" if all_namespaces else context.settings().current_namespace
    view = View(output=output, all_namespaces=all_namespaces, show_labels=show_labels,
                no_headers=no_headers, prefix_names=len(requests) > 1)

    async def body(client: Client) -> bool:
        if watch:
            await view.watch(client, requests[0], namespace, selector, field_selector)
            return True
        return await view.get(client, requests, namespace, selector, field_selector)

    if not context.run(body):
        raise click.exceptions.Exit(1)


def output_format(value: str | None) -> str | None:
    """-o: one of the printers' formats, or `jsonpath=TEMPLATE` (checked here, before any request)."""
    if value is None or value in printers.OUTPUTS:
        return value
    if value.startswith("jsonpath="):
        try:
            jsonpath.check(value.removeprefix("jsonpath="))
        except jsonpath.TemplateError as exc:
            raise click.BadParameter(f"jsonpath template: {exc}") from None
        return value
    raise click.BadParameter(f"{value!r} is not one of {', '.join(map(repr, printers.OUTPUTS))} or jsonpath=TEMPLATE")


class View:
    """How the chosen flags print objects: tables, yaml/json or names."""

    def __init__(self, *, output: str | None, all_namespaces: bool, show_labels: bool, no_headers: bool,
                 prefix_names: bool) -> None:
        self.output = output
        self.all_namespaces = all_namespaces
        self.show_labels = show_labels
        self.no_headers = no_headers
        self.prefix_names = prefix_names

    def table(self, request: resources.Request) -> printers.Table:
        prefix = resources.kind_ref(request.kind) + "/" if self.prefix_names else ""
        return printers.Table(request.kind, wide=self.output == "wide", namespace_column=self.all_namespaces,
                              show_labels=self.show_labels, name_prefix=prefix)

    async def get(self, client: Client, requests: list[resources.Request], namespace: str, selector: str,
                  field_selector: str) -> bool:
        found: list[tuple[resources.Request, list[Message]]] = []
        failed = []
        for request in requests:
            objs, errors = await resources.select(client, request, namespace, label_selector=selector,
                                                  field_selector=field_selector)
            found.append((request, objs))
            failed += errors
        every = [o for _, objs in found for o in objs]
        if self.output in ("yaml", "json"):
            # One object asked for by name prints as itself; anything else as a List (maybe empty).
            single = len(requests) == 1 and len(requests[0].names) == 1
            if every or not single:
                click.echo(printers.render(every, self.output, single=single), nl=False)
        elif self.output and self.output.startswith("jsonpath="):
            single = len(requests) == 1 and len(requests[0].names) == 1
            document = printers.as_dict(every[0]) if single and len(every) == 1 else printers.as_list(every)
            try:
                click.echo(jsonpath.render(self.output.removeprefix("jsonpath="), document), nl=False)
            except jsonpath.TemplateError as err:
                raise CliError(f"error executing jsonpath {self.output.removeprefix('jsonpath=')!r}: {err}") from None
        elif self.output == "name":
            click.echo(printers.render(every, "name", single=False), nl=False)
        else:
            blocks = ["\n".join(self.table(r).lines(objs, headers=not self.no_headers))
                      for r, objs in found if objs]
            if blocks:
                click.echo("\n\n".join(blocks))
        for exc in failed:
            report(exc)
        if not every and not failed and self.output not in ("yaml", "json"):
            click.echo(resources.no_resources(namespace, [r.kind for r in requests]), err=True)
        return not failed

    async def watch(self, client: Client, request: resources.Request, namespace: str, selector: str,
                    field_selector: str) -> None:
        """List, print, then print each change; runs until interrupted (Ctrl-C)."""
        cls = request.kind.message
        if len(request.names) > 1:
            raise CliError("watch is only supported on individual resources and resource collections, "
                           "but a list of resources was found")
        if request.names:
            by_name = f"metadata.name={request.names[0]}"
            field_selector = f"{field_selector},{by_name}" if field_selector else by_name
        table = self.table(request)
        widths: list[int] = []

        def emit(objs: list[Message], header: bool) -> None:
            nonlocal widths
            if self.output in ("yaml", "json", "name"):
                for obj in objs:
                    text = printers.render([obj], self.output, single=True)
                    click.echo(("---\n" if self.output == "yaml" else "") + text, nl=False)
                return
            at = printers.now()
            rows = [table.row(o, at) for o in objs]
            if header and not self.no_headers:
                rows.insert(0, table.header())
            widths = [max(a, b) for a, b in zip_longest(widths, printers.column_widths(rows), fillvalue=0)]
            for line in printers.format_table(rows, widths=widths):
                click.echo(line)

        listed = await client.list(cls, namespace, label_selector=selector, field_selector=field_selector)
        printed_header = bool(listed.items)
        if listed.items:
            emit(list(listed.items), header=True)
        version = listed.resource_version
        while True:
            try:
                async for event in client.watch(cls, namespace, label_selector=selector,
                                                field_selector=field_selector, resource_version=version):
                    version = event.resource_version or version
                    if event.object is None:
                        continue  # a bookmark: only the version moves on
                    emit([event.object], header=not printed_header)
                    printed_header = True
            except Gone:
                # Our version was compacted away: start again from the present, as a reflector does.
                version = (await client.list(cls, namespace, label_selector=selector,
                                             field_selector=field_selector, limit=1)).resource_version
            except Unavailable as exc:
                # The connection dropped (a GOAWAY, an apiserver restart): resume from the last
                # version seen. If the server is really gone, the next call says so.
                if context.unreachable(exc):
                    raise
            await asyncio.sleep(0.2)  # the stream ended; reconnect without spinning

