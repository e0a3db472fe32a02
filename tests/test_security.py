"""Authentication and RBAC over TLS: certificates, tokens, roles and bindings, told as stories."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from client import Client, certificates
from proto import core_pb2, rbac_pb2
from proto.errors import ApiError, Forbidden, Unauthorized
from provision.processes import Etcd, free_port, start_apiserver


@dataclass
class SecureServer:
    secure: str  # mTLS port
    tokens: str  # bearer-token port
    ca: certificates.KeyPair
    audit_log: Path

    def client_as(self, user: str, *groups: str) -> Client:
        cert = certificates.create_client_cert(self.ca, user, groups)
        creds = grpc.ssl_channel_credentials(self.ca.cert_pem, cert.key_pem, cert.cert_pem)
        return Client(self.secure, credentials=creds, timeout=10)

    def token_client(self, token: str | None) -> Client:
        return Client(self.tokens, credentials=grpc.ssl_channel_credentials(self.ca.cert_pem), token=token,
                      timeout=10)


@pytest.fixture(scope="module")
def secure_apiserver(etcd: Etcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    folder: Path = tmp_path_factory.mktemp("pki")
    ca = certificates.create_ca()
    ca_crt, _ = ca.write(folder, "ca")
    serving = certificates.create_serving_cert(ca, "flotilla-apiserver", ["127.0.0.1", "localhost"])
    crt, key = serving.write(folder, "apiserver")
    (folder / "tokens.csv").write_text('s3cret-bob,bob,uid-bob,"viewers"\n')
    secure, tokens = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    server = start_apiserver(etcd.url, folder, extra=[
        "--secure-listen", secure, "--token-listen", tokens, "--tls-cert-file", str(crt),
        "--tls-private-key-file", str(key), "--client-ca-file", str(ca_crt),
        "--token-auth-file", str(folder / "tokens.csv"), "--authorization-mode", "RBAC",
        "--audit-log-path", str(folder / "audit" / "audit.log")])
    yield SecureServer(secure, tokens, ca, folder / "audit" / "audit.log")
    server.process.stop()


async def make_namespace(admin: Client, name: str) -> None:
    ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = name
    try:
        await admin.create(ns)
    except ApiError:
        pass


def pod(name: str, namespace: str) -> core_pb2.Pod:
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    p.metadata.name, p.metadata.namespace = name, namespace
    p.spec.containers.add(name="app", image="busybox")
    return p


async def test_admin_certificate_may_do_anything(secure_apiserver: SecureServer) -> None:
    async with secure_apiserver.client_as("admin", "system:masters") as admin:
        await make_namespace(admin, "sec-admin")
        created = await admin.create(pod("p", "sec-admin"))
        assert created.metadata.uid
        roles = {r.metadata.name for r in (await admin.list(rbac_pb2.ClusterRole)).items}
        assert {"cluster-admin", "admin", "edit", "view", "system:node", "system:kube-scheduler"} <= roles


async def test_anonymous_and_bad_tokens_are_refused(secure_apiserver: SecureServer) -> None:
    async with secure_apiserver.token_client(None) as anonymous:
        with pytest.raises(Unauthorized, match="anonymous requests are refused"):
            await anonymous.list(core_pb2.Pod, "default")
    async with secure_apiserver.token_client("wrong") as bad:
        with pytest.raises(Unauthorized, match="invalid bearer token"):
            await bad.list(core_pb2.Pod, "default")


async def test_mtls_port_refuses_a_client_without_certificate(secure_apiserver: SecureServer) -> None:
    creds = grpc.ssl_channel_credentials(secure_apiserver.ca.cert_pem)
    async with Client(secure_apiserver.secure, credentials=creds, timeout=3) as nocert:
        with pytest.raises(ApiError):
            await nocert.list(core_pb2.Pod, "default")


async def test_rolebinding_grants_edit_in_its_namespace_only(secure_apiserver: SecureServer) -> None:
    async with secure_apiserver.client_as("admin", "system:masters") as admin:
        await make_namespace(admin, "team-a")
        await make_namespace(admin, "team-b")
        async with secure_apiserver.client_as("alice", "developers") as alice:
            with pytest.raises(Forbidden, match='User "alice" cannot create resource "pods"'):
                await alice.create(pod("p1", "team-a"))
            binding = rbac_pb2.RoleBinding(api_version="rbac.authorization.k8s.io/v1", kind="RoleBinding")
            binding.metadata.name, binding.metadata.namespace = "alice-edit", "team-a"
            binding.subjects.add(kind="User", name="alice", api_group="rbac.authorization.k8s.io")
            binding.role_ref.kind, binding.role_ref.name = "ClusterRole", "edit"
            binding.role_ref.api_group = "rbac.authorization.k8s.io"
            await admin.create(binding)
            await _eventually(lambda: alice.create(pod("p1", "team-a")))
            with pytest.raises(Forbidden, match='in the namespace "team-b"'):
                await alice.create(pod("p1", "team-b"))
            # Named as Kubernetes names it: the group-qualified resource, then the refused action.
            with pytest.raises(Forbidden) as refused:
                await alice.list(rbac_pb2.ClusterRole)
            assert str(refused.value) == (
                'clusterroles.rbac.authorization.k8s.io is forbidden: User "alice" cannot list resource '
                '"clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope')


async def test_token_user_with_view_can_read_not_write(secure_apiserver: SecureServer) -> None:
    async with secure_apiserver.client_as("admin", "system:masters") as admin:
        await make_namespace(admin, "viewing")
        crb = rbac_pb2.ClusterRoleBinding(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRoleBinding")
        crb.metadata.name = "viewers-view"
        crb.subjects.add(kind="Group", name="viewers", api_group="rbac.authorization.k8s.io")
        crb.role_ref.kind, crb.role_ref.name = "ClusterRole", "view"
        crb.role_ref.api_group = "rbac.authorization.k8s.io"
        await admin.create(crb)
    async with secure_apiserver.token_client("s3cret-bob") as bob:
        await _eventually(lambda: bob.list(core_pb2.Pod, "viewing"))
        with pytest.raises(Forbidden, match='User "bob" cannot create'):
            await bob.create(pod("nope", "viewing"))
        with pytest.raises(Forbidden, match="secrets"):
            await bob.list(core_pb2.Secret, "viewing")


async def _eventually(call: object, attempts: int = 50) -> None:
    """Bindings reach the authoriser through its watch: allow it a moment."""
    import asyncio

    for _ in range(attempts):
        try:
            await call()  # type: ignore[operator]
            return
        except Forbidden:
            await asyncio.sleep(0.05)
    await call()  # type: ignore[operator]


def test_kctl_can_i_and_create_rbac(secure_apiserver: SecureServer, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from kctl.main import cli

    admin = certificates.create_client_cert(secure_apiserver.ca, "admin", ("system:masters",))
    ca_file, _ = secure_apiserver.ca.write(tmp_path, "ca")
    cert, key = admin.write(tmp_path, "admin")
    config = tmp_path / "config"
    config.write_text(f"""apiVersion: v1
