"""The kubelet runs pods: given a node with containerd, when a pod is bound to it, then it runs.

Real etcd, apiserver, containerd, runc and CNI plugins; the kubelet in its own
process. Pods are bound straight to the test node (no scheduler needed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

from client import Client
from proto import coordination_pb2, core_pb2
from provision.localnode import LocalNode
from tests.kubelet_support import busybox, eventually, get_pod, is_ready, make_pod, node, pod_events, wait_pod

__all__ = ["node"]  # the module-scoped fixture, imported so pytest finds it here



async def wait_node_ready(client: Client, local: LocalNode) -> core_pb2.Node:
    async def check() -> core_pb2.Node | None:
        try:
            found = await client.get(core_pb2.Node, local.name)
        except Exception:
            return None
        ready = any(c.type == "Ready" and c.status == "True" for c in found.status.conditions)
        return found if ready else None
    return await eventually(check, 30, what=f"node {local.name} Ready")


async def test_node_registers_ready_with_lease(client: Client, node: LocalNode) -> None:
    found = await wait_node_ready(client, node)
    assert found.status.capacity["pods"] == "110"
    assert found.status.allocatable["cpu"]
    assert found.metadata.labels["kubernetes.io/hostname"] == node.name
    # A kubelet never labels its own role (node restriction would refuse it): the admin does, at `cluster up`.
    assert not any(k.startswith("node-role.kubernetes.io/") for k in found.metadata.labels)
    assert [(a.type, a.address) for a in found.status.addresses if a.type == "InternalIP"] == [
        ("InternalIP", "127.0.0.1")]
    assert found.status.node_info.container_runtime_version.startswith("containerd://")
    assert found.status.daemon_endpoints.kubelet_endpoint.port > 0
    assert {c.type for c in found.status.conditions} >= {"Ready", "MemoryPressure", "DiskPressure", "PIDPressure"}
    lease = await client.get(coordination_pb2.Lease, node.name, "kube-node-lease")
    assert lease.spec.holder_identity == node.name
    renewed = lease.spec.renew_time.ToNanoseconds()

    async def renewed_again() -> bool:
        again = await client.get(coordination_pb2.Lease, node.name, "kube-node-lease")
        return again.spec.renew_time.ToNanoseconds() > renewed
    await eventually(renewed_again, 10, what="the lease renewed")  # every 2 s in these tests


async def test_pod_serves_http_on_its_pod_ip(client: Client, namespace: str, node: LocalNode) -> None:
    web = busybox("web", "httpd", "-f", "-v", "-p", "8080", "-h", "/var/www")
    web.ports.add(container_port=8080, name="http")
    # Ready once httpd accepts connections (a tcpSocket probe on the named port).
    web.readiness_probe.tcp_socket.port = "http"
    web.readiness_probe.period_seconds = 1
    web.liveness_probe.http_get.path = "/index.html"
    web.liveness_probe.http_get.port = "8080"
    web.liveness_probe.period_seconds = 1
    await client.create(make_pod("web", node, web), namespace=namespace)
    pod = await wait_pod(client, "web", namespace, lambda p: p.status.phase == "Running" and is_ready(p),
                         what="web Running and Ready")
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(node.pod_cidr)
    assert pod.status.host_ip == "127.0.0.1"
    assert pod.status.HasField("start_time")
    status = pod.status.container_statuses[0]
    assert status.state.HasField("running") and status.ready and status.restart_count == 0
    assert status.container_id.startswith("containerd://")
    # From the host to the pod IP, through the node's CNI bridge. (busybox wget -T crashes: use timeout.)
    done = await asyncio.to_thread(
        subprocess.run, ["busybox", "timeout", "5", "wget", "-qO-", f"http://{pod.status.pod_ip}:8080/"],
        capture_output=True, text=True)
    assert done.stdout == "hello from flotilla\n", done.stderr
    await asyncio.sleep(2.5)  # a few httpGet liveness probes pass: no restart
    pod = await wait_pod(client, "web", namespace, is_ready)
    assert pod.status.container_statuses[0].restart_count == 0
    await client.delete(core_pb2.Pod, "web", namespace, grace_period_seconds=1)
    await eventually(lambda: _gone(client, "web", namespace), 20, what="web deleted")


async def _gone(client: Client, name: str, namespace: str) -> bool:
    return await get_pod(client, name, namespace) is None


async def test_exit_1_under_always_crash_loops_with_back_off(client: Client, namespace: str,
                                                             node: LocalNode) -> None:
    await client.create(make_pod("crash", node, busybox("c", "sh", "-c", "echo dying; exit 1")), namespace=namespace)
    seen_backoff = False
    counts: list[int] = []

    async def check() -> bool:
        nonlocal seen_backoff
        pod = await get_pod(client, "crash", namespace)
        if pod is None or not pod.status.container_statuses:
            return False
        status = pod.status.container_statuses[0]
        if status.state.waiting.reason == "CrashLoopBackOff":
            seen_backoff = True
            assert status.last_state.terminated.exit_code == 1
            assert pod.status.phase == "Running"
        counts.append(status.restart_count)
        return seen_backoff and status.restart_count >= 3
    # Back-off 1 s, 2 s, 4 s (config): three restarts take about 7 s.
    await eventually(check, 40, what="three restarts with CrashLoopBackOff")
    assert counts == sorted(counts)


async def test_exit_under_never_ends_failed_with_the_exit_code(client: Client, namespace: str,
                                                                node: LocalNode) -> None:
    pod = make_pod("once", node, busybox("c", "sh", "-c", "exit 3"), restart_policy="Never")
    await client.create(pod, namespace=namespace)
    done = await wait_pod(client, "once", namespace, lambda p: p.status.phase == "Failed", what="once Failed")
    terminated = done.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3 and terminated.reason == "Error"
    assert done.status.container_statuses[0].restart_count == 0
    ok = make_pod("ok", node, busybox("c", "true"), restart_policy="OnFailure")
    await client.create(ok, namespace=namespace)
    done = await wait_pod(client, "ok", namespace, lambda p: p.status.phase == "Succeeded", what="ok Succeeded")
    assert done.status.container_statuses[0].state.terminated.reason == "Completed"


async def test_memory_limit_ends_oomkilled(client: Client, namespace: str, node: LocalNode) -> None:
    hog = busybox("hog", "sh", "-c", "x=0123456789; while true; do x=$x$x; done")
    hog.resources.limits["memory"] = "32Mi"
    await client.create(make_pod("hog", node, hog, restart_policy="Never"), namespace=namespace)
    done = await wait_pod(client, "hog", namespace, lambda p: p.status.phase == "Failed", what="hog Failed")
    terminated = done.status.container_statuses[0].state.terminated
    assert terminated.reason == "OOMKilled" and terminated.exit_code == 137


def kctl(server: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in its own process, as a user runs it."""
    binary = Path(sys.executable).parent / "kctl"
    return subprocess.run([str(binary), "-s", server, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KCTL_CONFIG": "/nonexistent"})


async def test_kctl_logs_and_exec_through_the_apiserver(client: Client, namespace: str, node: LocalNode) -> None:
    talk = busybox("talk", "sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.3; done; echo bye >&2; sleep 1")
    await client.create(make_pod("talk", node, talk, restart_policy="Never"), namespace=namespace)
    await wait_pod(client, "talk", namespace, lambda p: p.status.phase in ("Running", "Succeeded"))
    server = client.server
    # -f streams until the container exits, then kctl returns.
    followed = await asyncio.to_thread(kctl, server, "-n", namespace, "logs", "-f", "talk")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "line 1\nline 2\nline 3\nbye\n"
    tail = await asyncio.to_thread(kctl, server, "-n", namespace, "logs", "pod/talk", "--tail", "1")
    assert tail.stdout == "bye\n"

    web = busybox("web", "sh", "-c", "sleep 3600")
    await client.create(make_pod("shell", node, web, grace=1), namespace=namespace)
    await wait_pod(client, "shell", namespace, lambda p: p.status.phase == "Running")
    done = await asyncio.to_thread(kctl, server, "-n", namespace, "exec", "shell", "--", "sh", "-c",
                                   "echo $HOSTNAME; echo oops >&2; exit 4")
    assert (done.returncode, done.stdout) == (4, "shell\n")
    assert "oops" in done.stderr and "command terminated with exit code 4" in done.stderr
    missing = await asyncio.to_thread(kctl, server, "-n", namespace, "exec", "shell", "-c", "nope", "--", "true")
    assert missing.returncode == 1 and "nope" in missing.stderr


async def test_logs_previous_shows_the_crashed_instance(client: Client, namespace: str, node: LocalNode) -> None:
    c = busybox("c", "sh", "-c", "echo run at $(date +%s%N); exit 1")
    await client.create(make_pod("prev", node, c, grace=1), namespace=namespace)
    await wait_pod(client, "prev", namespace,
                   lambda p: bool(p.status.container_statuses) and p.status.container_statuses[0].restart_count >= 1)
    previous = b"".join([d async for d in client.logs(namespace, "prev", previous=True)])
    assert previous.startswith(b"run at ")


async def test_init_container_fills_an_empty_dir_then_resources_apply(client: Client, namespace: str,
                                                                     node: LocalNode) -> None:
    init = busybox("fill", "sh", "-c", "echo prepared > /work/state")
    init.volume_mounts.add(name="work", mount_path="/work")
    app = busybox("app", "sh", "-c", "sleep 3600")
    app.volume_mounts.add(name="work", mount_path="/data")
    app.resources.requests["cpu"] = "250m"
    app.resources.limits["cpu"] = "500m"
    app.resources.limits["memory"] = "64Mi"
    env = app.env.add(name="GREETING", value="hi")
    env = app.env.add(name="MY_POD")
    env.value_from.field_ref.field_path = "metadata.name"
    pod = make_pod("init", node, app, grace=1)
    pod.spec.init_containers.append(init)
    pod.spec.volumes.add(name="work").empty_dir.SetInParent()
    await client.create(pod, namespace=namespace)
    ran = await wait_pod(client, "init", namespace, lambda p: p.status.phase == "Running", what="init Running")
    assert ran.status.init_container_statuses[0].state.terminated.reason == "Completed"
    assert any(c.type == "Initialized" and c.status == "True" for c in ran.status.conditions)
    cgroup = "/sys/fs/cgroup"
    script = (f"cat /data/state; echo $GREETING $MY_POD; cat {cgroup}/cpu/cpu.shares "
              f"{cgroup}/cpu/cpu.cfs_quota_us {cgroup}/memory/memory.limit_in_bytes")
    reply = await client.exec(namespace, "init", ["sh", "-c", script])
    assert reply.stdout.decode().split("\n")[:5] == ["prepared", "hi init", "256", "50000", str(64 * 1024 * 1024)]


async def test_missing_image_shows_err_image_pull(client: Client, namespace: str, node: LocalNode) -> None:
    bad = core_pb2.Container(name="c", image="127.0.0.1:9/nothing/here:1", image_pull_policy="IfNotPresent")
    await client.create(make_pod("noimage", node, bad, grace=1), namespace=namespace)
    pod = await wait_pod(client, "noimage", namespace, lambda p: bool(p.status.container_statuses) and
                         p.status.container_statuses[0].state.waiting.reason in ("ErrImagePull", "ImagePullBackOff"),
                         what="ErrImagePull")
    assert pod.status.phase == "Pending"


async def test_config_map_as_files_and_environment(client: Client, namespace: str, node: LocalNode) -> None:
    config = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    config.metadata.name = "settings"
    config.data.update({"mode": "fast", "motd.txt": "welcome\n"})
    await client.create(config, namespace=namespace)
    app = busybox("app", "sh", "-c", "sleep 3600")
    app.volume_mounts.add(name="conf", mount_path="/etc/app")
    var = app.env.add(name="MODE")
    var.value_from.config_map_key_ref.name = "settings"
    var.value_from.config_map_key_ref.key = "mode"
    pod = make_pod("configured", node, app, grace=1)
    pod.spec.volumes.add(name="conf").config_map.name = "settings"
    await client.create(pod, namespace=namespace)
    await wait_pod(client, "configured", namespace, lambda p: p.status.phase == "Running")
    reply = await client.exec(namespace, "configured", ["sh", "-c", "cat /etc/app/motd.txt; echo $MODE"])
    assert reply.stdout == b"welcome\nfast\n"


async def test_a_command_that_cannot_start_fails_the_pod(client: Client, namespace: str, node: LocalNode) -> None:
    pod = make_pod("nocmd", node, busybox("c", "/no/such/binary"), restart_policy="Never")
    await client.create(pod, namespace=namespace)
    done = await wait_pod(client, "nocmd", namespace, lambda p: p.status.phase == "Failed", what="nocmd Failed")
    terminated = done.status.container_statuses[0].state.terminated
    assert terminated.exit_code != 0 and terminated.reason


async def test_image_events_read_as_kubernetes_writes_them(client: Client, namespace: str, node: LocalNode) -> None:
    # `kubectl describe pod` users know these lines: Pulling / Successfully pulled ..., or already present.
    await client.create(make_pod("events", node, busybox("main", "sleep", "3600")), namespace=namespace)
    await wait_pod(client, "events", namespace, lambda p: p.status.phase == "Running", what="events Running")
    image = (await client.get(core_pb2.Pod, "events", namespace)).spec.containers[0].image
    events = await pod_events(client, "events", namespace)
    pulled = [m for _, reason, m in events if reason == "Pulled"]
    assert pulled, events
    if pulled[0].startswith("Successfully pulled"):
        assert pulled[0].startswith(f'Successfully pulled image "{image}" in ') and "including waiting" in pulled[0]
        assert ("Normal", "Pulling", f'Pulling image "{image}"') in events
    else:
        assert pulled[0] == f'Container image "{image}" already present on machine'


async def test_the_node_lease_belongs_to_the_node(client: Client, node: LocalNode) -> None:
    # Deleting a Node must let the garbage collector take its heartbeat Lease too.
    registered = await client.get(core_pb2.Node, node.name)
    lease = await client.get(coordination_pb2.Lease, node.name, "kube-node-lease")
    assert [(r.kind, r.name, r.uid) for r in lease.metadata.owner_references] == [
        ("Node", node.name, registered.metadata.uid)]
