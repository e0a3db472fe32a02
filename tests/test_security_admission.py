"""The attacks a red-team probe made on a running cluster (issue 20), each refused in Kubernetes' words.

Against a real TLS apiserver with RBAC (test_security.py's fixture): an `edit`
user's host-takeover pod, a Service pointed at the node's own loopback, a
Service capturing the master's address with externalIPs, a pod squatting on the
apiserver's port, and a namespace admin granting itself cluster-admin — and,
beside each, the legitimate use that must keep working.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from client import Client
from controlplane.apiserver import admission
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.storage import Storage
from proto import apps_pb2, core_pb2, manifest, rbac_pb2
from proto.errors import Forbidden, Invalid, NotFound
from provision.processes import Etcd
from tests.test_security import SecureServer, secure_apiserver

__all__ = ["secure_apiserver"]  # the module-scoped fixture, imported so pytest finds it here

T = TypeVar("T")
RBAC = "rbac.authorization.k8s.io"
ENFORCE = "pod-security.kubernetes.io/enforce"


# ---------------------------------------------------------------- helpers

async def retry_forbidden(call: Callable[[], Awaitable[T]], attempts: int = 100) -> T:
    """Grants reach the authorizer through its watch: retry a call that needs one for a moment."""
    for _ in range(attempts - 1):
        try:
            return await call()
        except Forbidden:
            await asyncio.sleep(0.05)
    return await call()


def obj(doc: dict[str, Any]) -> Any:
    return manifest.from_dict(doc)


def namespace_doc(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def binding(name: str, namespace: str, user: str, role_kind: str, role: str) -> rbac_pb2.RoleBinding:
    b = rbac_pb2.RoleBinding(api_version=f"{RBAC}/v1", kind="RoleBinding")
    b.metadata.name, b.metadata.namespace = name, namespace
    b.subjects.add(kind="User", name=user, api_group=RBAC)
    b.role_ref.api_group, b.role_ref.kind, b.role_ref.name = RBAC, role_kind, role
    return b


def pod_doc(name: str, **spec: Any) -> dict[str, Any]:
    containers = spec.pop("containers", [{"name": "app", "image": "busybox"}])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": containers, **spec}}


def host_takeover_pod(name: str) -> core_pb2.Pod:
    """What the probe ran: the master's network and root filesystem, pinned to the master."""
    return obj(pod_doc(name, hostNetwork=True, nodeName="master",
                       volumes=[{"name": "root", "hostPath": {"path": "/"}}],
                       containers=[{"name": "app", "image": "busybox",
                                    "volumeMounts": [{"name": "root", "mountPath": "/host"}]}]))


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def namespace_with(admin: Client, user: str, role: str, **labels: str) -> str:
    """A new namespace where `user` holds ClusterRole `role`; returns once the grant is in force."""
    name = fresh(role)
    await admin.create(obj(namespace_doc(name, **labels)))
    await admin.create(binding(f"{user}-{role}", name, user, "ClusterRole", role))
    return name


@pytest.fixture
async def admin(secure_apiserver: SecureServer) -> AsyncIterator[Client]:
    async with secure_apiserver.client_as("admin", "system:masters") as client:
        yield client


# ---------------------------------------------------------------- Pod Security

async def test_edit_user_cannot_take_over_the_host(secure_apiserver: SecureServer, admin: Client) -> None:
    namespace = await namespace_with(admin, "eve", "edit")
    async with secure_apiserver.client_as("eve") as eve:
        await retry_forbidden(lambda: eve.list(core_pb2.Pod, namespace))  # eve's edit grant is in force
        with pytest.raises(Forbidden) as refused:
            await eve.create(host_takeover_pod("evil"), namespace=namespace)
        assert str(refused.value) == (
            'pods "evil" is forbidden: violates PodSecurity "baseline:latest": '
            'host namespaces (hostNetwork=true), hostPath volumes (volume "root")')
        with pytest.raises(NotFound):
            await admin.get(core_pb2.Pod, "evil", namespace)
        # nor may she open her own namespace up
        ns = await admin.get(core_pb2.Namespace, namespace)
        ns.metadata.labels[ENFORCE] = "privileged"
        with pytest.raises(Forbidden, match='User "eve" cannot update resource "namespaces"'):
            await eve.update(ns)
        # an ordinary pod is fine
        assert (await eve.create(obj(pod_doc("fine")), namespace=namespace)).metadata.uid


