"""`kctl label` and `kctl annotate`: set (`key=value`) or remove (`key-`) metadata keys.

Both read the object, change the one map, and write it back; when someone else
wrote in between (Conflict on the stale resourceVersion) they read again and
re-apply the same change, as kubectl's patch retries do. Changing a key that
already has another value needs --overwrite.
"""

from __future__ import annotations

from typing import Any

import click
from google.protobuf.message import Message

from client import Client
from client.retry import retry_write
from kctl import context, resources
from kctl.errors import CliError, report
from proto.errors import ApiError


def parse_changes(args: tuple[str, ...]) -> tuple[list[str], dict[str, str], list[str]]:
    """Split `TYPE NAME k=v k2-` into resource args, keys to set and keys to remove."""
    first = next((i for i, a in enumerate(args) if "=" in a or (a.endswith("-") and i > 0)), len(args))
    targets, changes = list(args[:first]), args[first:]
    sets: dict[str, str] = {}
    removes: list[str] = []
    for change in changes:
        if "=" in change:
            key, _, value = change.partition("=")
            if not key:
                raise CliError(f"invalid label spec: {change}")
            sets[key] = value
        elif change.endswith("-") and len(change) > 1:
            removes.append(change[:-1])
        else:
            raise CliError(f"invalid label spec: {change}: expected key=value or key-")
    both = sorted(set(sets) & set(removes))
    if both:
        raise CliError(f"can not both modify and remove the same key in one command: {', '.join(both)}")
    if not sets and not removes:
        raise CliError("at least one change is required (key=value or key-)")
    return targets, sets, removes


def _change(name: str, field: str, verb: str) -> click.Command:
    """The `label` or `annotate` command: they differ only in the map they change."""

    @click.command(name)
    @click.argument("args", nargs=-1, required=True)
    @click.option("--overwrite", is_flag=True, help="Allow changing keys that already have a value.")
    @click.option("-l", "--selector", default="", help="Change every object of TYPE matching this selector.")
    @click.option("--all", "all_", is_flag=True, help="Change every object of TYPE in the namespace.")
    @context.global_options
    def command(args: tuple[str, ...], overwrite: bool, selector: str, all_: bool) -> None:
        targets, sets, removes = parse_changes(args)
        requests = resources.parse_requests(targets)
        named = any(r.names for r in requests)
        if not named and not (selector or all_):
            raise CliError("resource(s) were provided, but no name was specified")
        namespace = context.settings().current_namespace

        async def body(client: Client) -> bool:
            ok = True
            for request in requests:
                objs, errors = await resources.select(client, request, namespace, label_selector=selector)
                for exc in errors:
                    report(exc)
                    ok = False
                for obj in objs:
                    ref = resources.object_ref(request.kind, obj.metadata.name)  # type: ignore[attr-defined]
                    try:
                        changed = await _update(client, obj, field, sets, removes, overwrite)
                    except ApiError as exc:
                        report(exc)
                        ok = False
                        continue
                    done = f"un{verb}" if field == "labels" and not sets else verb  # kubectl: "unlabeled"
                    click.echo(f"{ref} {done}" if changed else f"{ref} not {verb}")
            return ok

        if not context.run(body):
            raise click.exceptions.Exit(1)

    command.help = (f"Update the {field} of objects: TYPE NAME KEY=VALUE... KEY-... "
                    f"(or TYPE/NAME); --overwrite to change existing values.")
    return command


async def _update(client: Client, obj: Message, field: str, sets: dict[str, str], removes: list[str],
                  overwrite: bool) -> bool:
    """Apply the change to `obj` (just listed), or to a fresh copy after a Conflict; False when it changes nothing."""

    async def write(target: Any) -> bool:
        values = getattr(target.metadata, field)
        if not overwrite:
            for key, value in sets.items():
                if key in values and values[key] != value:
                    raise CliError(f"'{key}' already has a value ({values[key]}), and --overwrite is false")
        before = dict(values)
        values.update(sets)
        for key in removes:
            values.pop(key, None)
        if dict(values) == before:
            return False
        await client.update(target)
        return True

    async def reread(stale: Any) -> Any:
        return await client.get(type(stale), stale.metadata.name, stale.metadata.namespace)

    return await retry_write(write, obj, refresh=reread)


label = _change("label", "labels", "labeled")
annotate = _change("annotate", "annotations", "annotated")
