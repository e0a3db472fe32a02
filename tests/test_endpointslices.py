"""discovery.k8s.io/v1 EndpointSlices, as a user (and a proxy) sees them.

Given a controller manager running the endpointslice controller and hollow
nodes that bind pods and make them Ready through the status subresource: a
Service over 250 ready pods gets 3 slices of 100, 100 and 50 endpoints, each
with the Service's ports resolved per pod, ready/serving conditions, the pod as
targetRef and its node; scaling down empties endpoints out of the slices they
were in without new slices; deleting the Service deletes its slices. With
pods whose status the test writes itself: a pod turning unready flips its
conditions, a terminating one stays listed as terminating (serving, not ready),
a pod without the named target port lands in a slice of its own ports, and a
Service losing its selector loses its slices. Bad slices are refused with
Kubernetes' messages, and real kubectl lists slices and shows a Service's
endpoints in `describe` (kubectl 1.32 reads them from slices) over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.hollow_kubelet import HollowCluster
from client import Client
from client.retry import update_fresh
from controlplane.apiserver.auth import Attributes, UserInfo
from controlplane.apiserver.rbac import RBACAuthorizer, default_cluster_role_bindings, default_cluster_roles
from controlplane.controllers import endpointslice as es
from kctl.main import cli
from proto import core_pb2, discovery_pb2, manifest, rbac_pb2
from proto.errors import Invalid
from proto.wellknown import ENDPOINTSLICE_CONTROLLER_NAME, LABEL_MANAGED_BY, LABEL_SERVICE_NAME
from provision.processes import ApiServer, Process
from tests.controllers_support import TEST_FLAGS, ControllerManager, eventually, mutate, ready
from tests.controllers_support import hollow_fixture as hollow_fixture
from tests.kubectl_support import kubectl

UNREADY_IMAGE = "hold/unready:1"  # the hollow kubelets never run these pods: the test writes their status
HOLD = "flotilla.dev/test-hold"  # a finalizer keeping a deleted pod terminating


class SliceControllerManager(ControllerManager):
    """Only the endpointslice controller: nothing else writes these tests' objects."""

    def start(self) -> Process:
        self._n += 1
        argv = [sys.executable, "-m", "controlplane.controllers.main", "--server", self.server, *TEST_FLAGS,
                "--controllers", "endpointslice"]
        self.process = Process(f"controller-manager-{self._n}", argv,
                               self.log_dir / f"controller-manager-{self._n}.log")
        self.process.start()
        return self.process


@pytest.fixture(scope="module", name="controller_manager")
def controller_manager_fixture(apiserver: ApiServer,
                               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerManager]:
    cm = SliceControllerManager(apiserver.address, tmp_path_factory.mktemp("controller-manager"))
    cm.start()
    yield cm
    cm.stop()


# ---------------------------------------------------------------- builders and waits


def service(name: str, namespace: str, *, app: str = "") -> core_pb2.Service:
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = name, namespace
    svc.metadata.labels["tier"] = "web"
    svc.spec.selector["app"] = app or name
    svc.spec.ports.add(name="http", port=80, target_port="http")
    svc.spec.ports.add(name="metrics", port=9090, target_port="9090")
    return svc


def pod(name: str, namespace: str, app: str, *, image: str = "nginx:1.25", named_port: bool = True) -> core_pb2.Pod:
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    p.metadata.name, p.metadata.namespace = name, namespace
    p.metadata.labels["app"] = app
    c = p.spec.containers.add(name="app", image=image)
    if named_port:
        c.ports.add(name="http", container_port=8080)
    return p


async def create_all(client: Client, objs: list[core_pb2.Pod]) -> None:
    gate = asyncio.Semaphore(25)

    async def one(obj: core_pb2.Pod) -> None:
        async with gate:
            await client.create(obj)

    await asyncio.gather(*(one(o) for o in objs))


async def slices_of(client: Client, namespace: str, svc: str) -> list[discovery_pb2.EndpointSlice]:
    return list((await client.list(discovery_pb2.EndpointSlice, namespace,
                                   label_selector=f"{LABEL_SERVICE_NAME}={svc}")).items)