async def test_every_baseline_violation_is_named(admin: Client) -> None:
    namespace = fresh("baseline")
    await admin.create(obj(namespace_doc(namespace)))
    bad = obj(pod_doc("bad", hostPID=True, hostIPC=True, containers=[
        {"name": "a", "image": "busybox", "ports": [{"containerPort": 80, "hostPort": 8080}],
         "securityContext": {"privileged": True, "capabilities": {"add": ["SYS_ADMIN", "CHOWN", "NET_ADMIN"]}}},
        {"name": "b", "image": "busybox", "ports": [{"containerPort": 81, "hostPort": 9090}]}]))
    bad.metadata.annotations["container.apparmor.security.beta.kubernetes.io/a"] = "unconfined"
    with pytest.raises(Forbidden) as refused:
        await admin.create(bad, namespace=namespace)
    assert str(refused.value) == (
        'pods "bad" is forbidden: violates PodSecurity "baseline:latest": '
        'forbidden AppArmor profile (container.apparmor.security.beta.kubernetes.io/a="unconfined"), '
        'non-default capabilities (container "a" must not include "NET_ADMIN", "SYS_ADMIN" in '
        'securityContext.capabilities.add), host namespaces (hostPID=true, hostIPC=true), '
        'hostPort (containers "a", "b" use hostPorts 8080, 9090), '
        'privileged (container "a" must not set securityContext.privileged=true)')


async def test_privileged_namespace_runs_a_host_network_pod(secure_apiserver: SecureServer, admin: Client) -> None:
    namespace = await namespace_with(admin, "ops", "edit", **{ENFORCE: "privileged"})
    async with secure_apiserver.client_as("ops") as ops:
        created = await retry_forbidden(lambda: ops.create(host_takeover_pod("agent"), namespace=namespace))
        assert created.spec.host_network and created.spec.volumes[0].host_path.path == "/"
    # kube-system is privileged without a label: the cluster's own daemons live there
    system = await admin.create(host_takeover_pod(fresh("daemon")), namespace="kube-system")
    assert system.spec.host_network
    await admin.delete(core_pb2.Pod, system.metadata.name, "kube-system", grace_period_seconds=0)


