"""kctl's workload verbs against a live controller manager, as a user types them.

Given hollow nodes: `create deployment`, `rollout status`, `scale`, `set image`,
`rollout history|undo|pause|resume|restart`, `expose`, `autoscale`, `run` and
`top` print what kubectl prints, and the cluster does what they asked.
(kctl runs its own event loop, so each command runs in a worker thread.)
"""

from __future__ import annotations

import asyncio

from click.testing import CliRunner, Result

from bench.hollow_kubelet import HollowCluster
from client import Client
from kctl.main import cli
from proto import apps_pb2, autoscaling_pb2, core_pb2, metrics_pb2
from provision.processes import ApiServer
from tests.controllers_support import (  # noqa: F401 - fixtures
    controller_manager_fixture,
    eventually,
    hollow_fixture,
    live_pods,
    ready,
)


async def kctl(apiserver: ApiServer, namespace: str, *args: str) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, cli, ["-s", apiserver.address, "-n", namespace, *args],
                                   env={"KCTL_CONFIG": "/nonexistent"})


async def ok(apiserver: ApiServer, namespace: str, *args: str) -> str:
    result = await kctl(apiserver, namespace, *args)
    assert result.exit_code == 0, f"kctl {' '.join(args)}: {result.output}"
    return result.stdout


async def images(client: Client, namespace: str) -> set[str]:
    return {p.spec.containers[0].image for p in await live_pods(client, namespace, "app=web")}


async def test_kctl_drives_a_deployment_through_its_life(client: Client, namespace: str, hollow: HollowCluster,
                                                         apiserver: ApiServer) -> None:
    def run(*args: str) -> asyncio.Future[str]:
        return asyncio.ensure_future(ok(apiserver, namespace, *args))

    assert await run("create", "deployment", "web", "--image=nginx:1.25", "--replicas=2", "--port=80") == \
        "deployment.apps/web created\n"
    out = await run("rollout", "status", "deployment/web", "--timeout", "20")
    assert out.splitlines()[-1] == 'deployment "web" successfully rolled out'
    assert await run("scale", "deployment", "web", "--replicas=3") == "deployment.apps/web scaled\n"
    assert await run("set", "image", "deployment/web", "nginx=nginx:1.26") == "deployment.apps/web image updated\n"
    await run("rollout", "status", "deploy/web", "--timeout", "20")

    async def only(image: str) -> bool:
        pods = await live_pods(client, namespace, "app=web")
        return len(pods) == 3 and all(ready(p) for p in pods) and await images(client, namespace) == {image}

    await eventually(lambda: only("nginx:1.26"), "3 pods on nginx:1.26")
    history = await run("rollout", "history", "deployment/web")
    assert history.splitlines()[0].strip() == "deployment.apps/web"
    assert [line.split()[0] for line in history.splitlines()[2:]] == ["1", "2"]
    assert await run("rollout", "undo", "deployment/web") == "deployment.apps/web rolled back\n"
    await eventually(lambda: only("nginx:1.25"), "3 pods back on nginx:1.25")

    assert await run("rollout", "pause", "deployment/web") == "deployment.apps/web paused\n"
    assert (await kctl(apiserver, namespace, "rollout", "pause", "deployment/web")).exit_code == 1
    assert await run("rollout", "resume", "deployment/web") == "deployment.apps/web resumed\n"
    assert await run("rollout", "restart", "deployment/web") == "deployment.apps/web restarted\n"
    await run("rollout", "status", "deployment/web", "--timeout", "20")
    d = await client.get(apps_pb2.Deployment, "web", namespace)
    assert "kubectl.kubernetes.io/restartedAt" in d.spec.template.metadata.annotations

    assert await run("expose", "deployment", "web", "--port=80", "--type=NodePort") == "service/web exposed\n"
    svc = await client.get(core_pb2.Service, "web", namespace)
    assert svc.spec.selector["app"] == "web" and svc.spec.cluster_ip.startswith("10.")
    assert 30000 <= svc.spec.ports[0].node_port <= 32767

    assert await run("autoscale", "deployment", "web", "--min=1", "--max=5", "--cpu-percent=60") == \
        "horizontalpodautoscaler.autoscaling/web autoscaled\n"
    hpa = await client.get(autoscaling_pb2.HorizontalPodAutoscaler, "web", namespace)
    assert hpa.spec.max_replicas == 5 and hpa.spec.metrics[0].resource.target.average_utilization == 60

    assert await run("run", "bare", "--image=busybox", "--port=8080") == "pod/bare created\n"
    bare = await client.get(core_pb2.Pod, "bare", namespace)
    assert dict(bare.metadata.labels) == {"run": "bare"} and not bare.metadata.owner_references

    for pod in await live_pods(client, namespace, "app=web"):
        m = metrics_pb2.PodMetrics(api_version="metrics.k8s.io/v1beta1", kind="PodMetrics")
        m.metadata.name, m.metadata.namespace = pod.metadata.name, namespace
        m.containers.add(name="nginx", usage={"cpu": "250m", "memory": "64Mi"})
        await client.create(m)
    top = await run("top", "pods")
    assert top.split("\n")[0].split() == ["POD", "CPU(cores)", "MEMORY(bytes)"]
    assert all(line.split()[1:] == ["250m", "64Mi"] for line in top.strip().split("\n")[1:])
    node = metrics_pb2.NodeMetrics(api_version="metrics.k8s.io/v1beta1", kind="NodeMetrics")
    node.metadata.name = hollow.node_names[0]
    node.usage.update({"cpu": "16", "memory": "64Gi"})
    await client.create(node)
    top_nodes = await run("top", "nodes")
    row = next(line.split() for line in top_nodes.split("\n") if line.startswith(hollow.node_names[0]))
    assert row[1:] == ["16000m", "25%", "65536Mi", "25%"]
