"""The node's NetworkPolicy loop against the session's apiserver, programming a scratch network namespace.

Given a controller for node `np-node` (pods elsewhere are peers only): with no
policy there is no table; a policy selecting a pod of the node writes the table
(the pod isolated, the clients' IPs in its peer set); a pod relabelled into the
peers, a new pod of the node and a namespace labelled into a namespaceSelector
each reach the kernel without touching anything else; a policy that selects
none of the node's pods costs nothing; deleting the last policy removes the
table (when no other module's policies share the session's apiserver). Needs root and nft (the kernel holds the table).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from client import Client
from client.retry import update_fresh
from nodeagent.netpol import compiler
from nodeagent.netpol.controller import NetworkPolicyController
from proto import core_pb2, manifest, networking_pb2
from tests.test_netpol_compiler import scratch_netns as scratch_netns

NODE = "np-node"
TABLE = f"netpol-test-{uuid.uuid4().hex[:6]}"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft")


@pytest.fixture
async def controller(client: Client, scratch_netns: str) -> AsyncIterator[NetworkPolicyController]:
    made = NetworkPolicyController(client, node_name=NODE, netns=scratch_netns, table=TABLE)
    task = asyncio.create_task(made.run())
    try:
        yield made
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def table(netns: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "ip", TABLE],
                          capture_output=True, text=True)
    return done.stdout


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


async def running_pod(client: Client, namespace: str, name: str, node: str, ip: str,
                      labels: dict[str, str]) -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.namespace, pod.metadata.name = namespace, name
    pod.metadata.labels.update(labels)
    pod.spec.node_name = node
    pod.spec.containers.add(name="c", image="busybox").ports.add(name="http", container_port=8080)
    made = await client.create(pod)
    made.status.phase, made.status.pod_ip = "Running", ip
    return await client.update_status(made)


def policy(name: str, namespace: str, spec: dict[str, object]) -> networking_pb2.NetworkPolicy:
    made = manifest.from_dict({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                               "metadata": {"name": name, "namespace": namespace}, "spec": spec})
    assert isinstance(made, networking_pb2.NetworkPolicy)
    return made


async def test_the_table_follows_policies_pods_and_namespaces(client: Client, namespace: str, scratch_netns: str,
                                                               controller: NetworkPolicyController) -> None:
    netns = scratch_netns
    await running_pod(client, namespace, "web", NODE, "10.66.0.2", {"app": "web"})
    await running_pod(client, namespace, "friend", "elsewhere", "10.66.1.3", {"role": "client"})
    await running_pod(client, namespace, "stranger", "elsewhere", "10.66.1.4", {})
    await asyncio.sleep(0.5)
    # The session's apiserver is shared: other modules' policies may exist (then the table does, empty for us).
    alone = not (await client.list(networking_pb2.NetworkPolicy, "")).items
    if alone:
        assert table(netns) == ""  # no policy: no table, nothing in any packet's path
    assert "10.66.0.2" not in table(netns)

    made = await client.create(policy("web", namespace, {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}},
                              {"namespaceSelector": {"matchLabels": {"team": "ops"}}}],
                     "ports": [{"port": "http"}]}]}))
    await until(lambda: "10.66.0.2 : goto pods-ingress-" in table(netns), "web isolated")
    clients, team_ops = (compiler.peer_spec(peer, namespace).name
                    for peer in getattr(made.spec.ingress[0], "from"))

    def peers(name: str) -> str:
        """The IPs of shared peer set `name`."""
        return table(netns).split(f"set {name} {{", 1)[-1].split("}")[0]
    assert "10.66.1.3" in peers(clients) and "10.66.1.4" not in peers(clients)
    assert "10.66.0.2 . tcp . 8080" in table(netns)  # the named port, resolved on web

    # The stranger becomes a client: only the peer set changes.
    def relabel(pod: core_pb2.Pod) -> None:
        pod.metadata.labels["role"] = "client"
    await update_fresh(client, core_pb2.Pod, "stranger", namespace, relabel)
    await until(lambda: "10.66.1.4" in peers(clients), "stranger among the peers")

    # A second web pod on this node is isolated too; one in a namespace labelled team=ops becomes a peer.
    await running_pod(client, namespace, "web-2", NODE, "10.66.0.5", {"app": "web"})
    await until(lambda: "10.66.0.5 : goto pods-ingress-" in table(netns), "web-2 isolated")
    ops = core_pb2.Namespace()
    ops.metadata.name = f"{namespace}-ops"
    await client.create(ops)
    await running_pod(client, ops.metadata.name, "mon", "elsewhere", "10.66.2.7", {"app": "mon"})

    def label_ops(ns: core_pb2.Namespace) -> None:
        ns.metadata.labels["team"] = "ops"
    await update_fresh(client, core_pb2.Namespace, ops.metadata.name, "", label_ops)
    await until(lambda: "10.66.2.7" in peers(team_ops), "the ops namespace's pod a peer")

    # A policy selecting none of this node's pods adds nothing; deleting the last one removes the table.
    await client.create(policy("others", namespace, {"podSelector": {"matchLabels": {"role": "client"}}}))
    await asyncio.sleep(0.5)
    assert f"chain ingress/{namespace}/others" not in table(netns)
    await client.delete(networking_pb2.NetworkPolicy, "web", namespace)
    await until(lambda: "10.66.0.2" not in table(netns), "web no longer isolated")
    await client.delete(networking_pb2.NetworkPolicy, "others", namespace)
    if alone:
        await until(lambda: table(netns) == "", "the table gone with the last policy")
    await client.delete(core_pb2.Namespace, ops.metadata.name)