async def test_restricted_namespace_wants_hardened_pods(admin: Client) -> None:
    namespace = fresh("restricted")
    await admin.create(obj(namespace_doc(namespace, **{ENFORCE: "restricted"})))
    with pytest.raises(Forbidden) as refused:
        await admin.create(obj(pod_doc("plain")), namespace=namespace)
    assert str(refused.value) == (
        'pods "plain" is forbidden: violates PodSecurity "restricted:latest": '
        'allowPrivilegeEscalation != false (container "app" must set securityContext.allowPrivilegeEscalation=false), '
        'unrestricted capabilities (container "app" must set securityContext.capabilities.drop=["ALL"]), '
        'runAsNonRoot != true (pod or container "app" must set securityContext.runAsNonRoot=true)')
    with pytest.raises(Forbidden, match=re.escape(
            'restricted volume types (volume "data" uses restricted volume type "hostPath"), runAsUser=0 '
            '(pod must not set runAsUser=0)')):
        await admin.create(obj(pod_doc(
            "root", securityContext={"runAsNonRoot": True, "runAsUser": 0},
            volumes=[{"name": "data", "hostPath": {"path": "/var"}}],
            containers=[{"name": "app", "image": "busybox", "securityContext": {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}])), namespace=namespace)
    hardened = await admin.create(obj(pod_doc(
        "hardened", securityContext={"runAsNonRoot": True, "runAsUser": 1000},
        volumes=[{"name": "scratch", "emptyDir": {}}],
        containers=[{"name": "app", "image": "busybox", "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}])), namespace=namespace)
    assert hardened.metadata.uid


async def test_an_older_policy_version_leaves_out_later_checks(admin: Client) -> None:
    namespace = fresh("v121")
    await admin.create(obj(namespace_doc(namespace, **{ENFORCE: "restricted", f"{ENFORCE}-version": "v1.21"})))
    with pytest.raises(Forbidden) as refused:
        await admin.create(obj(pod_doc("plain")), namespace=namespace)
    # no "unrestricted capabilities" before 1.22
    assert '"restricted:v1.21": allowPrivilegeEscalation != false' in str(refused.value)
    assert "capabilities" not in str(refused.value)


async def test_pod_security_labels_must_parse(admin: Client) -> None:
    namespace = fresh("badlabel")
    with pytest.raises(Invalid) as refused:
        await admin.create(obj(namespace_doc(namespace, **{ENFORCE: "strict", f"{ENFORCE}-version": "1.30"})))
    assert str(refused.value) == (
        f'Namespace "{namespace}" is invalid: metadata.labels[{ENFORCE}]: Invalid value: "strict": must be one of '
        f'privileged, baseline, restricted; metadata.labels[{ENFORCE}-version]: Invalid value: "1.30": '
        'must be "latest" or "v1.x"')
    with pytest.raises(NotFound):
        await admin.get(core_pb2.Namespace, namespace)


async def test_workloads_are_not_refused_their_pods_are(admin: Client) -> None:
    namespace = fresh("workloads")
    await admin.create(obj(namespace_doc(namespace)))
    deployment = obj({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hostnet"},
                      "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "h"}},
                               "template": {"metadata": {"labels": {"app": "h"}},
                                            "spec": {"hostNetwork": True,
                                                     "containers": [{"name": "c", "image": "busybox"}]}}}})
    created = await admin.create(deployment, namespace=namespace)  # warned about, not refused (as Kubernetes)
    assert isinstance(created, apps_pb2.Deployment) and created.metadata.uid


# ---------------------------------------------------------------- warnings and audit, in-process

@pytest.fixture
async def registry(etcd: Etcd) -> AsyncIterator[Registry]:
    storage = Storage(etcd.url)
    await storage.connect()
    yield Registry(storage)


async def test_warn_and_audit_modes_record_without_refusing(registry: Registry) -> None:
    from proto import kinds

    namespace = fresh("warned")
    await registry.create(kinds.resolve("namespaces"), "", obj(namespace_doc(
        namespace, **{ENFORCE: "baseline", "pod-security.kubernetes.io/warn": "restricted",
                      "pod-security.kubernetes.io/audit": "restricted"})))
    with admission.recording() as recorded:
        await registry.create(kinds.resolve("pods"), namespace, obj(pod_doc("plain")))
    restricted = ('would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false '
                  '(container "app" must set securityContext.allowPrivilegeEscalation=false)')
    assert len(recorded.warnings) == 1 and recorded.warnings[0].startswith(restricted)
    assert recorded.annotations["pod-security.kubernetes.io/audit-violations"].startswith(restricted)
    assert recorded.annotations["pod-security.kubernetes.io/enforce-policy"] == "baseline:latest"
    assert admission.warning_header('a "b"') == '299 - "a \\"b\\""'

    # a template in a baseline namespace: a warning now, instead of failed pods later
    with admission.recording() as recorded:
        await registry.create(kinds.resolve("replicasets"), namespace, obj({
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"hostPID": True, "containers": [{"name": "c", "image": "busybox"}]}}}}))
    assert recorded.warnings == ['would violate PodSecurity "restricted:latest": host namespaces (hostPID=true), '
                                 'allowPrivilegeEscalation != false (container "c" must set '
                                 'securityContext.allowPrivilegeEscalation=false), unrestricted capabilities '
                                 '(container "c" must set securityContext.capabilities.drop=["ALL"]), '
                                 'runAsNonRoot != true (pod or container "c" must set '
                                 'securityContext.runAsNonRoot=true)']

    # tightening the namespace warns about the pods it would now refuse, and strands none of them
    ns = await registry.get(kinds.resolve("namespaces"), "", namespace)
    ns.metadata.labels[ENFORCE] = "restricted"  # type: ignore[attr-defined]
    with admission.recording() as recorded:
        await registry.update(kinds.resolve("namespaces"), "", ns)
    assert recorded.warnings == [
        f'existing pods in namespace "{namespace}" violate the new PodSecurity enforce level "restricted:latest"',
        "plain: allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true"]
    plain = await registry.get(kinds.resolve("pods"), namespace, "plain")
    plain.metadata.labels["touched"] = "yes"  # type: ignore[attr-defined]
    await registry.update(kinds.resolve("pods"), namespace, plain)  # a label change is not re-evaluated


# ---------------------------------------------------------------- Endpoints, externalIPs, host ports

async def test_endpoints_may_not_point_at_the_node_itself(secure_apiserver: SecureServer, admin: Client) -> None:
    namespace = await namespace_with(admin, "mallory", "edit")
    async with secure_apiserver.client_as("mallory") as mallory:
        service = obj({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "etcd"},
                       "spec": {"ports": [{"port": 2379}]}})
        await retry_forbidden(lambda: mallory.create(service, namespace=namespace))  # selectorless: fine
        for ip, why in (("127.0.0.1", "may not be in the loopback range (127.0.0.0/8, ::1/128)"),
                        ("169.254.169.254", "may not be in the link-local range (169.254.0.0/16, fe80::/10)"),
                        ("0.0.0.0", "may not be unspecified (0.0.0.0)")):
            endpoints = obj({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "etcd"},
                             "subsets": [{"addresses": [{"ip": ip}], "ports": [{"port": 12379}]}]})
            with pytest.raises(Invalid) as refused:
                await mallory.create(endpoints, namespace=namespace)
            assert str(refused.value) == (f'Endpoints "etcd" is invalid: subsets[0].addresses[0].ip: '
                                          f'Invalid value: "{ip}": {why}')
        with pytest.raises(NotFound):
            await admin.get(core_pb2.Endpoints, "etcd", namespace)
        endpoints.subsets[0].addresses[0].ip = "10.244.1.7"
        assert (await mallory.create(endpoints, namespace=namespace)).metadata.uid