kind: Config
current-context: c
clusters: [{{name: c, cluster: {{server: "{secure_apiserver.secure}", certificate-authority: {ca_file}}}}}]
users: [{{name: admin, user: {{client-certificate: {cert}, client-key: {key}}}}}]
contexts: [{{name: c, context: {{cluster: c, user: admin, namespace: rbac-cli}}}}]
""")
    runner = CliRunner()

    def kctl(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, ["--kubeconfig", str(config), *args])
        return result.exit_code, result.output

    assert kctl("create", "namespace", "rbac-cli")[0] == 0
    assert kctl("auth", "can-i", "delete", "pods") == (0, "yes\n")
    assert kctl("auth", "can-i", "list", "pods", "--as", "carol") == (1, "no\n")
    code, out = kctl("create", "role", "pod-reader", "--verb=get,list", "--resource=pods")
    assert code == 0 and "role.rbac.authorization.k8s.io/pod-reader created" in out
    code, out = kctl("create", "rolebinding", "carol-reads", "--role=pod-reader", "--user=carol")
    assert code == 0, out
    import time

    for _ in range(50):  # the binding reaches the authoriser through its watch
        if kctl("auth", "can-i", "list", "pods", "--as", "carol")[1] == "yes\n":
            break
        time.sleep(0.05)
    assert kctl("auth", "can-i", "list", "pods", "--as", "carol") == (0, "yes\n")
    assert kctl("auth", "can-i", "delete", "pods", "--as", "carol") == (1, "no\n")
    assert kctl("create", "rolebinding", "broken", "--user=carol")[0] == 1


async def test_audit_log_records_each_mutating_request(secure_apiserver: SecureServer) -> None:
    import json

    async with secure_apiserver.client_as("admin", "system:masters") as admin:
        await make_namespace(admin, "audited")
        await admin.create(pod("audited-pod", "audited"))
        await admin.list(core_pb2.Pod, "audited")  # a read: not audited
        await admin.delete(core_pb2.Pod, "audited-pod", "audited")
    async with secure_apiserver.client_as("mallory") as mallory:
        with pytest.raises(Forbidden):
            await mallory.create(pod("sneaky", "audited"))
    records = [json.loads(line) for line in secure_apiserver.audit_log.read_text().splitlines()]
    mine = [(r["user"], r["verb"], r["resource"], r["name"], r["result"]) for r in records
            if r["namespace"] == "audited"]
    assert ("admin", "create", "pods", "audited-pod", "OK") in mine
    assert ("admin", "delete", "pods", "audited-pod", "OK") in mine
    assert ("mallory", "create", "pods", "sneaky", "Forbidden") in mine
    assert not any(r["verb"] == "list" and r["resource"] == "pods" for r in records)  # reads of Secrets only
    assert all(r["latencyMs"] >= 0 for r in records)


async def test_node_credentials_reach_only_their_own_node(secure_apiserver: SecureServer) -> None:
    from proto import coordination_pb2, manifest, metrics_pb2

    async with secure_apiserver.client_as("admin", "system:masters") as admin:
        await make_namespace(admin, "noderes")
        for name, node, secret in (("mine", "n1", "used"), ("theirs", "n2", "")):
            p = pod(name, "noderes")
            p.spec.node_name = node
            if secret:
                p.spec.volumes.add(name="s").secret.secret_name = secret
                p.spec.containers[0].volume_mounts.add(name="s", mount_path="/s")
                # A projected volume's sources are the pod's too (kube-api-access-* reads kube-root-ca.crt).
                projected = p.spec.volumes.add(name="p").projected
                projected.sources.add().config_map.name = "projected-cm"
                projected.sources.add().secret.name = "projected-secret"
                p.spec.containers[0].volume_mounts.add(name="p", mount_path="/p")
            await admin.create(p)
        for secret in ("used", "unused", "projected-secret"):
            await admin.create(manifest.from_dict({"apiVersion": "v1", "kind": "Secret",
                                                   "metadata": {"name": secret, "namespace": "noderes"},
                                                   "stringData": {"k": "v"}}))
        for config_map in ("projected-cm", "unused-cm"):
            await admin.create(manifest.from_dict({"apiVersion": "v1", "kind": "ConfigMap",
                                                   "metadata": {"name": config_map, "namespace": "noderes"},
                                                   "data": {"k": "v"}}))
    async with secure_apiserver.client_as("system:node:n1", "system:nodes") as n1:
        mine = await n1.get(core_pb2.Pod, "mine", "noderes")
        mine.status.phase = "Running"
        assert (await n1.update_status(mine)).status.phase == "Running"
        theirs = await n1.get(core_pb2.Pod, "theirs", "noderes")
        theirs.status.phase = "Failed"
        with pytest.raises(Forbidden, match="not bound to node n1"):
            await n1.update_status(theirs)
        with pytest.raises(Forbidden, match="not bound to node n1"):
            await n1.delete(core_pb2.Pod, "theirs", "noderes", grace_period_seconds=0)
        with pytest.raises(Forbidden, match='cannot update resource "pods"'):
            await n1.update(mine)  # only the status subresource is a node's
        assert (await n1.get(core_pb2.Secret, "used", "noderes")).data["k"] == b"v"
        with pytest.raises(Forbidden, match="no pod bound to node n1 uses it"):
            await n1.get(core_pb2.Secret, "unused", "noderes")
        assert (await n1.get(core_pb2.ConfigMap, "projected-cm", "noderes")).data["k"] == "v"
        assert (await n1.get(core_pb2.Secret, "projected-secret", "noderes")).data["k"] == b"v"
        with pytest.raises(Forbidden, match="no pod bound to node n1 uses it"):
            await n1.get(core_pb2.ConfigMap, "unused-cm", "noderes")
        with pytest.raises(Forbidden):
            await n1.list(core_pb2.Secret, "noderes")
        own = core_pb2.Node(api_version="v1", kind="Node")
        own.metadata.name = "n1"
        await n1.create(own)
        other = core_pb2.Node(api_version="v1", kind="Node")
        other.metadata.name = "n2"
        with pytest.raises(Forbidden, match="its own Node"):
            await n1.create(other)
        lease = coordination_pb2.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
        lease.metadata.name, lease.metadata.namespace = "n1", "kube-node-lease"
        lease.spec.holder_identity = "n1"
        await n1.create(lease)
        lease.metadata.name = "n2"
        with pytest.raises(Forbidden, match="its own Lease"):
            await n1.create(lease)
        # Its pods' usage reports: published, and withdrawn once the pod's containers are gone (`top pods`).
        usage = metrics_pb2.PodMetrics(api_version="metrics.k8s.io/v1beta1", kind="PodMetrics", window="10s")
        usage.metadata.name, usage.metadata.namespace = "mine", "noderes"
        await n1.create(usage)
        await n1.delete(metrics_pb2.PodMetrics, "mine", "noderes")


async def test_controller_manager_runs_with_its_own_certificate(secure_apiserver: SecureServer, tmp_path: Path) -> None:
    """A component over TLS: its kubeconfig names it, RBAC's default role lets it do its job."""
    import asyncio
    import sys

    from proto import apps_pb2, manifest
    from provision.processes import Process

    cert = certificates.create_client_cert(secure_apiserver.ca, "system:kube-controller-manager")
    config = tmp_path / "controller-manager.conf"
    config.write_text(certificates.kubeconfig("sec", secure_apiserver.secure, secure_apiserver.ca.cert_pem,
                                     "system:kube-controller-manager", cert))
    manager = Process("controller-manager", [sys.executable, "-m", "controlplane.controllers.main",
                                             "--server", secure_apiserver.secure, "--kubeconfig", str(config),
                                             "--controllers", "deployment,replicaset"], tmp_path / "cm.log")
    manager.start()
    try:
        async with secure_apiserver.client_as("admin", "system:masters") as admin:
            await make_namespace(admin, "tls-cm")
            await admin.create(manifest.from_dict({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "tls-cm"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}},
                                      "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}))
            for _ in range(200):
                pods = (await admin.list(core_pb2.Pod, "tls-cm")).items
                if len(pods) == 2:
                    break
                await asyncio.sleep(0.1)
            assert len(pods) == 2, manager.tail()
            assert len((await admin.list(apps_pb2.ReplicaSet, "tls-cm")).items) == 1
    finally:
        manager.stop()
