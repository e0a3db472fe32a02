"""The proxy sharing a namespace with others: its own table (`--table`) and node ports on chosen addresses only.

A local cluster's master proxy runs in the host's namespace, next to other
clusters' masters and the host's own networks. Given a node namespace with two
addresses and a NodePort Service, when the proxier runs with a table name of its
own and `--nodeport-addresses <node IP>/32`, then the ClusterIP and the NodePort on
the node IP answer, the NodePort on the other local address does not, the default
table is never made, and `flotilla-proxy --cleanup --table NAME` removes the table.
Pure checks of the rendering and of the flags' validation come first.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import uuid

import pytest

from client import Client
from nodeagent.proxy import main as proxy_main
from nodeagent.proxy import nft, rules
from nodeagent.proxy.proxier import Proxier
from tests.slices_support import create_slices
from tests.test_proxy_netns import (  # noqa: F401 (sandbox is a fixture)
    NODE_IP,
    POD_IPS,
    Sandbox,
    curl,
    endpoints,
    random_cluster_ip,
    running,
    sandbox,
    service,
    sh,
    wait_answering,
)


def test_table_name_and_nodeport_addresses_shape_the_ruleset() -> None:
    full = rules.full_sync([], table="flotilla-proxy-demo", nodeport_addresses=["192.168.75.1/32"])
    assert "flotilla-proxy-demo" in full and "ip flotilla-proxy " not in full
    nodeport_rules = [line for line in full.splitlines() if "vmap @" in line and "nodeports" in line]
    assert len(nodeport_rules) == 2  # the DNAT rule and the no-endpoints reject
    assert all("ip daddr { 192.168.75.1/32 } fib daddr type local" in line for line in nodeport_rules)
    # Default: every local address but loopback, in the default table, as before.
    assert "fib daddr type local ip daddr != 127.0.0.0/8" in rules.full_sync([])
    assert rules.declarations([], table="t1").startswith("add table ip t1\n")
    assert nft.cleanup_transaction("t1") == "add table ip t1\ndelete table ip t1\n"


def test_bad_table_names_and_cidrs_are_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, what in ((["--table", "x; flush ruleset"], "not an nftables table name"),
                       (["--nodeport-addresses", "192.168.1.300/32"], "not an IPv4 CIDR")):
        with pytest.raises(SystemExit):
            proxy_main.parse_args(["--node-name", "n", *argv])
        assert what in capsys.readouterr().err
    opts = proxy_main.parse_args(["--node-name", "n", "--nodeport-addresses", "10.1.2.3/24"])
    assert opts.nodeport_addresses == ["10.1.2.0/24"] and opts.table == rules.TABLE


@pytest.mark.skipif(sys.platform != "linux", reason="network namespaces")
async def test_failed_first_full_sync_is_retried_and_service_syncs_wait_for_it(
        client: Client, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No kernel needed: nft is replaced by a recorder that refuses the first transaction."""
    applied: list[str] = []

    async def apply(transaction: str, *, netns: str | None = None) -> None:
        if not applied:
            applied.append("refused")
            raise nft.NftError("nft: the kernel said no")
        applied.append(transaction)

    async def list_chains(*, netns: str | None = None, table: str = rules.TABLE) -> list[str]:
        return []

    monkeypatch.setattr(nft, "apply", apply)
    monkeypatch.setattr(nft, "list_chains", list_chains)
    await client.create(service(namespace, "web", random_cluster_ip()))
    await create_slices(client, endpoints(namespace, "web", POD_IPS))
    proxier = Proxier(client, node_name="node-1")
    async with running(proxier):
        for _ in range(100):
            if proxier.full_synced:
                break
            await asyncio.sleep(0.05)
        assert proxier.full_synced, "the full sync is retried after nft refused it"
        # Refused, then the declarations and the one full transaction: the Service's own key, synced
        # meanwhile, was left to the full sync, which programmed it from the cache.
        assert len(applied) == 3 and applied[0] == "refused", applied
        assert f"{namespace}/web" in proxier.applied


async def test_own_table_and_node_ports_on_the_node_ip_only(sandbox: Sandbox, client: Client,  # noqa: F811
                                                            namespace: str) -> None:
    other_ip = "10.251.100.9"  # another local address of the node (the host's other interfaces, on a master)
    sh("ip", "-n", sandbox.node, "addr", "add", f"{other_ip}/24", "dev", "eth0")
    table = f"flotilla-proxy-t{uuid.uuid4().hex[:6]}"
    web_ip, node_port = random_cluster_ip(), random.randint(30000, 32767)
    await client.create(service(namespace, "web", web_ip, node_port=node_port))
    await create_slices(client, endpoints(namespace, "web", POD_IPS))

    proxier = Proxier(client, node_name="node-1", netns=sandbox.node, table=table,
                      nodeport_addresses=[f"{NODE_IP}/32"])
    async with running(proxier):
        await wait_answering(sandbox.node, f"http://{web_ip}/")
        await wait_answering(sandbox.node, f"http://{NODE_IP}:{node_port}/")
        code, _ = await asyncio.to_thread(curl, sandbox.node, f"http://{other_ip}:{node_port}/")
        assert code == 7, "no node port on an address outside --nodeport-addresses (nothing listens: refused)"
    listed = sh("ip", "netns", "exec", sandbox.node, "nft", "list", "tables").stdout
    assert f"table ip {table}" in listed and f"table ip {rules.TABLE}\n" not in listed + "\n"

    cleanup = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "nodeagent.proxy.main", "--cleanup", "--table", table,
                         "--netns", sandbox.node], capture_output=True, text=True, check=False)
    assert cleanup.returncode == 0, cleanup.stderr
    assert table not in sh("ip", "netns", "exec", sandbox.node, "nft", "list", "tables").stdout