async def test_services_may_not_claim_external_ips(secure_apiserver: SecureServer, admin: Client) -> None:
    namespace = await namespace_with(admin, "mallory", "edit")
    async with secure_apiserver.client_as("mallory") as mallory:
        capture = obj({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "capture"},
                       "spec": {"selector": {"app": "x"}, "ports": [{"port": 6443}],
                                "externalIPs": ["192.168.56.1"]}})
        with pytest.raises(Forbidden) as refused:
            await retry_forbidden(lambda: mallory.list(core_pb2.Service, namespace))
            await mallory.create(capture, namespace=namespace)
        assert str(refused.value) == ('services "capture" is forbidden: spec.externalIPs: Forbidden: '
                                      "externalIPs have been disabled")
        capture.spec.ClearField("external_ips")
        created = await mallory.create(capture, namespace=namespace)
        created.spec.external_ips.append("192.168.56.1")
        with pytest.raises(Forbidden, match="externalIPs have been disabled"):
            await mallory.update(created)
        assert not (await admin.get(core_pb2.Service, "capture", namespace)).spec.external_ips


async def test_no_pod_takes_a_control_plane_port_even_when_privileged(admin: Client) -> None:
    namespace = fresh("squat")
    await admin.create(obj(namespace_doc(namespace, **{ENFORCE: "privileged"})))
    squatter = obj(pod_doc("squatter", containers=[
        {"name": "app", "image": "busybox", "ports": [{"containerPort": 80, "hostPort": 8080},
                                                      {"containerPort": 443, "hostPort": 6443}]}]))
    with pytest.raises(Forbidden) as refused:
        await admin.create(squatter, namespace=namespace)
    assert str(refused.value) == ('pods "squatter" is forbidden: spec.containers[0].ports[1].hostPort: Forbidden: '
                                  "port 6443 is reserved for the control plane")
    squatter.spec.containers[0].ports.pop()
    assert (await admin.create(squatter, namespace=namespace)).metadata.uid  # hostPort 8080 is allowed here


