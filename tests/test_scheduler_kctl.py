"""kctl cordon, uncordon, taint and drain, as an operator uses them before maintenance.

Given hollow nodes and pods placed on them, the commands run in-process
(CliRunner) against the session's apiserver and print what kubectl prints.
Setup and checks use the typed client on a private event loop, as these tests
are synchronous (kctl runs its own loop).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner, Result

from bench import hollow
from client import Client
from kctl.main import cli
from proto import core_pb2
from proto.errors import NotFound
from provision.processes import ApiServer

T = TypeVar("T")
Kctl = Callable[..., Result]


def api(apiserver: ApiServer, call: Callable[[Client], Awaitable[T]]) -> T:
    async def body() -> T:
        async with Client(apiserver.address) as client:
            return await call(client)
    return asyncio.run(body())


@pytest.fixture
def kctl(apiserver: ApiServer, tmp_path: Path) -> Kctl:
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(cli, ["-s", apiserver.address, *args], env={"KCTL_CONFIG": str(tmp_path / "none")})
    return run


@pytest.fixture
def node(apiserver: ApiServer) -> Iterator[str]:
    name = f"kn-{uuid.uuid4().hex[:8]}"
    api(apiserver, lambda c: hollow.register(c, hollow.node(name)))
    yield name

    async def cleanup(c: Client) -> None:
        try:
            await c.delete(core_pb2.Node, name)
        except NotFound:
            pass
    api(apiserver, cleanup)


def get_node(apiserver: ApiServer, name: str) -> core_pb2.Node:
    return api(apiserver, lambda c: c.get(core_pb2.Node, name))


def test_cordon_and_uncordon(kctl: Kctl, node: str, apiserver: ApiServer) -> None:
    assert kctl("cordon", node).stdout == f"node/{node} cordoned\n"
    assert get_node(apiserver, node).spec.unschedulable
    assert kctl("cordon", node).stdout == f"node/{node} already cordoned\n"
    assert kctl("uncordon", f"node/{node}").stdout == f"node/{node} uncordoned\n"
    assert not get_node(apiserver, node).spec.unschedulable


def test_taint_add_overwrite_and_remove(kctl: Kctl, node: str, apiserver: ApiServer) -> None:
    assert kctl("taint", "nodes", node, "dedicated=db:NoSchedule").stdout == f"node/{node} tainted\n"
    assert [(t.key, t.value, t.effect) for t in get_node(apiserver, node).spec.taints] == [
        ("dedicated", "db", "NoSchedule")]
    refused = kctl("taint", "nodes", node, "dedicated=web:NoSchedule")
    assert refused.exit_code == 1
    assert refused.output == (f"error: node {node} already has dedicated taint(s) with same effect(s) "
                              "and --overwrite is false\n")
    assert kctl("taint", "nodes", node, "dedicated=web:NoSchedule", "--overwrite").exit_code == 0
    assert kctl("taint", f"node/{node}", "spot:PreferNoSchedule").exit_code == 0
    assert [(t.key, t.value) for t in get_node(apiserver, node).spec.taints] == [("dedicated", "web"), ("spot", "")]
    assert kctl("taint", "nodes", node, "dedicated:NoSchedule-").stdout == f"node/{node} untainted\n"
    assert kctl("taint", "nodes", node, "spot-").stdout == f"node/{node} untainted\n"
    assert not get_node(apiserver, node).spec.taints
    assert kctl("taint", "nodes", node, "spot-").output == 'error: taint "spot" not found\n'
    assert kctl("taint", "nodes", node, "a=b:Sometimes").output == (
        "error: invalid taint effect: Sometimes, unsupported taint effect\n")


def _pod(name: str, namespace: str, node: str, *, owner: str = "", mirror: bool = False,
         emptydir: bool = False) -> core_pb2.Pod:
    pod = hollow.pod(name, namespace)
    pod.spec.node_name = node
    if owner:
        pod.metadata.owner_references.add(api_version="apps/v1", kind=owner, name=f"{name}-owner",
                                          uid=str(uuid.uuid4()), controller=True)
    if mirror:
        pod.metadata.annotations["kubernetes.io/config.mirror"] = "hash"
    if emptydir:
        pod.spec.volumes.add(name="scratch").empty_dir.SetInParent()
    return pod


def test_drain_refuses_unsafe_pods_then_evicts_with_the_flags(kctl: Kctl, node: str, apiserver: ApiServer) -> None:
    ns = f"kd-{uuid.uuid4().hex[:8]}"

    async def setup(c: Client) -> None:
        namespace = core_pb2.Namespace(api_version="v1", kind="Namespace")
        namespace.metadata.name = ns
        await c.create(namespace)
        for pod in (_pod("web", ns, node, owner="ReplicaSet"), _pod("bare", ns, node),
                    _pod("agent", ns, node, owner="DaemonSet"), _pod("static", ns, node, mirror=True),
                    _pod("cache", ns, node, owner="ReplicaSet", emptydir=True)):
            await c.create(pod)

    api(apiserver, setup)
    refused = kctl("drain", node, "--grace-period", "0")
    assert refused.exit_code == 1
    assert refused.stdout == f"node/{node} cordoned\n"
    assert f'error: unable to drain node "{node}" due to error: ' in refused.stderr
    assert f"cannot delete Pods declare no controller (use --force to override): {ns}/bare" in refused.stderr
    assert (f"cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): {ns}/agent"
            in refused.stderr)
    assert (f"cannot delete Pods with local storage (use --delete-emptydir-data to override): {ns}/cache"
            in refused.stderr)

    def names(c: Client) -> Awaitable[Any]:
        return c.list(core_pb2.Pod, ns)

    assert len(api(apiserver, names).items) == 5  # nothing was deleted
    drained = kctl("drain", node, "--force", "--ignore-daemonsets", "--delete-emptydir-data",
                   "--grace-period", "0", "--timeout", "10")
    assert drained.exit_code == 0, drained.output
    assert drained.stdout.splitlines()[0] == f"node/{node} already cordoned"
    assert drained.stdout.splitlines()[-1] == f"node/{node} drained"
    for evicted in ("web", "bare", "cache"):
        assert f"evicting pod {ns}/{evicted}\n" in drained.stdout and f"pod/{evicted} evicted\n" in drained.stdout
    assert f"Warning: ignoring DaemonSet-managed Pods: {ns}/agent" in drained.stderr
    assert sorted(p.metadata.name for p in api(apiserver, names).items) == ["agent", "static"]