async def wait_slices(client: Client, namespace: str, svc: str,
                      check: Callable[[list[discovery_pb2.EndpointSlice]], bool], what: str,
                      timeout: float = 60.0) -> list[discovery_pb2.EndpointSlice]:
    async def done() -> list[discovery_pb2.EndpointSlice] | None:
        found = await slices_of(client, namespace, svc)
        return found if check(found) else None

    return await eventually(done, what, timeout)


async def wait_no_slices(client: Client, namespace: str, svc: str, what: str) -> None:
    async def gone() -> bool:
        return not await slices_of(client, namespace, svc)

    await eventually(gone, what)


def endpoints_of(slices: list[discovery_pb2.EndpointSlice]) -> dict[str, discovery_pb2.Endpoint]:
    """Every endpoint by its pod's name."""
    return {ep.target_ref.name: ep for s in slices for ep in s.endpoints}


def conditions(ep: discovery_pb2.Endpoint) -> tuple[bool, bool, bool]:
    return ep.conditions.ready, ep.conditions.serving, ep.conditions.terminating


async def set_running(client: Client, namespace: str, name: str, ip: str, *, ready: bool) -> None:
    """Write the pod's status as its kubelet would: Running with an IP, Ready or not."""
    def change(p: core_pb2.Pod) -> None:
        p.status.phase = "Running"
        p.status.pod_ip = ip
        del p.status.pod_ips[:]
        p.status.pod_ips.add(ip=ip)
        del p.status.conditions[:]
        p.status.conditions.add(type="Ready", status="True" if ready else "False")

    await update_fresh(client, core_pb2.Pod, name, namespace, change, status=True, attempts=20)


# ---------------------------------------------------------------- the controller


async def test_a_service_over_250_ready_pods_gets_3_slices_that_follow_scaling_and_deletion(
        client: Client, namespace: str, hollow: HollowCluster) -> None:
    # The pods first, so the Service's first sync sees them all: slices filled one after another.
    # (Pods turning ready one by one fill slices as they come, without rebalancing, as in Kubernetes.)
    await create_all(client, [pod(f"web-{i:03}", namespace, "web") for i in range(250)])

    async def all_ready() -> bool:
        return sum(ready(p) for p in (await client.list(core_pb2.Pod, namespace)).items) == 250

    await eventually(all_ready, "250 ready pods", timeout=90)
    await client.create(service("web", namespace))

    def filled(found: list[discovery_pb2.EndpointSlice]) -> bool:
        eps = endpoints_of(found)
        return len(eps) == 250 and all(ep.conditions.ready for ep in eps.values())

    slices = await wait_slices(client, namespace, "web", filled, "250 ready endpoints", timeout=90)
    assert sorted(len(s.endpoints) for s in slices) == [50, 100, 100]
    svc = await client.get(core_pb2.Service, "web", namespace)
    pods = {p.metadata.name: p for p in (await client.list(core_pb2.Pod, namespace)).items}
    for s in slices:
        assert s.metadata.name.startswith("web-") and s.address_type == "IPv4"
        assert dict(s.metadata.labels) == {"tier": "web", LABEL_SERVICE_NAME: "web",
                                           LABEL_MANAGED_BY: ENDPOINTSLICE_CONTROLLER_NAME}
        [owner] = s.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid, owner.controller) == ("Service", "web", svc.metadata.uid, True)
        # The named target port resolved against the pods' container port; the number as it is.
        assert [(p.name, p.protocol, p.port) for p in s.ports] == [("http", "TCP", 8080), ("metrics", "TCP", 9090)]
        for ep in s.endpoints:
            p = pods[ep.target_ref.name]
            assert list(ep.addresses) == [p.status.pod_ip]
            assert conditions(ep) == (True, True, False)
            assert (ep.target_ref.kind, ep.target_ref.uid) == ("Pod", p.metadata.uid)
            assert ep.node_name == p.spec.node_name and ep.node_name in hollow.node_names
    before = {s.metadata.name for s in slices}

    # Scale down by 80: the endpoints leave the slices they were in; no slice is made for it.
    await asyncio.gather(*(client.delete(core_pb2.Pod, f"web-{i:03}", namespace) for i in range(0, 160, 2)))
    slices = await wait_slices(client, namespace, "web", lambda found: len(endpoints_of(found)) == 170,
                               "170 endpoints after scaling down")
    assert {s.metadata.name for s in slices} <= before
    assert all(len(s.endpoints) <= 100 for s in slices)
    assert not {f"web-{i:03}" for i in range(0, 160, 2)} & set(endpoints_of(slices))

    await client.delete(core_pb2.Service, "web", namespace)
    await wait_no_slices(client, namespace, "web", "the slices gone with the Service")


