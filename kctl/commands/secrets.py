"""`kctl create secret docker-registry`: registry credentials for imagePullSecrets, as kubectl makes them.

    kctl create secret docker-registry regcred --docker-server=10.0.0.5:5002 \\
        --docker-username=alice --docker-password=s3cret [--docker-email=a@example.com]

makes a `kubernetes.io/dockerconfigjson` Secret whose `.dockerconfigjson` is
Docker's config file, `{"auths": {SERVER: {username, password, email, auth}}}`
(`auth` = base64 of `user:password`), byte for byte the JSON kubectl writes;
a pod naming it in `imagePullSecrets` pulls with those credentials
(nodeagent/kubelet/credentials.py). The server defaults to Docker Hub's
`https://index.docker.io/v1/`, as in kubectl.
"""

from __future__ import annotations

import base64
import json

import click

from client import Client
from kctl import context, resources
from kctl.commands.apply import create
from kctl.errors import CliError
from proto import core_pb2

DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson"


def docker_config_json(server: str, username: str, password: str, email: str) -> bytes:
    """Docker's config file holding one registry's credentials, in kubectl's field order."""
    entry: dict[str, str] = {"username": username, "password": password}
    if email:
        entry["email"] = email
    entry["auth"] = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {server: entry}}, separators=(",", ":")).encode()


def docker_registry_secret(name: str, namespace: str, *, server: str, username: str, password: str,
                           email: str = "") -> core_pb2.Secret:
    secret = core_pb2.Secret(api_version="v1", kind="Secret", type=DOCKER_CONFIG_JSON)
    secret.metadata.name, secret.metadata.namespace = name, namespace
    secret.data[".dockerconfigjson"] = docker_config_json(server, username, password, email)
    return secret


@create.group("secret")
def create_secret() -> None:
    """Create a secret (docker-registry: credentials for pulling images)."""


@create_secret.command("docker-registry")
@click.argument("name")
@click.option("--docker-server", default=DOCKER_HUB_SERVER, show_default=True, help="Server location for the registry.")
@click.option("--docker-username", default="", help="Username for registry authentication.")
@click.option("--docker-password", default="", help="Password for registry authentication.")
@click.option("--docker-email", default="", help="Email for the registry (optional).")
@context.global_options
def create_docker_registry(name: str, docker_server: str, docker_username: str, docker_password: str,
                           docker_email: str) -> None:
    """Create a secret named NAME for use with a Docker registry (a pod's imagePullSecrets)."""
    if not docker_username or not docker_password or not docker_server:
        raise CliError("either --from-file or the combination of --docker-username, --docker-password and "
                       "--docker-server is required")
    secret = docker_registry_secret(name, context.settings().current_namespace, server=docker_server,
                                    username=docker_username, password=docker_password, email=docker_email)

    async def body(client: Client) -> None:
        created = await client.create(secret)
        click.echo(f"{resources.ref_of(created)} created")

    context.run(body)
