"""networking.k8s.io/v1 Ingress and IngressClass, as a user writes and reads them.

Bad Ingresses are refused with Kubernetes' paths and messages and never stored
(hosts that are IPs or misplaced wildcards, relative Prefix paths, a missing
pathType, backends with both or neither of service and resource, ports named
and numbered); an Ingress created without a class gets the newest default
IngressClass (the DefaultIngressClass admission step), one naming its class
keeps it; an IngressClass's controller is a domain-prefixed path that never
changes. Real kubectl creates an Ingress with its own `create ingress` syntax
and lists Ingresses and IngressClasses with kubectl's columns over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from client import Client
from controlplane.apiserver.auth import Attributes, UserInfo
from controlplane.apiserver.rbac import RBACAuthorizer, default_cluster_role_bindings, default_cluster_roles
from controlplane.printers import networking as printers
from kctl.main import cli
from proto import core_pb2, networking_pb2, rbac_pb2
from proto.errors import Invalid
from proto.wellknown import ANNOTATION_DEFAULT_INGRESS_CLASS
from provision.processes import ApiServer
from tests.kubectl_support import kubectl
from tests.slices_support import create_slices


def ingress(name: str, namespace: str, host: str = "a.example", path: str = "/", path_type: str = "Prefix",
            service: str = "web", port: int | str = 80) -> networking_pb2.Ingress:
    ing = networking_pb2.Ingress()
    ing.metadata.name, ing.metadata.namespace = name, namespace
    rule = ing.spec.rules.add(host=host)
    http_path = rule.http.paths.add(path=path)
    if path_type:
        http_path.path_type = path_type
    http_path.backend.service.name = service
    if isinstance(port, int):
        http_path.backend.service.port.number = port
    else:
        http_path.backend.service.port.name = port
    return ing


async def causes_of(client: Client, obj: networking_pb2.Ingress | networking_pb2.IngressClass) -> list[str]:
    with pytest.raises(Invalid) as info:
        await client.create(obj)
    return str(info.value).partition(" is invalid: ")[2].split("; ")


async def test_bad_ingresses_are_refused_with_kubernetes_messages_and_not_stored(client: Client,
                                                                                 namespace: str) -> None:
    assert await causes_of(client, ingress("ip", namespace, host="10.0.0.1")) == [
        'spec.rules[0].host: Invalid value: "10.0.0.1": must be a DNS name, not an IP address']
    [wild] = await causes_of(client, ingress("wild", namespace, host="a.*.example"))
    assert wild.startswith('spec.rules[0].host: Invalid value: "a.*.example": a wildcard DNS-1123 subdomain '
                           "must start with '*.'")
    assert await causes_of(client, ingress("rel", namespace, path="api")) == [
        'spec.rules[0].http.paths[0].path: Invalid value: "api": must be an absolute path']
    assert await causes_of(client, ingress("dots", namespace, path="/a/../b")) == [
        "spec.rules[0].http.paths[0].path: Invalid value: \"/a/../b\": must not contain '/../'"]
    assert await causes_of(client, ingress("notype", namespace, path_type="")) == [
        "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"]
    assert await causes_of(client, ingress("regex", namespace, path_type="Regex")) == [
        'spec.rules[0].http.paths[0].pathType: Unsupported value: "Regex": supported values: "Exact", '
        '"ImplementationSpecific", "Prefix"']
    both = ingress("both", namespace)
    both.spec.rules[0].http.paths[0].backend.resource.kind = "Bucket"
    both.spec.rules[0].http.paths[0].backend.resource.name = "b"
    assert await causes_of(client, both) == [
        'spec.rules[0].http.paths[0].backend: Invalid value: "": cannot set both resource and service backends']
    noport = ingress("noport", namespace, port=0)
    assert await causes_of(client, noport) == [
        "spec.rules[0].http.paths[0].backend: Required value: port name or number is required"]
    named = ingress("named", namespace, port="http")
    named.spec.rules[0].http.paths[0].backend.service.port.number = 80
    assert await causes_of(client, named) == [
        'spec.rules[0].http.paths[0].backend: Invalid value: "": cannot set both port name & port number']
    empty = networking_pb2.Ingress()
    empty.metadata.name, empty.metadata.namespace = "empty", namespace
    assert await causes_of(client, empty) == [
        "spec.rules: Invalid value: []: either `defaultBackend` or `rules` must be specified"]
    tls = ingress("tls", namespace)
    tls.spec.tls.add(hosts=["*.a.example", "B.example"], secret_name="a_tls")
    assert [c.partition(":")[0] for c in await causes_of(client, tls)] == ["spec.tls[0].hosts[1]",
                                                                           "spec.tls[0].secretName"]
    assert not (await client.list(networking_pb2.Ingress, namespace)).items

    good = ingress("good", namespace, host="*.a.example", path="/api", path_type="Exact", port="http")
    made = await client.create(good)
    assert made.spec.rules[0].http.paths[0].backend.service.port.name == "http"


def ingress_class(name: str, controller: str = "example.com/ingress", default: bool = False
                  ) -> networking_pb2.IngressClass:
    ic = networking_pb2.IngressClass()
    ic.metadata.name = name
    ic.spec.controller = controller
    if default:
        ic.metadata.annotations[ANNOTATION_DEFAULT_INGRESS_CLASS] = "true"
    return ic


async def test_a_new_ingress_gets_the_newest_default_class(client: Client, namespace: str) -> None:
    suffix = uuid.uuid4().hex[:6]
    old, new, plain = f"old-{suffix}", f"new-{suffix}", f"plain-{suffix}"
    try:
        await client.create(ingress_class(old, default=True))
        await asyncio.sleep(1.1)  # creationTimestamps have one-second resolution
        await client.create(ingress_class(new, default=True))
        await client.create(ingress_class(plain))
        found = ""
        for _ in range(50):  # admission's class cache follows a watch
            made = await client.create(ingress(f"x{_}", namespace))
            found = made.spec.ingress_class_name
            if found == new:
                break
            await asyncio.sleep(0.1)
        assert found == new
        named = ingress("named", namespace)
        named.spec.ingress_class_name = plain
        assert (await client.create(named)).spec.ingress_class_name == plain
    finally:
        for name in (old, new, plain):
            await client.delete(networking_pb2.IngressClass, name, "")


async def test_an_ingress_class_names_its_controller_once(client: Client) -> None:
    name = f"bad-{uuid.uuid4().hex[:6]}"
    assert await causes_of(client, ingress_class(name, controller="nginx")) == [
        'spec.controller: Invalid value: "nginx": must be a domain-prefixed path (such as "acme.io/foo")']
    params = ingress_class(name)
    params.spec.parameters.kind = "Config"
    params.spec.parameters.name = "c"
    params.spec.parameters.scope = "Namespace"
    assert await causes_of(client, params) == [
        "spec.parameters.namespace: Required value: `parameters.scope` is set to 'Namespace'"]
    made = await client.create(ingress_class(name))
    try:
        made.spec.controller = "example.com/other"
        with pytest.raises(Invalid, match=r'spec.controller: Invalid value: "example.com/other": field is immutable'):
            await client.update(made)
    finally:
        await client.delete(networking_pb2.IngressClass, name, "")


@pytest.mark.parametrize(("user", "verb", "resource", "allowed"), [
    (UserInfo("alice"), "create", "ingresses", True),  # edit
    (UserInfo("system:kube-proxy"), "update", "ingresses/status", True),  # the ingress agent
    (UserInfo("system:kube-proxy"), "list", "secrets", True),  # its TLS certificates
    (UserInfo("system:kube-proxy"), "update", "ingresses", False),
])
def test_default_roles_for_ingresses(user: UserInfo, verb: str, resource: str, allowed: bool) -> None:
    rbac = RBACAuthorizer()
    for obj in (*default_cluster_roles(), *default_cluster_role_bindings()):
        rbac.observe("ADDED", obj)
    binding = rbac_pb2.ClusterRoleBinding(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRoleBinding")
    binding.metadata.name = "alice-edit"
    binding.subjects.add(kind="User", name="alice", api_group="rbac.authorization.k8s.io")
    binding.role_ref.api_group, binding.role_ref.kind, binding.role_ref.name = (
        "rbac.authorization.k8s.io", "ClusterRole", "edit")
    rbac.observe("ADDED", binding)
    resource, _, sub = resource.partition("/")
    group = "" if resource == "secrets" else "networking.k8s.io"
    attrs = Attributes(user, verb, resource, namespace="team", api_group=group, subresource=sub)
    assert rbac.allowed(attrs) is allowed


async def test_kubectl_creates_and_lists_ingresses(http_url: str, namespace: str, tmp_path: Path,
                                                   client: Client) -> None:
    def run(*args: str) -> str:
        done = kubectl(http_url, tmp_path, "-n", namespace, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = await asyncio.to_thread(run, "create", "ingress", "shop", "--class=none-such",
                                  "--rule=a.example/*=web:80", "--rule=b.example/api=api:http,tls=b-tls",
                                  "--annotation=nginx.ingress.kubernetes.io/rewrite-target=/")
    assert out.strip() == "ingress.networking.k8s.io/shop created"
    made = await client.get(networking_pb2.Ingress, "shop", namespace)
    assert made.spec.rules[0].http.paths[0].path_type == "Prefix"
    assert made.spec.rules[1].http.paths[0].backend.service.port.name == "http"
    assert list(made.spec.tls[0].hosts) == ["b.example"]
    header, row = (await asyncio.to_thread(run, "get", "ingress")).splitlines()
    assert header.split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert row.split()[:5] == ["shop", "none-such", "a.example,b.example", "80,", "443"]
    # kubectl apply (client-side, a strategic merge patch the second time) changes a rule's backend.
    applied = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "applied"},
               "spec": {"ingressClassName": "none-such", "rules": [{"host": "c.example", "http": {"paths": [
                   {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "v1", "port": {"number": 80}}}}
               ]}}]}}
    for version in ("v1", "v2"):
        applied["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = version  # type: ignore[index]
        done = await asyncio.to_thread(kubectl, http_url, tmp_path, "-n", namespace, "apply", "-f", "-",
                                       stdin=json.dumps(applied))
        assert done.returncode == 0, done.stderr
    got = await client.get(networking_pb2.Ingress, "applied", namespace)
    assert got.spec.rules[0].http.paths[0].backend.service.name == "v2"
    name = f"listed-{uuid.uuid4().hex[:6]}"
    await client.create(ingress_class(name))
    try:
        classes = (await asyncio.to_thread(run, "get", "ingressclass", name)).splitlines()
        assert classes[0].split() == ["NAME", "CONTROLLER", "PARAMETERS", "AGE"]
        assert classes[1].split()[:3] == [name, "example.com/ingress", "<none>"]
    finally:
        await client.delete(networking_pb2.IngressClass, name, "")


async def test_kctl_creates_the_ingress_kubectl_creates(http_url: str, apiserver: ApiServer, namespace: str,
                                                        tmp_path: Path, client: Client) -> None:
    """The same flags to both tools make the same spec; kctl lists it with kubectl's columns."""
    flags = ["--rule=a.example/*=web:80", "--rule=a.example/exact=web:http", "--rule=b.example/api=api:http,tls",
             "--rule=c.example/=api:8080,tls=c-tls", "--default-backend=fallback:80", "--class=none-such",
             "--annotation=nginx.ingress.kubernetes.io/ssl-redirect=false"]
    made = await asyncio.to_thread(kubectl, http_url, tmp_path, "-n", namespace, "create", "ingress", "by-kubectl",
                                   *flags)
    assert made.returncode == 0, made.stderr
    runner = CliRunner()

    def kctl(*args: str) -> str:
        result = runner.invoke(cli, ["-s", apiserver.address, "-n", namespace, *args],
                               env={"KCTL_CONFIG": "/nonexistent"})
        assert result.exit_code == 0, f"kctl {' '.join(args)}: {result.output}"
        return result.output

    assert await asyncio.to_thread(kctl, "create", "ingress", "by-kctl", *flags) == \
        "ingress.networking.k8s.io/by-kctl created\n"
    theirs = await client.get(networking_pb2.Ingress, "by-kubectl", namespace)
    ours = await client.get(networking_pb2.Ingress, "by-kctl", namespace)
    assert ours.spec == theirs.spec
    assert dict(ours.metadata.annotations) == dict(theirs.metadata.annotations)
    header, *rows = (await asyncio.to_thread(kctl, "get", "ing")).splitlines()
    assert header.split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert rows[1].split()[:5] == ["by-kubectl", "none-such", "a.example,b.example,c.example", "80,", "443"]
    bad = runner.invoke(cli, ["-s", apiserver.address, "-n", namespace, "create", "ingress", "bad",
                              "--rule=a.example=web:80"], env={"KCTL_CONFIG": "/nonexistent"})
    assert bad.exit_code != 0
    assert "rule a.example=web:80 is invalid and should be in format host/path=svcname:svcport[,tls[=secret]]" \
        in bad.output