async def test_conditions_follow_readiness_and_termination(client: Client, namespace: str,
                                                           hollow: HollowCluster) -> None:
    hollow.unready_images.add(UNREADY_IMAGE)
    await client.create(service("api", namespace))
    held = pod("api-2", namespace, "api", image=UNREADY_IMAGE)
    held.metadata.finalizers.append(HOLD)
    await create_all(client, [pod("api-0", namespace, "api", image=UNREADY_IMAGE),
                              pod("api-1", namespace, "api", image=UNREADY_IMAGE), held])
    for i in range(3):
        await set_running(client, namespace, f"api-{i}", f"10.244.9.{i + 2}", ready=True)
    await wait_slices(client, namespace, "api", lambda found: len(endpoints_of(found)) == 3, "3 endpoints")

    # A pod failing its readiness probe is neither ready nor serving, but still listed.
    await set_running(client, namespace, "api-0", "10.244.9.2", ready=False)
    slices = await wait_slices(client, namespace, "api",
                               lambda found: conditions(endpoints_of(found)["api-0"]) == (False, False, False),
                               "api-0 unready")
    assert conditions(endpoints_of(slices)["api-1"]) == (True, True, False)
    await set_running(client, namespace, "api-0", "10.244.9.2", ready=True)
    await wait_slices(client, namespace, "api",
                      lambda found: conditions(endpoints_of(found)["api-0"]) == (True, True, False), "api-0 ready")

    # A terminating pod still serves (so proxies may drain to it) but is no longer ready.
    await client.delete(core_pb2.Pod, "api-2", namespace)
    slices = await wait_slices(client, namespace, "api",
                               lambda found: conditions(endpoints_of(found)["api-2"]) == (False, True, True),
                               "api-2 terminating")
    assert len(slices) == 1 and len(slices[0].endpoints) == 3

    def release(p: core_pb2.Pod) -> None:
        p.metadata.finalizers.remove(HOLD)

    await mutate(client, core_pb2.Pod, "api-2", namespace, release)
    await wait_slices(client, namespace, "api", lambda found: set(endpoints_of(found)) == {"api-0", "api-1"},
                      "api-2 gone")


async def test_ports_resolve_per_pod_and_a_service_without_selector_loses_its_slices(
        client: Client, namespace: str, hollow: HollowCluster) -> None:
    await client.create(service("mixed", namespace))
    # Until a pod is there, one empty placeholder slice says "no endpoints".
    [placeholder] = await wait_slices(client, namespace, "mixed", lambda found: len(found) == 1, "a placeholder")
    assert not placeholder.endpoints and not placeholder.ports
    await create_all(client, [pod("mixed-named", namespace, "mixed"),
                              pod("mixed-plain", namespace, "mixed", named_port=False)])

    def by_ports(found: list[discovery_pb2.EndpointSlice]) -> dict[tuple[int, ...], list[str]]:
        return {tuple(p.port for p in s.ports): [ep.target_ref.name for ep in s.endpoints] for s in found}

    slices = await wait_slices(client, namespace, "mixed", lambda found: by_ports(found) == {
        (8080, 9090): ["mixed-named"], (9090,): ["mixed-plain"]}, "one slice per port set")
    # The placeholder was rewritten rather than deleted and another created.
    assert placeholder.metadata.name in {s.metadata.name for s in slices}

    def drop_selector(svc: core_pb2.Service) -> None:
        svc.spec.selector.clear()

    await mutate(client, core_pb2.Service, "mixed", namespace, drop_selector)
    await wait_no_slices(client, namespace, "mixed", "no slices without a selector")


