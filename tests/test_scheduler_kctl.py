"""kctl cordon, uncordon, taint and drain, as an operator uses them before maintenance.

Given hollow nodes and pods placed on them, the commands run in-process
(CliRunner) against the session's apiserver and print what kubectl prints.
Setup and checks use the typed client on a private event loop, as these tests
are synchronous (kctl runs its own loop). drain is also run as a user holding
only kubectl's drain rights, against an apiserver that authorises with RBAC:
the apiserver evicts, so the user needs no rights on budgets or pod status.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from click.testing import CliRunner, Result

from bench import hollow
from client import Client, certificates
from kctl.main import cli
from proto import core_pb2, manifest, policy_pb2
from proto.errors import Forbidden, NotFound, TooManyRequests
from provision.processes import ApiServer, Etcd, free_port, start_apiserver

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


# ---------------------------------------------------------------- drain with kubectl's rights only

VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."
# What kubectl drain needs (its docs' drain role), and no more: nothing on budgets or pods/status.
DRAIN_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    # kubectl patches the node to cordon it; kctl, over gRPC (no patch call), reads and updates it.
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch", "update"]},
]


@dataclass
class RbacServer:
    """An apiserver authorising with RBAC on an mTLS port, over the session's etcd.

    It shares the session apiserver's etcd, so what the (loopback admin) session
    apiserver writes, this one serves: setup stays with the admin, the user under
    test comes here.
    """

    address: str
    ca: certificates.KeyPair

    def client_as(self, user: str) -> Client:
        cert = certificates.create_client_cert(self.ca, user)
        return Client(self.address, credentials=grpc.ssl_channel_credentials(self.ca.cert_pem, cert.key_pem,
                                                                             cert.cert_pem), timeout=10)

    def kubeconfig(self, user: str, folder: Path) -> Path:
        path = folder / f"{user}.kubeconfig"
        path.write_text(certificates.kubeconfig("rbac", self.address, self.ca.cert_pem, user,
                                                certificates.create_client_cert(self.ca, user)))
        return path


@pytest.fixture(scope="module")
def rbac_apiserver(etcd: Etcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RbacServer]:
    folder: Path = tmp_path_factory.mktemp("rbac-pki")
    ca = certificates.create_ca()
    ca_crt, _ = ca.write(folder, "ca")
    crt, key = certificates.create_serving_cert(ca, "flotilla-apiserver", ["127.0.0.1"]).write(folder, "apiserver")
    secure = f"127.0.0.1:{free_port()}"
    server = start_apiserver(etcd.url, folder, extra=[
        "--secure-listen", secure, "--tls-cert-file", str(crt), "--tls-private-key-file", str(key),
        "--client-ca-file", str(ca_crt), "--authorization-mode", "RBAC"])
    yield RbacServer(secure, ca)
    server.process.stop()


async def _running_under_budget(c: Client, name: str, namespace: str, node: str, *, allowed: int) -> None:
    """A Ready pod (app=NAME) on `node` and a budget over it whose status allows `allowed` disruptions.

    The status is written as the disruption controller would (no controller runs here).
    """
    pod = _pod(name, namespace, node, owner="ReplicaSet")
    pod.metadata.labels["app"] = name
    pod = await c.create(pod)
    pod.status.phase = "Running"
    pod.status.conditions.add(type="Ready", status="True")
    await c.update_status(pod)
    pdb = await c.create(manifest.from_dict({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name, "namespace": namespace},
        "spec": {"minAvailable": 1 - allowed, "selector": {"matchLabels": {"app": name}}}}))
    assert isinstance(pdb, policy_pb2.PodDisruptionBudget)
    status = pdb.status
    status.observed_generation = pdb.metadata.generation
    status.expected_pods = status.current_healthy = 1
    status.desired_healthy, status.disruptions_allowed = 1 - allowed, allowed
    await c.update_status(pdb)


def test_drain_needs_only_kubectls_drain_rights(node: str, apiserver: ApiServer, rbac_apiserver: RbacServer,
                                                tmp_path: Path) -> None:
    ns, user = f"kr-{uuid.uuid4().hex[:8]}", f"drainer-{uuid.uuid4().hex[:8]}"

    async def setup(c: Client) -> None:
        namespace = core_pb2.Namespace(api_version="v1", kind="Namespace")
        namespace.metadata.name = ns
        await c.create(namespace)
        await c.create(manifest.from_dict({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                                           "metadata": {"name": user}, "rules": DRAIN_RULES}))
        await c.create(manifest.from_dict({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}))
        await _running_under_budget(c, "web", ns, node, allowed=1)  # on the node: drain takes it
        await _running_under_budget(c, "db", ns, f"{node}-elsewhere", allowed=0)  # elsewhere, its budget spent

    api(apiserver, setup)

    async def as_drainer() -> None:
        async with rbac_apiserver.client_as(user) as drainer:
            for _ in range(100):  # the binding reaches the authoriser through its watch
                if (await drainer.review_access("create", "pods/eviction", ns)).allowed:
                    break
                await asyncio.sleep(0.05)
            # The premise: this user could not run the eviction's steps itself.
            web = await drainer.get(core_pb2.Pod, "web", ns)
            with pytest.raises(Forbidden):
                await drainer.update_status(web)
            with pytest.raises(Forbidden):
                await drainer.delete(core_pb2.Pod, "web", ns)
            with pytest.raises(Forbidden):
                await drainer.list(policy_pb2.PodDisruptionBudget, ns)
            # A budget with no disruption left refuses the eviction over gRPC with Kubernetes' 429 and message.
            with pytest.raises(TooManyRequests) as refused:
                await drainer.evict(ns, "db")
            assert str(refused.value) == VIOLATION
            assert not (await drainer.get(core_pb2.Pod, "db", ns)).metadata.HasField("deletion_timestamp")

    asyncio.run(as_drainer())
    drained = CliRunner().invoke(cli, ["--kubeconfig", str(rbac_apiserver.kubeconfig(user, tmp_path)), "drain", node,
                                       "--grace-period", "0", "--timeout", "20"])
    assert drained.exit_code == 0, drained.output
    assert drained.stdout.splitlines() == [f"node/{node} cordoned", f"evicting pod {ns}/web", "pod/web evicted",
                                           f"node/{node} drained"]
    assert get_node(apiserver, node).spec.unschedulable

    async def after(c: Client) -> tuple[list[str], policy_pb2.PodDisruptionBudget]:
        return ([p.metadata.name for p in (await c.list(core_pb2.Pod, ns)).items],
                await c.get(policy_pb2.PodDisruptionBudget, "web", ns))
    left, web_budget = api(apiserver, after)
    assert left == ["db"]
    # The apiserver spent the budget for the user: one disruption fewer, the pod among those disrupted.
    assert web_budget.status.disruptions_allowed == 0
    assert list(web_budget.status.disrupted_pods) == ["web"]
