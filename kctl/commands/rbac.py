"""`kctl auth can-i` and `kctl create role|clusterrole|rolebinding|clusterrolebinding`.

The RBAC verbs of kubectl: ask the apiserver whether a request would be
allowed (it answers with the same authoriser that guards every call), and
write Roles and bindings without a manifest.
"""

from __future__ import annotations

import click
from google.protobuf.message import Message

from client import Client
from kctl import context, resources
from kctl.commands.apply import create
from kctl.errors import CliError
from proto import kinds, rbac_pb2

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_VERSION = f"{RBAC_GROUP}/v1"


@click.group("auth")
def auth() -> None:
    """Inspect authorisation."""


@auth.command("can-i")
@click.argument("verb")
@click.argument("resource")
@click.option("--as", "as_user", default="", help="ask for this user instead of yourself")
@click.option("--as-group", "as_groups", multiple=True, help="groups of the --as user")
@click.option("-A", "--all-namespaces", "all_namespaces", is_flag=True, help="ask at the cluster scope")
@click.option("--subresource", default="", help="e.g. status, binding")
@click.option("-q", "--quiet", is_flag=True, help="no output; the exit code is the answer")
@context.global_options
def can_i(verb: str, resource: str, as_user: str, as_groups: tuple[str, ...], all_namespaces: bool,
          subresource: str, quiet: bool) -> None:
    """Check whether VERB on TYPE or TYPE/NAME is allowed: prints yes or no (exit code 1 for no)."""
    kind_name, _, name = resource.partition("/")
    namespace = "" if all_namespaces else context.settings().current_namespace
    wanted = f"{kind_name}/{subresource}" if subresource else kind_name

    async def body(client: Client) -> bool:
        reply = await client.review_access(verb, wanted, namespace, name, user=as_user, groups=as_groups)
        return reply.allowed

    allowed = context.run(body)
    if not quiet:
        click.echo("yes" if allowed else "no")
    if not allowed:
        raise SystemExit(1)


def _rules(verbs: tuple[str, ...], resource_args: tuple[str, ...], resource_names: tuple[str, ...]
           ) -> list[rbac_pb2.PolicyRule]:
    if not verbs:
        raise CliError("at least one verb must be specified (--verb)")
    if not resource_args:
        raise CliError("at least one resource must be specified (--resource)")
    rules: dict[str, rbac_pb2.PolicyRule] = {}
    for arg in resource_args:
        for item in arg.split(","):
            base, _, sub = item.partition("/")
            if base == "*":
                group, plural = "*", "*"
            else:
                kind = kinds.resolve(base)
                group, plural = kind.group, kind.resource
            rule = rules.setdefault(group, rbac_pb2.PolicyRule(verbs=verbs, api_groups=[group],
                                                               resource_names=resource_names))
            rule.resources.append(f"{plural}/{sub}" if sub else plural)
    return list(rules.values())


def _write(obj: Message) -> None:
    async def body(client: Client) -> None:
        created = await client.create(obj)
        click.echo(f"{resources.ref_of(created)} created")

    context.run(body)


_RULE_OPTIONS = [
    click.option("--verb", "verbs", multiple=True, help="verb the rule allows (repeatable or comma-separated)"),
    click.option("--resource", "resource_args", multiple=True, help="resource (pods, deploy, pods/status, *)"),
    click.option("--resource-name", "resource_names", multiple=True, help="limit to these object names"),
]


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v for item in values for v in item.split(",") if v)


@create.command("role")
@click.argument("name")
@_RULE_OPTIONS[0]
@_RULE_OPTIONS[1]
@_RULE_OPTIONS[2]
@context.global_options
def create_role(name: str, verbs: tuple[str, ...], resource_args: tuple[str, ...],
                resource_names: tuple[str, ...]) -> None:
    """Create a Role in the namespace."""
    role = rbac_pb2.Role(api_version=RBAC_VERSION, kind="Role",
                         rules=_rules(_split(verbs), resource_args, resource_names))
    role.metadata.name, role.metadata.namespace = name, context.settings().current_namespace
    _write(role)


