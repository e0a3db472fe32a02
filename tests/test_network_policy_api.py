"""networking.k8s.io/v1 NetworkPolicy in the API: defaults, Kubernetes' validation messages, roles, kubectl.

Given the session's apiserver, a policy written with egress rules only gets
policyTypes [Ingress, Egress] and TCP on its ports; bad policies (a peer with
an ipBlock and a selector, an except outside its cidr, an endPort on a named
port or below the port, an unknown protocol or policy type) are refused with
Kubernetes' own messages and nothing is stored; `edit` users write policies,
`view` users read them, each node's proxy reads them; real kubectl lists them
with kubectl's columns (NAME POD-SELECTOR AGE) under the short name `netpol`;
kctl describe reads as kubectl's.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from client import Client
from controlplane.apiserver.auth import Attributes, UserInfo
from controlplane.apiserver.rbac import RBACAuthorizer, default_cluster_role_bindings, default_cluster_roles
from kctl.describe.networkpolicy import describe_network_policy
from proto import manifest, networking_pb2, rbac_pb2
from proto.errors import Invalid
from tests.kubectl_support import kubectl


def policy(name: str, namespace: str, spec: dict[str, object]) -> networking_pb2.NetworkPolicy:
    made = manifest.from_dict({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                               "metadata": {"name": name, "namespace": namespace}, "spec": spec})
    assert isinstance(made, networking_pb2.NetworkPolicy)
    return made


async def causes_of(client: Client, obj: networking_pb2.NetworkPolicy) -> list[tuple[str, str]]:
    """The (field, message) pairs of the Invalid answer."""
    with pytest.raises(Invalid) as info:
        await client.create(obj)
    detail = str(info.value).partition(" is invalid: ")[2]
    return [(path, message) for path, _, message in (c.partition(": ") for c in detail.split("; "))]


async def test_defaults_fill_policy_types_and_protocols(client: Client, namespace: str) -> None:
    egress_only = await client.create(policy("egress", namespace, {
        "podSelector": {"matchLabels": {"app": "web"}},
        "egress": [{"ports": [{"port": 53}, {"port": "dns", "protocol": "UDP"}]}]}))
    assert list(egress_only.spec.policy_types) == ["Ingress", "Egress"]
    assert [p.protocol for p in egress_only.spec.egress[0].ports] == ["TCP", "UDP"]
    deny_all = await client.create(policy("deny", namespace, {"podSelector": {}}))
    assert list(deny_all.spec.policy_types) == ["Ingress"]
    said = await client.create(policy("egress-deny", namespace, {"podSelector": {}, "policyTypes": ["Egress"]}))
    assert list(said.spec.policy_types) == ["Egress"]


async def test_bad_policies_are_refused_with_kubernetes_messages_and_not_stored(client: Client,
                                                                                 namespace: str) -> None:
    assert await causes_of(client, policy("peers", namespace, {"podSelector": {}, "ingress": [{"from": [
        {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}},
        {},
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "192.168.0.0/16", "10.0.0.0/8", "x"]}},
        {"ipBlock": {"cidr": "10.0.0.300/8"}}]}]})) == [
        ("spec.ingress[0].from[0]", "Forbidden: may not specify both ipBlock and another peer"),
        ("spec.ingress[0].from[1]", "Required value: must specify a peer"),
        ("spec.ingress[0].from[2].ipBlock.except[1]", 'Invalid value: "192.168.0.0/16": must be a strict subset '
                                                      "of `cidr`"),
        ("spec.ingress[0].from[2].ipBlock.except[2]", 'Invalid value: "10.0.0.0/8": must be a strict subset of '
                                                      "`cidr`"),
        ("spec.ingress[0].from[2].ipBlock.except[3]", 'Invalid value: "x": must be a valid CIDR value, (e.g. '
                                                      "10.9.8.0/24 or 2001:db8::/64)"),
        ("spec.ingress[0].from[3].ipBlock.cidr", 'Invalid value: "10.0.0.300/8": must be a valid CIDR value, '
                                                 "(e.g. 10.9.8.0/24 or 2001:db8::/64)")]
    assert await causes_of(client, policy("ports", namespace, {"podSelector": {}, "egress": [{"ports": [
        {"port": "http", "endPort": 90},
        {"port": 100, "endPort": 90},
        {"protocol": "ICMP"},
        {"endPort": 90},
        {"port": 70000},
        {"port": "Not_A_Name"}]}]})) == [
        ("spec.egress[0].ports[0].endPort", "Invalid value: 90: may not be specified when `port` is non-numeric"),
        ("spec.egress[0].ports[1].endPort", "Invalid value: 100: must be greater than or equal to `port`"),
        ("spec.egress[0].ports[2].protocol", 'Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"'),
        ("spec.egress[0].ports[3].endPort", "Invalid value: 90: may not be specified when `port` is not specified"),
        ("spec.egress[0].ports[4].port", "Invalid value: 70000: must be between 1 and 65535, inclusive"),
        ("spec.egress[0].ports[5].port", 'Invalid value: "Not_A_Name": must contain only alpha-numeric characters '
                                         "(a-z, 0-9), and hyphens (-)")]
    assert await causes_of(client, policy("types", namespace, {
        "podSelector": {"matchExpressions": [{"key": "app", "operator": "Is"}]}, "policyTypes": ["Ingres"]})) == [
        ("spec.podSelector.matchExpressions[0].operator", 'Invalid value: "Is": not a valid selector operator'),
        ("spec.policyTypes[0]", 'Unsupported value: "Ingres": supported values: "Ingress", "Egress"')]
    assert not (await client.list(networking_pb2.NetworkPolicy, namespace)).items

    ok = await client.create(policy("range", namespace, {"podSelector": {}, "ingress": [
        {"ports": [{"port": 8000, "endPort": 9000}], "from": [
            {"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {"matchLabels": {"app": "c"}}},
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}]}))
    assert ok.spec.ingress[0].ports[0].end_port == 9000


@pytest.mark.parametrize(("user", "verb", "allowed"), [
    (UserInfo("system:kube-proxy"), "watch", True),  # every node's proxy enforces them
    (UserInfo("alice"), "create", True),  # edit
    (UserInfo("bob"), "list", True),  # view
    (UserInfo("bob"), "delete", False),
])
def test_default_roles_manage_network_policies(user: UserInfo, verb: str, allowed: bool) -> None:
    rbac = RBACAuthorizer()
    for obj in (*default_cluster_roles(), *default_cluster_role_bindings()):
        rbac.observe("ADDED", obj)
    for name, role in (("alice", "edit"), ("bob", "view")):
        binding = rbac_pb2.ClusterRoleBinding(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRoleBinding")
        binding.metadata.name = f"{name}-{role}"
        binding.subjects.add(kind="User", name=name, api_group="rbac.authorization.k8s.io")
        binding.role_ref.api_group, binding.role_ref.kind, binding.role_ref.name = (
            "rbac.authorization.k8s.io", "ClusterRole", role)
        rbac.observe("ADDED", binding)
    attrs = Attributes(user, verb, "networkpolicies", namespace="team", api_group="networking.k8s.io")
    assert rbac.allowed(attrs) is allowed


async def test_kubectl_lists_policies_with_kubectls_columns(http_url: str, namespace: str, tmp_path: Path) -> None:
    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return kubectl(http_url, tmp_path, "-n", namespace, *args, stdin=stdin)

    for made in (policy("web", namespace, {"podSelector": {"matchLabels": {"app": "web"}},
                                           "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "fe"}}}]}]}),
                 policy("deny-all", namespace, {"podSelector": {}})):
        created = await asyncio.to_thread(run, "create", "-f", "-", stdin=json.dumps(manifest.to_dict(made)))
        assert created.returncode == 0, created.stderr
    listed = await asyncio.to_thread(run, "get", "netpol")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["NAME", "POD-SELECTOR", "AGE"]
    assert [row[:2] for row in rows[1:]] == [["deny-all", "<none>"], ["web", "app=web"]]
    shown = await asyncio.to_thread(run, "get", "networkpolicy", "web", "-o", "json")
    assert json.loads(shown.stdout)["spec"]["ingress"][0]["from"][0]["podSelector"] == {"matchLabels": {"role": "fe"}}


def test_describe_reads_as_kubectls() -> None:
    made = policy("web", "shop", {
        "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}},
                              {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                     "ports": [{"port": 80, "protocol": "TCP"}]},
                    {}]})
    text = describe_network_policy(made).render()
    assert text.split("Spec:\n", 1)[1] == (
        "  PodSelector:     app=web\n"
        "  Allowing ingress traffic:\n"
        "    To Port: 80/TCP\n"
        "    From:\n"
        "      PodSelector: role=client\n"
        "    From:\n"
        "      IPBlock:\n"
        "        CIDR: 10.0.0.0/8\n"
        "        Except: 10.1.0.0/16\n"
        "    ----------\n"
        "    To Port: <any> (traffic allowed to all ports)\n"
        "    From: <any> (traffic not restricted by source)\n"
        "  Allowing egress traffic:\n"
        "    <none> (Selected pods are isolated for egress connectivity)\n"
        "  Policy Types: Ingress, Egress\n")
    assert text.startswith("Name:         web\nNamespace:    shop\n")
