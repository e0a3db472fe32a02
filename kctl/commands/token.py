"""`kctl token create|list|delete|publish-cluster-info`: bootstrap tokens, as `kubeadm token` manages them.

A token is a Secret `kube-system/bootstrap-token-<id>` (client/bootstrap.py);
the apiserver accepts it on its token port as `system:bootstrap:<id>`, which may
only ask for a node certificate and read `kube-public/cluster-info`. The
cluster-info ConfigMap says where joining nodes go: the client-certificate
address and CA (its `kubeconfig`), and Flotilla's token address (`bootstrap-server`,
since Python gRPC takes tokens and client certificates on separate ports).
`create --print-join-command` prints the `kctl join` line for a new node;
`create --node NAME` makes a token that can obtain only that node's identity
(the CSR approver checks it).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from client import Client, bootstrap, certificates
from kctl import context, printers
from kctl.errors import CliError
from proto import core_pb2
from proto.duration import DurationError, parse_duration
from proto.errors import AlreadyExists, NotFound


@click.group("token")
def token() -> None:
    """Manage bootstrap tokens (for joining nodes)."""


def _ttl(text: str) -> dt.timedelta | None:
    try:
        seconds = parse_duration(text)
    except DurationError as exc:
        raise CliError(f"--ttl: {exc}") from None
    return dt.timedelta(seconds=seconds) if seconds > 0 else None


async def join_command(client: Client, token: bootstrap.Token) -> str:
    """`kctl join HOST:PORT --token ... --discovery-token-ca-cert-hash sha256:...`, from cluster-info."""
    try:
        info = await client.get(core_pb2.ConfigMap, bootstrap.CLUSTER_INFO_NAME, bootstrap.CLUSTER_INFO_NAMESPACE)
    except NotFound:
        raise CliError(f"{bootstrap.CLUSTER_INFO_NAMESPACE}/{bootstrap.CLUSTER_INFO_NAME} does not exist: publish "
                       "it first (kctl token publish-cluster-info --server HOST:PORT --bootstrap-server "
                       "HOST:PORT)") from None
    try:
        _, ca_pem = bootstrap.read_cluster_info(info)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    target = info.data.get(bootstrap.CLUSTER_INFO_BOOTSTRAP_SERVER_KEY, "")
    if not target:
        raise CliError(f"{bootstrap.CLUSTER_INFO_NAMESPACE}/{bootstrap.CLUSTER_INFO_NAME} has no "
                       f"{bootstrap.CLUSTER_INFO_BOOTSTRAP_SERVER_KEY!r} (the apiserver's token address); "
                       "re-publish it")
    return f"kctl join {target} --token {token} --discovery-token-ca-cert-hash {certificates.ca_cert_hash(ca_pem)}"


@token.command("create")
@click.argument("token_text", metavar="[TOKEN]", required=False, default="")
@click.option("--ttl", default="24h", show_default=True, help="how long the token lives; 0 means for ever")
@click.option("--description", default="", help="a human-readable note on what the token is for")
@click.option("--groups", default=bootstrap.DEFAULT_EXTRA_GROUP, show_default=True,
              help="extra groups (comma-separated, each system:bootstrappers:...) the token authenticates as")
@click.option("--usages", default=",".join(bootstrap.USAGES), show_default=True,
              help="what the token may be used for")
@click.option("--node", "nodes", multiple=True, metavar="NAME",
              help="the node this token is for (repeatable): its certificate request is approved only for these "
                   "names; default: any")
@click.option("--print-join-command", is_flag=True, help="print the full `kctl join` command for a new node")
@context.global_options
def create(token_text: str, ttl: str, description: str, groups: str, usages: str, nodes: tuple[str, ...],
           print_join_command: bool) -> None:
    """Create a bootstrap token (random unless TOKEN is given) and print it."""
    try:
        new = bootstrap.parse_token(token_text) if token_text else bootstrap.generate_token()
        secret = bootstrap.token_secret(new, ttl=_ttl(ttl), description=description,
                                        extra_groups=tuple(g.strip() for g in groups.split(",") if g.strip()),
                                        usages=tuple(u.strip() for u in usages.split(",") if u.strip()),
                                        node_names=tuple(n.strip() for n in nodes if n.strip()))
    except ValueError as exc:
        raise CliError(str(exc)) from None

    async def body(client: Client) -> str:
        try:
            await client.create(secret)
        except AlreadyExists:
            raise CliError(f'a token with id "{new.id}" already exists') from None
        return await join_command(client, new) if print_join_command else str(new)

    click.echo(context.run(body))


def token_row(secret: core_pb2.Secret, now: dt.datetime) -> list[str]:
    expires = bootstrap.expiration(secret)
    if expires is None:
        ttl, when = "<forever>", "<never>"
    else:
        left = (expires - now).total_seconds()
        ttl, when = (printers.human_duration(left) if left > 0 else "<invalid>"), bootstrap.rfc3339(expires)
    token_text = (f"{bootstrap.data_text(secret, bootstrap.KEY_TOKEN_ID)}."
                  f"{bootstrap.data_text(secret, bootstrap.KEY_TOKEN_SECRET)}")
    return [token_text, ttl, when, ",".join(bootstrap.usages_of(secret)) or printers.NONE,
            bootstrap.data_text(secret, bootstrap.KEY_DESCRIPTION) or printers.NONE,
            ",".join(bootstrap.extra_groups_of(secret)) or printers.NONE]


@token.command("list")
@context.global_options
def list_() -> None:
    """List bootstrap tokens: TOKEN TTL EXPIRES USAGES DESCRIPTION EXTRA GROUPS."""
    async def body(client: Client) -> list[core_pb2.Secret]:
        found = await client.list(core_pb2.Secret, bootstrap.TOKEN_NAMESPACE,
                                  field_selector=f"type={bootstrap.TOKEN_SECRET_TYPE}")
        return [s for s in found.items if bootstrap.is_token_secret(s)]

    secrets = context.run(body)
    now = printers.now()
    rows = [["TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA GROUPS"],
            *(token_row(s, now) for s in sorted(secrets, key=lambda s: s.metadata.name))]
    if len(rows) > 1:
        click.echo("\n".join(printers.format_table(rows)))


@token.command("delete")
@click.argument("tokens", nargs=-1, required=True, metavar="TOKEN_ID...")
@context.global_options
def delete(tokens: tuple[str, ...]) -> None:
    """Delete bootstrap tokens, given by id or as id.secret."""
    ids = []
    for text in tokens:
        token_id = text.partition(".")[0]
        if not bootstrap.TOKEN_PATTERN.match(f"{token_id}.{'0' * 16}"):
            raise CliError(f"{text!r} is not a token id ([a-z0-9]{{6}}) or a token")
        ids.append(token_id)

    async def body(client: Client) -> None:
        for token_id in ids:
            try:
                await client.delete(core_pb2.Secret, bootstrap.TOKEN_SECRET_PREFIX + token_id,
                                    bootstrap.TOKEN_NAMESPACE)
            except NotFound:
                raise CliError(f'bootstrap token "{token_id}" not found') from None
            click.echo(f'bootstrap token "{token_id}" deleted')

    context.run(body)


@token.command("publish-cluster-info")
@click.option("--api-server", "server", required=True, metavar="HOST:PORT",
              help="the apiserver's client-certificate address, where joined nodes connect")
@click.option("--bootstrap-server", required=True, metavar="HOST:PORT",
              help="the apiserver's token address, where `kctl join` connects")
@click.option("--certificate-authority", type=click.Path(exists=True, dir_okay=False), default=None,
              help="the cluster CA (PEM); default: the current kubeconfig's")
@context.global_options
def publish_cluster_info(server: str, bootstrap_server: str, certificate_authority: str | None) -> None:
    """Write kube-public/cluster-info, which joining nodes read (as `kubeadm init` does)."""
    ca_pem = Path(certificate_authority).read_bytes() if certificate_authority \
        else context.settings().config().certificate_authority_data
    if not ca_pem:
        raise CliError("no CA: pass --certificate-authority, or use a kubeconfig with certificate-authority-data")
    info = bootstrap.cluster_info(server, ca_pem, bootstrap_server)

    async def body(client: Client) -> str:
        try:
            await client.create(info)
            return "created"
        except AlreadyExists:
            current = await client.get(core_pb2.ConfigMap, bootstrap.CLUSTER_INFO_NAME,
                                       bootstrap.CLUSTER_INFO_NAMESPACE)
            current.data.clear()
            current.data.update(info.data)
            await client.update(current)
            return "configured"

    click.echo(f"configmap/{bootstrap.CLUSTER_INFO_NAME} {context.run(body)}")