def test_the_reconciler_fills_unchanged_slices_before_creating() -> None:
    svc = service("s", "ns")
    svc.metadata.uid = "u1"
    old = discovery_pb2.EndpointSlice(address_type="IPv4")
    old.metadata.name, old.metadata.namespace, old.metadata.resource_version = "s-abcde", "ns", "7"
    old.metadata.owner_references.add(kind="Service", name="s", uid="u1", controller=True)
    old.ports.add(name="http", protocol="TCP", port=8080)
    old.metadata.labels.update(es.slice_labels(svc))
    group = es.EndpointGroup(list(old.ports))
    for i in range(30):
        ep = discovery_pb2.Endpoint(addresses=[f"10.0.0.{i + 1}"])
        ep.target_ref.name = f"p{i}"
        if i < 20:
            old.endpoints.append(ep)
        group.endpoints[es.endpoint_key(ep)] = ep
    plan = es.reconcile(svc, {"IPv4": {es.port_key(old.ports): group}}, [old], limit=100)
    assert not plan.create and not plan.delete
    [updated] = plan.update
    assert updated.metadata.name == "s-abcde" and len(updated.endpoints) == 30
    assert updated.metadata.resource_version == "7"  # a conditional update of what was read
    # 60 more fit in that unchanged slice; 90 do not, so they go to a new slice and it stays as it is.
    for count, updates, creates in ((60, [90], []), (90, [], [90])):
        more = es.EndpointGroup(list(old.ports), dict(group.endpoints))
        for i in range(30, 30 + count):
            ep = discovery_pb2.Endpoint(addresses=[f"10.0.1.{i}"])
            ep.target_ref.name = f"p{i}"
            more.endpoints[es.endpoint_key(ep)] = ep
        plan = es.reconcile(svc, {"IPv4": {es.port_key(old.ports): more}}, [updated], limit=100)
        assert [len(s.endpoints) for s in plan.update] == updates
        assert [len(s.endpoints) for s in plan.create] == creates and not plan.delete


# ---------------------------------------------------------------- validation, as Kubernetes words it


def slice_of(name: str, namespace: str, address_type: str, *addresses: str) -> discovery_pb2.EndpointSlice:
    eps = discovery_pb2.EndpointSlice(api_version="discovery.k8s.io/v1", kind="EndpointSlice",
                                      address_type=address_type)
    eps.metadata.name, eps.metadata.namespace = name, namespace
    eps.endpoints.add(addresses=list(addresses))
    eps.ports.add(name="http", port=80)
    return eps


async def causes_of(client: Client, obj: discovery_pb2.EndpointSlice) -> list[tuple[str, str]]:
    """The (field, message) pairs of the Invalid answer (over gRPC they travel in its message)."""
    with pytest.raises(Invalid) as info:
        await client.create(obj)
    detail = str(info.value).partition(" is invalid: ")[2]
    return [(path, message) for path, _, message in (c.partition(": ") for c in detail.split("; "))]


async def test_bad_slices_are_refused_with_kubernetes_messages_and_not_stored(client: Client,
                                                                              namespace: str) -> None:
    assert await causes_of(client, slice_of("lo", namespace, "IPv4", "127.0.0.1", "169.254.169.254")) == [
        ("endpoints[0].addresses[0]", 'Invalid value: "127.0.0.1": may not be in the loopback range '
                                      "(127.0.0.0/8, ::1/128)"),
        ("endpoints[0].addresses[1]", 'Invalid value: "169.254.169.254": may not be in the link-local range '
                                      "(169.254.0.0/16, fe80::/10)")]
    assert await causes_of(client, slice_of("v6", namespace, "IPv4", "fd00::1")) == [
        ("endpoints[0].addresses[0]", 'Invalid value: "fd00::1": must be a valid IPv4 address')]
    assert await causes_of(client, slice_of("v7", namespace, "IPv7", "10.0.0.1")) == [
        ("addressType", 'Unsupported value: "IPv7": supported values: "FQDN", "IPv4", "IPv6"')]
    assert await causes_of(client, slice_of("dns", namespace, "FQDN", "localhost")) == [
        ("endpoints[0].addresses[0]", 'Invalid value: "localhost": should be a domain with at least two '
                                      "segments separated by dots")]
    empty = slice_of("empty", namespace, "IPv4")
    empty.ports.add(name="http", port=81, protocol="ICMP")
    assert await causes_of(client, empty) == [
        ("endpoints[0].addresses", "Required value: must contain at least 1 address"),
        ("ports[1].name", 'Duplicate value: "http"'),
        ("ports[1].protocol", 'Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"')]
    crowded = slice_of("crowded", namespace, "IPv4", "10.0.0.1")
    crowded.endpoints.extend(discovery_pb2.Endpoint(addresses=["10.0.0.2"]) for _ in range(1000))
    assert await causes_of(client, crowded) == [("endpoints", "Too many: 1001: must have at most 1000 items")]
    assert not (await client.list(discovery_pb2.EndpointSlice, namespace)).items

    made = await client.create(slice_of("good", namespace, "IPv6", "fd00::1"))
    assert made.ports[0].protocol == "TCP"  # defaulted
    made.address_type = "IPv4"
    with pytest.raises(Invalid, match=r'addressType: Invalid value: "IPv4": field is immutable'):
        await client.update(made)