@create.command("clusterrole")
@click.argument("name")
@_RULE_OPTIONS[0]
@_RULE_OPTIONS[1]
@_RULE_OPTIONS[2]
@context.global_options
def create_cluster_role(name: str, verbs: tuple[str, ...], resource_args: tuple[str, ...],
                        resource_names: tuple[str, ...]) -> None:
    """Create a ClusterRole."""
    role = rbac_pb2.ClusterRole(api_version=RBAC_VERSION, kind="ClusterRole",
                                rules=_rules(_split(verbs), resource_args, resource_names))
    role.metadata.name = name
    _write(role)


def _subjects(users: tuple[str, ...], groups: tuple[str, ...], service_accounts: tuple[str, ...]
              ) -> list[rbac_pb2.Subject]:
    subjects = [rbac_pb2.Subject(kind="User", api_group=RBAC_GROUP, name=u) for u in users]
    subjects += [rbac_pb2.Subject(kind="Group", api_group=RBAC_GROUP, name=g) for g in groups]
    for sa in service_accounts:
        namespace, sep, name = sa.partition(":")
        if not sep or not namespace or not name:
            raise CliError(f'serviceaccount must be <namespace>:<name>, not "{sa}"')
        subjects.append(rbac_pb2.Subject(kind="ServiceAccount", name=name, namespace=namespace))
    if not subjects:
        raise CliError("at least one of --user, --group or --serviceaccount is required")
    return subjects


_SUBJECT_OPTIONS = [
    click.option("--user", "users", multiple=True),
    click.option("--group", "groups", multiple=True),
    click.option("--serviceaccount", "service_accounts", multiple=True, help="NAMESPACE:NAME"),
]


@create.command("rolebinding")
@click.argument("name")
@click.option("--role", default="", help="a Role in the namespace")
@click.option("--clusterrole", default="", help="a ClusterRole, granted in the namespace")
@_SUBJECT_OPTIONS[0]
@_SUBJECT_OPTIONS[1]
@_SUBJECT_OPTIONS[2]
@context.global_options
def create_role_binding(name: str, role: str, clusterrole: str, users: tuple[str, ...], groups: tuple[str, ...],
                        service_accounts: tuple[str, ...]) -> None:
    """Grant a Role or ClusterRole to users, groups or service accounts in the namespace."""
    if bool(role) == bool(clusterrole):
        raise CliError("exactly one of --role or --clusterrole must be specified")
    binding = rbac_pb2.RoleBinding(api_version=RBAC_VERSION, kind="RoleBinding",
                                   subjects=_subjects(users, groups, service_accounts))
    binding.metadata.name, binding.metadata.namespace = name, context.settings().current_namespace
    binding.role_ref.api_group = RBAC_GROUP
    binding.role_ref.kind, binding.role_ref.name = ("Role", role) if role else ("ClusterRole", clusterrole)
    _write(binding)


@create.command("clusterrolebinding")
@click.argument("name")
@click.option("--clusterrole", required=True, help="the ClusterRole to grant")
@_SUBJECT_OPTIONS[0]
@_SUBJECT_OPTIONS[1]
@_SUBJECT_OPTIONS[2]
@context.global_options
def create_cluster_role_binding(name: str, clusterrole: str, users: tuple[str, ...], groups: tuple[str, ...],
                                service_accounts: tuple[str, ...]) -> None:
    """Grant a ClusterRole everywhere."""
    binding = rbac_pb2.ClusterRoleBinding(api_version=RBAC_VERSION, kind="ClusterRoleBinding",
                                          subjects=_subjects(users, groups, service_accounts))
    binding.metadata.name = name
    binding.role_ref.api_group, binding.role_ref.kind, binding.role_ref.name = RBAC_GROUP, "ClusterRole", clusterrole
    _write(binding)
