"""`kctl create ingress`, with kubectl's syntax and output.

    kctl create ingress NAME --rule="host/path=service:port[,tls[=secret]]" ... \\
        [--class=CLASS] [--default-backend=service:port] [--annotation=KEY=VALUE ...]

As `kubectl create ingress`: a path ending in `*` is a Prefix path (the `*`
dropped), any other an Exact one; the host may be empty (`/path=svc:80`); the
port is a number or a port name. Rules of the same host share one rule; `tls`
adds the host to a TLS entry (with `=secret`, that Secret's entry: hosts of
one Secret share it). Without --class the cluster's default IngressClass is
chosen by the apiserver (DefaultIngressClass). `get`, `describe` and `apply`
need nothing of their own.
"""

from __future__ import annotations

import re

import click

from client import Client
from kctl import context, resources
from kctl.commands.apply import create
from kctl.errors import CliError
from proto import networking_pb2

# kubectl's rule grammar: host (may be empty or a wildcard), an absolute path, service:port, then tls.
_RULE = re.compile(r"^(?P<host>[\w*.\-]*)(?P<path>/[^=]*)=(?P<service>[\w\-.]+):(?P<port>[\w\-]+)"
                   r"(?P<tls>,tls(=(?P<secret>[\w\-.]+))?)?$")
_BACKEND = re.compile(r"^(?P<service>[\w\-.]+):(?P<port>[\w\-]+)$")
RULE_FORMAT = "host/path=svcname:svcport[,tls[=secret]]"


def _backend(service: str, port: str) -> networking_pb2.IngressBackend:
    backend = networking_pb2.IngressBackend()
    backend.service.name = service
    if port.isdigit():
        backend.service.port.number = int(port)
    else:
        backend.service.port.name = port
    return backend


def new_ingress(name: str, namespace: str, *, rules: tuple[str, ...] = (), ingress_class: str = "",
                default_backend: str = "", annotations: tuple[str, ...] = ()) -> networking_pb2.Ingress:
    """The Ingress `kubectl create ingress` builds from its flags (CliError naming a bad one)."""
    if not rules and not default_backend:
        raise CliError("not enough information provided: every ingress has to either specify a default-backend "
                       "(which catches all traffic) or a list of rules (which catch specific paths)")
    ing = networking_pb2.Ingress(api_version="networking.k8s.io/v1", kind="Ingress")
    ing.metadata.name, ing.metadata.namespace = name, namespace
    for annotation in annotations:
        key, sep, value = annotation.partition("=")
        if not sep or not key:
            raise CliError(f"annotation {annotation} is invalid and should be in format key=[value]")
        ing.metadata.annotations[key] = value
    if ingress_class:
        ing.spec.ingress_class_name = ingress_class
    if default_backend:
        found = _BACKEND.match(default_backend)
        if found is None:
            raise CliError(f"default-backend should be in format servicename:serviceport, got {default_backend}")
        ing.spec.default_backend.CopyFrom(_backend(found["service"], found["port"]))
    by_host: dict[str, networking_pb2.IngressRule] = {}
    by_secret: dict[str, networking_pb2.IngressTLS] = {}
    for text in rules:
        found = _RULE.match(text)
        if found is None:
            raise CliError(f"rule {text} is invalid and should be in format {RULE_FORMAT}")
        host, path = found["host"], found["path"]
        rule = by_host.get(host)
        if rule is None:
            rule = by_host[host] = ing.spec.rules.add(host=host)
        path_type = "Prefix" if path.endswith("*") else "Exact"
        http_path = rule.http.paths.add(path=path.removesuffix("*") or "/", path_type=path_type)
        http_path.backend.CopyFrom(_backend(found["service"], found["port"]))
        if found["tls"]:
            secret = found["secret"] or ""
            tls = by_secret.get(secret)
            if tls is None:
                tls = by_secret[secret] = ing.spec.tls.add(secret_name=secret)
            if host and host not in tls.hosts:
                tls.hosts.append(host)
    return ing


@create.command("ingress")
@click.argument("name")
@click.option("--rule", "rules", multiple=True, metavar="RULE",
              help=f"A rule in format {RULE_FORMAT}; a path ending in * is a prefix (repeatable).")
@click.option("--class", "ingress_class", default="", help="The IngressClass (default: the cluster's default).")
@click.option("--default-backend", default="", help="Where requests matching no rule go: svcname:svcport.")
@click.option("--annotation", "annotations", multiple=True, metavar="KEY=VALUE",
              help="An annotation to put on the Ingress (repeatable).")
@context.global_options
def create_ingress(name: str, rules: tuple[str, ...], ingress_class: str, default_backend: str,
                   annotations: tuple[str, ...]) -> None:
    """Create an ingress named NAME from --rule, --default-backend, --class and --annotation."""
    ing = new_ingress(name, context.settings().current_namespace, rules=rules, ingress_class=ingress_class,
                      default_backend=default_backend, annotations=annotations)

    async def body(client: Client) -> None:
        created = await client.create(ing)
        click.echo(f"{resources.ref_of(created)} created")

    context.run(body)


create.add_command(create_ingress, "ing")