# ---------------------------------------------------------------- who may read and write slices


@pytest.mark.parametrize(("user", "verb", "allowed"), [
    (UserInfo("system:kube-proxy"), "watch", True),  # proxies route by slices
    (UserInfo("system:coredns"), "list", True),  # DNS answers from them
    (UserInfo("alice"), "get", True),  # view
    (UserInfo("alice"), "create", False),  # but no aggregated role writes them, as in Kubernetes
    (UserInfo("system:kube-proxy"), "update", False),
])
def test_default_roles_read_endpointslices(user: UserInfo, verb: str, allowed: bool) -> None:
    rbac = RBACAuthorizer()
    for obj in (*default_cluster_roles(), *default_cluster_role_bindings()):
        rbac.observe("ADDED", obj)
    for role in ("view", "edit"):
        binding = rbac_pb2.ClusterRoleBinding(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRoleBinding")
        binding.metadata.name = f"alice-{role}"
        binding.subjects.add(kind="User", name="alice", api_group="rbac.authorization.k8s.io")
        binding.role_ref.api_group, binding.role_ref.kind, binding.role_ref.name = (
            "rbac.authorization.k8s.io", "ClusterRole", role)
        rbac.observe("ADDED", binding)
    attrs = Attributes(user, verb, "endpointslices", namespace="team", api_group="discovery.k8s.io")
    assert rbac.allowed(attrs) is allowed


# ---------------------------------------------------------------- real kubectl over HTTP




async def test_kubectl_gets_slices_and_describes_the_service_endpoints(
        http_url: str, namespace: str, tmp_path: Path, client: Client, hollow: HollowCluster,
        apiserver: ApiServer) -> None:
    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return kubectl(http_url, tmp_path, "-n", namespace, *args, stdin=stdin)

    await client.create(service("shop", namespace))
    await create_all(client, [pod(f"shop-{i}", namespace, "shop") for i in range(2)])
    [made] = await wait_slices(client, namespace, "shop",
                               lambda found: len(endpoints_of(found)) == 2
                               and all(ep.conditions.ready for ep in endpoints_of(found).values()),
                               "2 ready endpoints")
    ips = sorted(ep.addresses[0] for ep in made.endpoints)

    listed = await asyncio.to_thread(run, "get", "endpointslices")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    name, address_type, ports, addresses, _ = row.split()
    assert (name, address_type, ports) == (made.metadata.name, "IPv4", "8080,9090")
    assert sorted(addresses.split(",")) == ips

    described = await asyncio.to_thread(run, "describe", "svc", "shop")
    assert described.returncode == 0, described.stderr
    shown = [line.split()[1] for line in described.stdout.splitlines() if line.startswith("Endpoints:")]
    assert sorted(shown[0].split(",")) == [f"{ip}:8080" for ip in ips]
    assert sorted(shown[1].split(",")) == [f"{ip}:9090" for ip in ips]
    # kctl describes it alike, from the same slices.
    kctl_described = await asyncio.to_thread(CliRunner().invoke, cli, ["-s", apiserver.address, "-n", namespace,
                                                                      "describe", "svc", "shop"],
                                             env={"KCTL_CONFIG": "/nonexistent"})
    assert kctl_described.exit_code == 0, kctl_described.output
    assert [line.split()[1] for line in kctl_described.output.splitlines() if line.startswith("Endpoints:")] == shown

    bad = manifest.to_dict(slice_of("bad", namespace, "IPv4", "127.0.0.1"))
    refused = await asyncio.to_thread(run, "create", "-f", "-", stdin=json.dumps(bad))
    assert refused.returncode != 0
    assert refused.stderr.strip() == (
        'The EndpointSlice "bad" is invalid: endpoints[0].addresses[0]: Invalid value: "127.0.0.1": '
        "may not be in the loopback range (127.0.0.0/8, ::1/128)")
