"""The kubelet's side of pod security: privileged pods, host namespaces, pids limits, and failing loudly.

Given a real node (containerd, runc, CNI) whose kubelet allows each pod only 64
processes: a privileged container runs (its sandbox is marked privileged, which
containerd requires) and can do what only privilege allows; hostPID, hostIPC
and hostNetwork pods are in the node's namespaces and see its processes; a fork
bomb stops at the pod's pids limit while the node's other pods carry on; and a
pod the runtime cannot start says why in its status and events, with no
traceback in the kubelet's log.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from client import Client
from nodeagent.kubelet.cgroups import node_pid_capacity, pids_cgroup, pids_current
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.sandbox import cgroup_parent
from proto import core_pb2
from provision.localnode import LocalNode
from tests.kubelet_support import (
    allow_privileged_pods,
    busybox,
    eventually,
    make_pod,
    node,
    pod_events,
    wait_pod,
)

__all__ = ["node"]  # the module-scoped fixture, imported so pytest finds it here

PODS_PIDS_LIMIT = 64
KUBELET_SETTINGS = {"pod_pids_limit": PODS_PIDS_LIMIT}


def finished(pod: core_pb2.Pod) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


def exit_code(pod: core_pb2.Pod, container: str = "c") -> int:
    status = next(s for s in pod.status.container_statuses if s.name == container)
    return status.state.terminated.exit_code


def host_namespace(kind: str) -> str:
    """The node's namespace of `kind` as /proc names it (`pid:[4026531836]`): the test runs on the node."""
    return os.readlink(f"/proc/self/ns/{kind}")


def kubelet_log(node: LocalNode) -> str:
    return (node.base / "kubelet.log").read_text(errors="replace")


async def test_a_privileged_container_runs_with_privilege_and_its_sibling_without(
        client: Client, namespace: str, node: LocalNode) -> None:
    await allow_privileged_pods(client, namespace)
    # Mounting a filesystem needs CAP_SYS_ADMIN, which only a privileged container has.
    mount = ("sh", "-c", "mkdir -p /scratch && mount -t tmpfs none /scratch")
    admin = busybox("admin", "sh", "-c", "sleep 3600")
    admin.security_context.privileged = True
    plain = busybox("plain", "sh", "-c", "sleep 3600")
    await client.create(make_pod("priv", node, admin, plain, grace=0), namespace=namespace)
    await wait_pod(client, "priv", namespace, lambda p: p.status.phase == "Running", what="priv Running")

    privileged = await client.exec(namespace, "priv", list(mount), container="admin")
    assert privileged.exit_code == 0, privileged.stderr
    unprivileged = await client.exec(namespace, "priv", list(mount), container="plain")
    assert unprivileged.exit_code != 0 and b"permission denied" in unprivileged.stderr
    # All the node's devices are there for the privileged one, the default few for the other.
    devices = await client.exec(namespace, "priv", ["ls", "/dev"], container="admin")
    assert b"loop0" in devices.stdout or b"mem" in devices.stdout
    assert b"mem" not in (await client.exec(namespace, "priv", ["ls", "/dev"], container="plain")).stdout.split()


@pytest.mark.parametrize("shared", [True, False], ids=["host-namespaces", "own-namespaces"])
async def test_host_pid_ipc_and_network_put_the_pod_in_the_nodes_namespaces(
        client: Client, namespace: str, node: LocalNode, shared: bool) -> None:
    await allow_privileged_pods(client, namespace)
    me = os.getpid()
    # readlink names each namespace the container is in; /proc/<pid> of this test exists only in the node's.
    script = (f"for ns in pid ipc net; do readlink /proc/self/ns/$ns; done; "
              f"test -e /proc/{me} && cat /proc/{me}/comm || echo 'not visible'")
    pod = make_pod("ns", node, busybox("c", "sh", "-c", script + "; sleep 3600"), grace=0)
    pod.spec.host_pid = pod.spec.host_ipc = pod.spec.host_network = shared
    await client.create(pod, namespace=namespace)
    await wait_pod(client, "ns", namespace, lambda p: p.status.phase == "Running", what="ns Running")

    reply = await client.exec(namespace, "ns", ["sh", "-c", script])
    assert reply.exit_code == 0, reply.stderr
    pid_ns, ipc_ns, net_ns, seen = reply.stdout.decode().splitlines()
    host = [host_namespace("pid"), host_namespace("ipc"), host_namespace("net")]
    comm = (await asyncio.to_thread(Path(f"/proc/{me}/comm").read_text)).strip()
    if shared:
        assert [pid_ns, ipc_ns, net_ns] == host
        assert seen == comm  # the pod sees this very process of the node
    else:
        assert pid_ns != host[0] and ipc_ns != host[1] and net_ns != host[2]
        assert seen == "not visible"


