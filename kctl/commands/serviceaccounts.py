"""`kctl create serviceaccount NAME` and `kctl create token SERVICE_ACCOUNT`, as kubectl's.

`create token` asks the apiserver for a bound token (the serviceaccounts/token
subresource: a signed JWT, never stored) and prints it alone, so it can go straight
into a kubeconfig or an `Authorization: Bearer` header. `--duration` asks for a
lifetime (the server may shorten it), `--audience` for whom it is (repeatable), and
`--bound-object-kind Pod --bound-object-name NAME` ties it to a pod: it stops
working once that pod is gone.
"""

from __future__ import annotations

import argparse

import click

from client import Client
from client.component import parse_duration
from kctl import context, resources
from kctl.commands.apply import create
from kctl.errors import CliError
from proto import core_pb2

BOUND_KINDS = ("Pod",)  # Kubernetes also binds to Secrets and Nodes; Flotilla to Pods


@create.command("serviceaccount")
@click.argument("name")
@context.global_options
def create_service_account(name: str) -> None:
    """Create a service account named NAME."""
    sa = core_pb2.ServiceAccount(api_version="v1", kind="ServiceAccount")
    sa.metadata.name, sa.metadata.namespace = name, context.settings().current_namespace

    async def body(client: Client) -> None:
        created = await client.create(sa)
        click.echo(f"{resources.ref_of(created)} created")

    context.run(body)


create.add_command(create_service_account, "sa")


def _seconds(duration: str) -> int | None:
    """--duration as whole seconds; 0 or empty leaves the lifetime to the server."""
    if not duration:
        return None
    try:
        seconds = parse_duration(duration)
    except argparse.ArgumentTypeError as exc:
        raise CliError(f'invalid argument "{duration}" for "--duration" flag: {exc}') from None
    if seconds < 0:
        raise CliError("--duration must be greater than or equal to 0")
    if seconds != int(seconds):
        raise CliError("--duration must be a whole number of seconds")
    return int(seconds) or None


@create.command("token")
@click.argument("service_account", metavar="SERVICE_ACCOUNT")
@click.option("--duration", default="", help="Requested lifetime of the token (e.g. 10m, 1h); the server may "
                                             "return a token with a longer or shorter lifetime.")
@click.option("--audience", "audiences", multiple=True,
              help="Audience of the requested token (repeatable). Defaults to the API server's.")
@click.option("--bound-object-kind", default="", help="Kind of an object to bind the token to: Pod.")
@click.option("--bound-object-name", default="", help="Name of the object to bind the token to.")
@click.option("--bound-object-uid", default="", help="UID of the object to bind the token to.")
@context.global_options
def create_token(service_account: str, duration: str, audiences: tuple[str, ...], bound_object_kind: str,
                 bound_object_name: str, bound_object_uid: str) -> None:
    """Request a service account token (printed alone on stdout)."""
    seconds = _seconds(duration)
    if any(not a for a in audiences):
        raise CliError("--audience must not be an empty string")
    if not bound_object_kind and (bound_object_name or bound_object_uid):
        raise CliError("--bound-object-name and --bound-object-uid can only be set if --bound-object-kind is "
                       "provided")
    if bound_object_kind and bound_object_kind not in BOUND_KINDS:
        raise CliError(f"supported --bound-object-kind values are {', '.join(BOUND_KINDS)}")
    if bound_object_kind and not bound_object_name:
        raise CliError("--bound-object-name is required if --bound-object-kind is provided")
    namespace = context.settings().current_namespace

    async def body(client: Client) -> None:
        bound = None
        if bound_object_kind:
            bound = await client.get(core_pb2.Pod, bound_object_name, namespace)
            if bound_object_uid and bound.metadata.uid != bound_object_uid:
                bound.metadata.uid = bound_object_uid  # the server answers the mismatch (a Conflict)
        answer = await client.create_token(namespace, service_account, audiences=audiences,
                                           expiration_seconds=seconds, bound_pod=bound)
        click.echo(answer.status.token)

    context.run(body)