async def test_kctl_describes_an_ingress_with_its_endpoints(apiserver: ApiServer, namespace: str,
                                                             client: Client) -> None:
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = "web", namespace
    svc.spec.ports.add(name="http", port=80, protocol="TCP")
    await client.create(svc)
    ep = core_pb2.Endpoints()
    ep.metadata.name, ep.metadata.namespace = "web", namespace
    subset = ep.subsets.add()
    subset.addresses.add(ip="10.244.1.5")
    subset.ports.add(name="http", port=8080, protocol="TCP")
    await create_slices(client, ep)
    ing = ingress("described", namespace, port="http")
    ing.spec.rules.add(host="b.example").http.paths.add(path="/", path_type="Prefix").backend.service.name = "gone"
    ing.spec.rules[1].http.paths[0].backend.service.port.number = 80
    ing.spec.tls.add(hosts=["a.example"], secret_name="a-tls")
    ing.metadata.annotations["nginx.ingress.kubernetes.io/rewrite-target"] = "/"
    await client.create(ing)
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["-s", apiserver.address, "-n", namespace,
                                                              "describe", "ingress", "described"],
                                     env={"KCTL_CONFIG": "/nonexistent"})
    assert result.exit_code == 0, result.output
    lines = [line.rstrip() for line in result.output.splitlines()]
    assert "Default backend:  <default>" in lines
    assert "  a-tls terminates a.example" in lines
    assert any(line.split() == ["/", "web:http", "(10.244.1.5:8080)"] for line in lines), lines
    assert any(line.split() == ["/", "gone:80", "(<error:", "services", '"gone"', "not", "found>)"]
               for line in lines), lines
    assert any(line.split() == ["Annotations:", "nginx.ingress.kubernetes.io/rewrite-target:", "/"]
               for line in lines), lines


def test_ingress_columns_cut_hosts_and_addresses_as_kubectl() -> None:
    ing = ingress("many", "ns", host="a.example")
    for host in ("", "b.example", "c.example", "d.example"):
        ing.spec.rules.add(host=host)
    # kubectl's formatHosts: three hosts named, then the rules left counted (the empty host too).
    assert printers.hosts_text(list(ing.spec.rules)) == "a.example,b.example,c.example + 2 more..."
    assert printers.hosts_text([networking_pb2.IngressRule()]) == "*"
    for ip in ("192.168.76.101", "192.168.76.102"):
        ing.status.load_balancer.ingress.add(ip=ip)
    assert printers.address_text(ing.status.load_balancer, wide=False) == "192.168.76.10..."
    assert printers.address_text(ing.status.load_balancer, wide=True) == "192.168.76.101,192.168.76.102"
    assert printers.ports_text(ing) == "80"