# ---------------------------------------------------------------- RBAC escalation

async def test_namespace_admin_cannot_grant_itself_cluster_admin(secure_apiserver: SecureServer,
                                                                 admin: Client) -> None:
    namespace = await namespace_with(admin, "ann", "admin")
    async with secure_apiserver.client_as("ann") as ann:
        await retry_forbidden(lambda: ann.list(rbac_pb2.RoleBinding, namespace))
        with pytest.raises(Forbidden) as refused:
            await ann.create(binding("ann-is-root", namespace, "ann", "ClusterRole", "cluster-admin"))
        assert str(refused.value) == (
            'rolebindings.rbac.authorization.k8s.io "ann-is-root" is forbidden: user "ann" '
            '(groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held:\n'
            '{APIGroups:["*"], Resources:["*"], Verbs:["*"]}')
        with pytest.raises(NotFound):
            await admin.get(rbac_pb2.RoleBinding, "ann-is-root", namespace)
        # what she holds she may hand on: edit, in her namespace
        granted = await ann.create(binding("bob-edit", namespace, "bob", "ClusterRole", "edit"))
        assert granted.role_ref.name == "edit"


async def test_roles_carry_only_what_their_author_holds(secure_apiserver: SecureServer, admin: Client) -> None:
    namespace = await namespace_with(admin, "ann", "admin")

    def role(name: str) -> rbac_pb2.Role:
        r = rbac_pb2.Role(api_version=f"{RBAC}/v1", kind="Role")
        r.metadata.name, r.metadata.namespace = name, namespace
        r.rules.add(verbs=["get", "list"], api_groups=[""], resources=["pods"])
        r.rules.add(verbs=["get", "list", "delete"], api_groups=[""], resources=["nodes"])
        return r

    async with secure_apiserver.client_as("ann") as ann:
        await retry_forbidden(lambda: ann.list(rbac_pb2.Role, namespace))
        with pytest.raises(Forbidden) as refused:
            await ann.create(role("node-killer"))
        assert str(refused.value) == (
            'roles.rbac.authorization.k8s.io "node-killer" is forbidden: user "ann" (groups=["system:authenticated"]) '
            'is attempting to grant RBAC permissions not currently held:\n'
            '{APIGroups:[""], Resources:["nodes"], Verbs:["get" "list" "delete"]}')
        # with `escalate` on roles (granted by a cluster admin), she may
        escalator = rbac_pb2.Role(api_version=f"{RBAC}/v1", kind="Role")
        escalator.metadata.name, escalator.metadata.namespace = "escalator", namespace
        escalator.rules.add(verbs=["escalate"], api_groups=[RBAC], resources=["roles"])
        await admin.create(escalator)
        await admin.create(binding("ann-escalates", namespace, "ann", "Role", "escalator"))
        assert (await retry_forbidden(lambda: ann.create(role("node-killer")))).metadata.uid
        # binding it is another matter: `bind` on that role, which she lacks
        with pytest.raises(Forbidden, match="not currently held"):
            await ann.create(binding("bob-kills", namespace, "bob", "Role", "node-killer"))
        binder = rbac_pb2.Role(api_version=f"{RBAC}/v1", kind="Role")
        binder.metadata.name, binder.metadata.namespace = "binder", namespace
        binder.rules.add(verbs=["bind"], api_groups=[RBAC], resources=["roles"], resource_names=["node-killer"])
        await admin.create(binder)
        await admin.create(binding("ann-binds", namespace, "ann", "Role", "binder"))
        bound = await retry_forbidden(lambda: ann.create(binding("bob-kills", namespace, "bob", "Role",
                                                                 "node-killer")))
        assert bound.role_ref.name == "node-killer"
