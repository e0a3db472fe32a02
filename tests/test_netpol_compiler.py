"""The NetworkPolicy compiler (nodeagent/netpol/compiler.py): policies + pods in, nftables text out.

Given a small cluster (pods on two nodes, two namespaces), each story checks
the exact chains, sets and elements node n1 gets: selector peers become one
set of pod IPs per rule, an ipBlock's except an interval set, a named port a
set of (pod IP . protocol . its own number), endPort a range; policies that
select none of n1's pods cost nothing; selector peers are sets shared by every
rule selecting alike; pods isolated by the same policies share
one chain; a change is one transaction that never deletes what is still
named; the output does not depend on the order things were seen in. Where nft
and root are at hand, the table loads into a scratch network namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from nodeagent.netpol import compiler
from nodeagent.netpol.index import ClusterIndex, pod_info
from nodeagent.proxy.rules import Fragment
from proto import core_pb2, manifest, networking_pb2
from proto.selectors import parse_label_selector

NODE = "n1"


def pod(ns: str, name: str, ip: str, node: str, labels: dict[str, str],
        ports: tuple[tuple[str, int], ...] = (), phase: str = "Running") -> core_pb2.Pod:
    made = core_pb2.Pod()
    made.metadata.namespace, made.metadata.name = ns, name
    made.metadata.labels.update(labels)
    made.spec.node_name, made.status.pod_ip, made.status.phase = node, ip, phase
    container = made.spec.containers.add(name="c")
    for port_name, number in ports:
        container.ports.add(name=port_name, container_port=number, protocol="TCP")
    return made


def policy(name: str, spec: dict[str, Any], namespace: str = "shop") -> networking_pb2.NetworkPolicy:
    made = manifest.from_dict({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                               "metadata": {"name": name, "namespace": namespace}, "spec": spec})
    assert isinstance(made, networking_pb2.NetworkPolicy)
    return made


PODS = [
    pod("shop", "web-1", "10.1.0.2", "n1", {"app": "web"}, (("http", 8080),)),
    pod("shop", "web-2", "10.1.1.2", "n2", {"app": "web"}, (("http", 8081),)),
    pod("shop", "client", "10.1.0.3", "n1", {"role": "client"}),
    pod("shop", "done", "10.1.0.4", "n1", {"role": "client"}, phase="Succeeded"),  # its IP may be reused
    pod("ops", "mon", "10.1.1.9", "n2", {"app": "mon"}),
]


def cluster(pods: list[core_pb2.Pod] = PODS) -> ClusterIndex:
    index = ClusterIndex()
    index.set_namespace("shop", {"kubernetes.io/metadata.name": "shop"})
    index.set_namespace("ops", {"kubernetes.io/metadata.name": "ops", "team": "ops"})
    for p in pods:
        index.set_pod(f"{p.metadata.namespace}/{p.metadata.name}", pod_info(p))
    return index


WEB = {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"],
       "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}},
                             {"namespaceSelector": {"matchLabels": {"team": "ops"}}},
                             {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}],
                    "ports": [{"port": "http", "protocol": "TCP"}, {"port": 9000, "endPort": 9100}]}],
       "egress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
                  {"to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http"}]}]}


def test_a_policy_compiles_to_peer_sets_named_ports_and_ranges() -> None:
    web = policy("web", WEB)
    compiled = compiler.compile_policy(web, cluster(), NODE)
    assert compiled.ingress_targets == compiled.egress_targets == {"shop/web-1"}
    # Selector peers are shared sets named after what selects: the same selectors, the same set.
    clients, ops = (compiler.peer_spec(peer, "shop").name for peer in list(getattr(web.spec.ingress[0], "from"))[:2])
    same = getattr(policy("other", WEB).spec.ingress[0], "from")[0]  # another policy, the same selector
    assert compiler.peer_spec(same, "shop").name == clients != compiler.peer_spec(same, "ops").name
    assert set(compiled.peers) == {clients, ops}
    frag = compiled.fragment
    block = "ip saddr 192.168.0.0/16 ip saddr != 192.168.1.0/24"
    port = "ip daddr . meta l4proto . th dport @ingress/shop/web/0/port0"
    assert frag.chains == {
        "ingress/shop/web": (
            f"ip saddr @{clients} meta l4proto tcp th dport 9000-9100 accept",
            f"ip saddr @{ops} meta l4proto tcp th dport 9000-9100 accept",
            f"{block} meta l4proto tcp th dport 9000-9100 accept",
            f"ip saddr @{clients} {port} accept",
            f"ip saddr @{ops} {port} accept",
            f"{block} {port} accept"),
        "egress/shop/web": (
            "meta l4proto udp th dport 53 accept",
            "meta l4proto tcp th dport 53 accept",
            "ip daddr . meta l4proto . th dport @egress/shop/web/1/port0 accept"),
    }
    assert frag.elements == {
        # "http" is 8080 on web-1, the only selected pod of n1
        "ingress/shop/web/0/port0": {"10.1.0.2 . tcp . 8080": ""},
        # egress to "http" of the web pods: each pod's own number
        "egress/shop/web/1/port0": {"10.1.0.2 . tcp . 8080": "", "10.1.1.2 . tcp . 8081": ""},
    }
    # The client (the finished pod is left out), and every pod of a namespace labelled team=ops.
    assert compiler.peer_layer(compiled.peers.values(), cluster()).elements == {
        clients: {"10.1.0.3": ""}, ops: {"10.1.1.9": ""}}
    many = policy("many", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
        "cidr": "10.0.0.0/8", "except": [f"10.{i}.0.0/16" for i in range(1, 6)]}}]}]})
    excepts = compiler.compile_policy(many, cluster(), NODE).fragment  # more than four: an interval set
    assert excepts.chains["ingress/shop/many"] == (
        "ip saddr 10.0.0.0/8 ip saddr != @ingress/shop/many/0/except0 accept",)
    assert excepts.sets["ingress/shop/many/0/except0"] == "type ipv4_addr; flags interval;"
    assert len(excepts.elements["ingress/shop/many/0/except0"]) == 5


def test_policies_selecting_no_pod_of_this_node_cost_nothing() -> None:
    mon_only = policy("mon", {"podSelector": {"matchLabels": {"app": "mon"}}}, namespace="ops")
    assert compiler.compile_policy(mon_only, cluster(), NODE) == compiler.Compiled()
    assert compiler.compile_policy(mon_only, cluster(), "n2").ingress_targets == {"ops/mon"}


def test_default_deny_isolates_every_pod_and_shares_one_chain() -> None:
    index = cluster()
    deny = compiler.compile_policy(policy("deny", {"podSelector": {}}), index, NODE)
    assert deny.fragment.chains == {"ingress/shop/deny": ()}  # nothing allowed
    assert deny.ingress_targets == {"shop/web-1", "shop/client"} and not deny.egress_targets
    layer = compiler.pod_layer({"shop/deny": deny}, index)
    [chain] = layer.chains
    assert layer.chains[chain] == ("jump ingress/shop/deny", "drop")
    assert layer.elements == {"ingress-pods": {"10.1.0.2": f"goto {chain}", "10.1.0.3": f"goto {chain}"}}


def test_egress_only_policy_leaves_ingress_alone() -> None:
    compiled = compiler.compile_policy(policy("out", {"podSelector": {}, "policyTypes": ["Egress"]}), cluster(), NODE)
    assert compiled.fragment.chains == {"egress/shop/out": ()}
    assert not compiled.ingress_targets


def test_the_output_does_not_depend_on_the_order_things_were_seen_in() -> None:
    policies = [policy("web", WEB), policy("deny", {"podSelector": {}})]
    first, second = cluster(PODS), cluster(list(reversed(PODS)))

    def table(index: ClusterIndex, order: list[networking_pb2.NetworkPolicy]) -> str:
        compiled = {f"shop/{p.metadata.name}": compiler.compile_policy(p, index, NODE) for p in order}
        fragments = [compiled[key].fragment for key in sorted(compiled)]
        peers = compiler.peer_layer([p for c in compiled.values() for p in c.peers.values()], index)
        return compiler.full_table([peers, *fragments, compiler.pod_layer(compiled, index)])

    assert table(first, policies) == table(second, list(reversed(policies)))


def test_a_change_adds_before_it_deletes() -> None:
    index = cluster()
    web = compiler.compile_policy(policy("web", WEB), index, NODE)
    deny = compiler.compile_policy(policy("deny", {"podSelector": {}}), index, NODE)
    both = compiler.pod_layer({"shop/deny": deny, "shop/web": web}, index)
    only_deny = compiler.pod_layer({"shop/deny": deny}, index)
    lines = compiler.diff([(web.fragment, Fragment()), (both, only_deny)], table="t").splitlines()
    # web-1 moves from the (deny, web) chain to the deny-only one, then the web chain goes
    moved = next(i for i, line in enumerate(lines) if line.startswith("add element ip t ingress-pods { 10.1.0.2"))
    flushed = lines.index("flush chain ip t ingress/shop/web")
    deleted = lines.index("delete chain ip t ingress/shop/web")
    assert moved < flushed < deleted
    assert lines.index("delete set ip t ingress/shop/web/0/port0") > deleted
    assert compiler.diff([(web.fragment, web.fragment)]) == ""


@pytest.mark.parametrize(("selector", "expected"), [
    ("role=client", ["shop/client"]),
    ("app in (web,mon)", ["shop/web-1", "shop/web-2"]),
    ("app notin (web)", ["shop/client"]),
    ("!app", ["shop/client"]),
    ("app,app!=mon", ["shop/web-1", "shop/web-2"]),
    ("", ["shop/client", "shop/web-1", "shop/web-2"]),
])
def test_the_index_answers_selectors_like_a_full_scan(selector: str, expected: list[str]) -> None:
    index = cluster()
    assert sorted(p.key for p in index.select_pods("shop", parse_label_selector(selector))) == expected


@pytest.fixture
def scratch_netns() -> Iterator[str]:
    if os.geteuid() != 0 or not shutil.which("nft"):
        pytest.skip("needs root and nft")
    name = f"netpol-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_the_table_and_a_change_load_into_the_kernel(scratch_netns: str) -> None:
    index = cluster()
    web = compiler.compile_policy(policy("web", WEB), index, NODE)
    deny = compiler.compile_policy(policy("deny", {"podSelector": {}}), index, NODE)
    both = compiler.pod_layer({"shop/deny": deny, "shop/web": web}, index)
    only_deny = compiler.pod_layer({"shop/deny": deny}, index)

    def nft(script: str) -> str:
        done = subprocess.run(["ip", "netns", "exec", scratch_netns, "nft", "-f", "-"], input=script, text=True,
                              capture_output=True)
        assert done.returncode == 0, done.stderr
        listed = ["ip", "netns", "exec", scratch_netns, "nft", "list", "table", "ip", compiler.TABLE]
        return subprocess.run(listed, capture_output=True, text=True, check=True).stdout

    peers = compiler.peer_layer(web.peers.values(), index)
    loaded = nft(compiler.full_table([peers, web.fragment, deny.fragment, both]))
    assert "chain ingress/shop/web {" in loaded and "10.1.0.2 : goto pods-ingress-" in loaded
    changed = nft(compiler.diff([(web.fragment, Fragment()), (both, only_deny)]))
    assert "set peers-" in changed  # the shared peer sets stay while the layer names them
    assert "ingress/shop/web" not in changed and "chain ingress/shop/deny {" in changed
    again = nft(compiler.full_table([peers, deny.fragment, only_deny]))  # a full sync replaces what is there
    assert again == changed