async def test_a_fork_bomb_stops_at_the_pods_pids_limit_and_the_node_carries_on(
        client: Client, namespace: str, node: LocalNode) -> None:
    # The shell exits at its first refused fork; the pod then crash-loops, bombing again each time.
    bomb = busybox("c", "sh", "-c", "for i in $(seq 5000); do sleep 100 & done; sleep 3600")
    await client.create(make_pod("bomb", node, bomb, grace=0), namespace=namespace)
    pod = await wait_pod(client, "bomb", namespace, lambda p: bool(p.status.container_statuses), what="bomb started")
    config = KubeletConfig(cgroup_root=node.runtime.cgroup_root)
    path = cgroup_parent(config, pod.metadata.uid)
    cgroup = pids_cgroup(path)
    assert cgroup is not None, "this node has no pids cgroup controller"
    assert (cgroup / "pids.max").read_text().strip() == str(PODS_PIDS_LIMIT)

    peak = 0

    async def refused_forks() -> int:
        # The kernel counts a refused fork where the forking task is: the container's cgroup, below the pod's.
        nonlocal peak
        peak = max(peak, pids_current(path) or 0)
        refused = 0
        for events in cgroup.rglob("pids.events"):
            counts = dict(line.split() for line in events.read_text().splitlines())
            refused += int(counts.get("max", "0"))
        return refused
    await eventually(refused_forks, 30, interval=0.05, what="the kernel refusing the bomb's forks")
    assert 0 < peak <= PODS_PIDS_LIMIT
    # All of the node's pods together are bounded too, leaving the reserve to the node's daemons.
    node_limit = (pids_cgroup(node.runtime.cgroup_root) / "pids.max").read_text().strip()  # type: ignore[operator]
    assert node_limit == str(node_pid_capacity() - config.system_reserved_pids)

    # The node's other pods still start, fork and finish.
    worker = busybox("c", "sh", "-c", "for i in 1 2 3 4 5; do true & done; wait; echo ok")
    await client.create(make_pod("worker", node, worker, restart_policy="Never", grace=0), namespace=namespace)
    done = await wait_pod(client, "worker", namespace, finished, what="worker done")
    assert done.status.phase == "Succeeded"
    assert (pids_current(path) or 0) <= PODS_PIDS_LIMIT

    await client.delete(core_pb2.Pod, "bomb", namespace, grace_period_seconds=0)


async def test_a_container_the_runtime_cannot_create_waits_with_create_container_error(
        client: Client, namespace: str, node: LocalNode) -> None:
    await allow_privileged_pods(client, namespace)
    # A hostPath under a regular file: containerd cannot make the directory to bind, so CreateContainer fails.
    blocker = node.base / "not-a-directory"
    blocker.write_text("")
    app = busybox("c", "sleep", "3600")
    app.volume_mounts.add(name="data", mount_path="/data")
    pod = make_pod("uncreatable", node, app, grace=0)
    pod.spec.volumes.add(name="data").host_path.path = str(blocker / "data")
    await client.create(pod, namespace=namespace)

    def waiting_with(reason: str):
        return lambda p: any(s.state.waiting.reason == reason for s in p.status.container_statuses)
    waiting = await wait_pod(client, "uncreatable", namespace, waiting_with("CreateContainerError"),
                             what="CreateContainerError")
    state = waiting.status.container_statuses[0].state.waiting
    assert "not a directory" in state.message and waiting.status.phase == "Pending"
    events = await pod_events(client, "uncreatable", namespace)
    assert any(kind == "Warning" and reason == "Failed" and message.startswith("Error: ")
               and "not a directory" in message for kind, reason, message in events)
    assert "Traceback" not in kubelet_log(node)


async def test_a_container_that_cannot_start_says_why_and_backs_off(
        client: Client, namespace: str, node: LocalNode) -> None:
    await client.create(make_pod("unstartable", node, busybox("c", "/no/such/program"), grace=0),
                        namespace=namespace)

    def start_failed(pod: core_pb2.Pod) -> bool:
        return any(s.last_state.terminated.reason == "StartError" or s.state.terminated.reason == "StartError"
                   for s in pod.status.container_statuses)
    pod = await wait_pod(client, "unstartable", namespace, start_failed, what="StartError")
    status = pod.status.container_statuses[0]
    terminated = status.last_state.terminated if status.last_state.HasField("terminated") else status.state.terminated
    assert terminated.exit_code == 128 and "/no/such/program" in terminated.message
    assert status.state.waiting.reason in ("RunContainerError", "CrashLoopBackOff")
    events = await pod_events(client, "unstartable", namespace)
    assert any(reason == "Failed" and "/no/such/program" in message for _, reason, message in events)
    assert "Traceback" not in kubelet_log(node)


def test_the_kubelet_bounds_every_pod_by_default() -> None:
    config = KubeletConfig()
    assert config.pod_pids_limit == 4096 and config.system_reserved_pids == 1000
