"""`kctl delete`: by TYPE NAME..., TYPE/NAME, -f FILE, or -l SELECTOR / --all.

--wait defaults to false here, unlike kubectl. kubectl waits until the object
is gone from the API, but a pod bound to a node stays Terminating until that
node's kubelet has stopped its containers and confirms the deletion; with no
kubelet running (the apiserver alone, as in most tests), a waiting delete would
hang. Pass --wait (or --wait=true) to block until every object is gone.
"""

from __future__ import annotations

import asyncio

import click
from google.protobuf.message import Message

from client import Client
from kctl import context, custom, resources
from kctl.commands.apply import load_manifests
from kctl.errors import CliError, report
from proto import kinds
from proto.errors import ApiError, NotFound

CASCADE = {"background": "Background", "foreground": "Foreground", "orphan": "Orphan",
           "true": "Background", "false": "Orphan"}


@click.command("delete")
@click.argument("args", nargs=-1)
@click.option("-f", "--filename", "filenames", multiple=True, help="Delete the objects in these manifests.")
@click.option("-R", "--recursive", is_flag=True, help="Also read the directories inside -f DIR.")
@click.option("-l", "--selector", default="", help="Delete every object of TYPE matching this selector.")
@click.option("--all", "all_", is_flag=True, help="Delete every object of TYPE in the namespace.")
@click.option("--grace-period", type=int, default=-1,
              help="Seconds the object gets to terminate; -1 keeps the object's own default.")
@click.option("--now", is_flag=True, help="Signal the pod to stop at once (grace period 1).")
@click.option("--force", is_flag=True, help="Remove from the API at once (grace period 0).")
@click.option("--cascade", type=click.Choice(sorted(CASCADE)), default="background", is_flag=False,
              flag_value="background", help="What happens to dependents (propagation policy).")
@click.option("--ignore-not-found", is_flag=True, help="Treat objects that are already gone as deleted.")
@click.option("--wait", type=click.BOOL, default=False, is_flag=False, flag_value=True,
              help="Wait until the objects are gone (default false: see the module docstring).")
@click.option("--timeout", type=float, default=0.0, help="Seconds to --wait; 0 waits for ever.")
@context.global_options
def delete(args: tuple[str, ...], filenames: tuple[str, ...], recursive: bool, selector: str, all_: bool,
           grace_period: int, now: bool, force: bool, cascade: str, ignore_not_found: bool, wait: bool,
           timeout: float) -> None:
    """Delete objects by name, by manifest, or by label selector."""
    settings = context.settings()
    namespace = settings.current_namespace
    if now and force:
        raise CliError("--now and --force are mutually exclusive")
    if grace_period < 0:
        grace_period = 0 if force else 1 if now else -1
    if force:
        click.echo("Warning: Immediate deletion does not wait for confirmation that the running resource "
                   "has been terminated. The resource may continue to run on the cluster indefinitely.",
                   err=True)

    if filenames:
        if args:
            raise CliError("cannot give both -f and resource arguments")
        docs = load_manifests(filenames, recursive, "delete")
        targets: list[tuple[kinds.Kind, str, str]] | None = [(d.kind, d.name, d.namespace) for d in docs]
        requests: list[resources.Request] = []
    elif args and not custom.is_built_in(args[0]):  # a kind a CRD adds: served over the HTTP API only
        if selector or all_:
            raise CliError("kctl deletes custom resources by name only; use kubectl delete -l or --all")
        if not custom.delete(args, namespace=namespace, ignore_not_found=ignore_not_found):
            raise click.exceptions.Exit(1)
        return
    else:
        requests = resources.parse_requests(args)
        named = any(r.names for r in requests)
        if named and (selector or all_):
            raise CliError("name cannot be provided when a selector or --all is specified")
        if not named and not (selector or all_):
            raise CliError("resource(s) were provided, but no name was specified")
        targets = [(r.kind, n, namespace) for r in requests for n in r.names] if named else None

    async def body(client: Client) -> bool:
        nonlocal targets
        if targets is None:  # -l or --all: list what matches first
            targets = []
            for r in requests:
                found = await client.list(r.kind.message, namespace, label_selector=selector)
                targets += [(r.kind, o.metadata.name, o.metadata.namespace)  # type: ignore[attr-defined]
                            for o in found.items]
            if not targets:
                click.echo(resources.no_resources(namespace, [r.kind for r in requests]), err=True)
                return True
        ok = True
        gone: list[tuple[kinds.Kind, str, str, str]] = []
        for kind, name, ns in targets:
            try:
                last: Message = await client.delete(
                    kind.message, name, ns, grace_period_seconds=None if grace_period < 0 else grace_period,
                    propagation_policy=CASCADE[cascade])
            except NotFound as exc:
                if not ignore_not_found:
                    report(exc)
                    ok = False
                continue
            except ApiError as exc:
                report(exc)
                ok = False
                continue
            click.echo(f"{resources.quoted_ref(kind, name)} deleted")
            gone.append((kind, name, ns, last.metadata.uid))  # type: ignore[attr-defined]
        if wait:
            try:
                async with asyncio.timeout(timeout or None):
                    await _wait_gone(client, gone)
            except TimeoutError:
                raise CliError(f"timed out after {timeout:g}s waiting for the deletion") from None
        return ok

    if not context.run(body):
        raise click.exceptions.Exit(1)


async def _wait_gone(client: Client, objs: list[tuple[kinds.Kind, str, str, str]]) -> None:
    """Poll until each object is NotFound (or replaced by a new one with another uid)."""
    for kind, name, ns, uid in objs:
        while True:
            try:
                live = await client.get(kind.message, name, ns)
            except NotFound:
                break
            if uid and live.metadata.uid != uid:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.25)
