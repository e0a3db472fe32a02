"""`kctl apply -f` and `kctl create -f | create namespace NAME`."""

from __future__ import annotations

import functools
from typing import Any

import click

from client import Client
from kctl import apply as applier
from kctl import context, custom, manifests, resources
from proto import core_pb2

_echo_err = functools.partial(click.echo, err=True)


def _filename_options(f: context.F) -> context.F:
    f = click.option("-R", "--recursive", is_flag=True, help="Also read the directories inside -f DIR.")(f)
    return click.option("-f", "--filename", "filenames", multiple=True,
                        help="A file, a directory of *.yaml|*.yml|*.json, or - for stdin.")(f)


def load_manifests(filenames: tuple[str, ...], recursive: bool, verb: str, *,
                   require_name: bool = True,
                   custom_objects: list[dict[str, Any]] | None = None) -> list[manifests.Document]:
    """The -f documents, validated, placed in -n's namespace (or the context's)."""
    if not filenames:
        raise click.UsageError("must specify -f (a file, a directory, or - for stdin)")
    settings = context.settings()
    return manifests.load(filenames, namespace=settings.current_namespace,
                          explicit_namespace=bool(settings.namespace), verb=verb, recursive=recursive,
                          require_name=require_name, custom_objects=custom_objects)


def _write_all(docs: list[manifests.Document], write: applier.Writer) -> None:
    async def body(client: Client) -> bool:
        return await write(client, docs, click.echo, _echo_err)

    if not context.run(body):
        raise click.exceptions.Exit(1)


@click.command("apply")
@_filename_options
@context.global_options
def apply(filenames: tuple[str, ...], recursive: bool) -> None:
    """Create or update objects from manifests, keeping fields the server or others set."""
    custom_objects: list[dict[str, Any]] = []  # kinds CRDs add: applied over the HTTP API (kctl/custom.py)
    docs = load_manifests(filenames, recursive, "apply", custom_objects=custom_objects)
    if docs:
        _write_all(docs, applier.apply)
    if custom_objects:
        custom.apply(custom_objects, namespace=context.settings().current_namespace)


@click.group("create", invoke_without_command=True)
@_filename_options
@context.global_options
@click.pass_context
def create(ctx: click.Context, filenames: tuple[str, ...], recursive: bool) -> None:
    """Create objects from manifests (-f), or a namespace; existing objects are an error."""
    if ctx.invoked_subcommand is None:
        _write_all(load_manifests(filenames, recursive, "create", require_name=False), applier.create)


@create.command("namespace")
@click.argument("name")
@context.global_options
def create_namespace(name: str) -> None:
    """Create a namespace named NAME."""
    ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = name

    async def body(client: Client) -> None:
        created = await client.create(ns)
        click.echo(f"{resources.ref_of(created)} created")

    context.run(body)


create.add_command(create_namespace, "ns")
