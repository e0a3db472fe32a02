"""Issue 20's medium items, told as attacks and the legitimate use beside each.

Given a TLS apiserver with RBAC and an audit log (a small one, so that it rotates):

- a worker's credentials cannot lift their own Node's taints, label it a
  control-plane node, or write or withdraw another worker's pods' metrics,
  while the kubelet's registration (taints, its own labels) and its own
  pods' metrics still work;
- the audit log records who read which Secret and marks dry runs, and
  never holds a Secret's value; it stays 0600 through rotation;
- `kctl cluster up`'s join phase prints how to make a token, never a live one.

Bootstrap tokens bound to a node and client-auth-only CSRs need the
controller manager: tests/test_bootstrap_join.py tells those.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from client import Client, certificates
from proto import core_pb2, manifest, metrics_pb2
from proto.errors import ApiError, Forbidden
from provision.processes import Etcd, free_port, start_apiserver

NS = "medium"


@dataclass
class Server:
    secure: str
    ca: certificates.KeyPair
    audit_log: Path

    def client_as(self, user: str, *groups: str) -> Client:
        cert = certificates.create_client_cert(self.ca, user, groups)
        creds = grpc.ssl_channel_credentials(self.ca.cert_pem, cert.key_pem, cert.cert_pem)
        return Client(self.secure, credentials=creds, timeout=10)

    def admin(self) -> Client:
        return self.client_as("admin", "system:masters")

    def node(self, name: str) -> Client:
        return self.client_as(f"system:node:{name}", "system:nodes")

    def records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]


@pytest.fixture(scope="module")
def server(etcd: Etcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder: Path = tmp_path_factory.mktemp("medium")
    ca = certificates.create_ca()
    ca_crt, _ = ca.write(folder, "ca")
    crt, key = certificates.create_serving_cert(ca, "flotilla-apiserver", ["127.0.0.1"]).write(folder, "apiserver")
    secure = f"127.0.0.1:{free_port()}"
    audit = folder / "audit" / "audit.log"
    api = start_apiserver(etcd.url, folder, extra=[
        "--secure-listen", secure, "--tls-cert-file", str(crt), "--tls-private-key-file", str(key),
        "--client-ca-file", str(ca_crt), "--authorization-mode", "RBAC", "--audit-log-path", str(audit)])
    yield Server(secure, ca, audit)
    api.process.stop()


async def make_pods(server: Server) -> None:
    """Namespace `medium` with pod `on-a` bound to worker-a and `on-b` bound to worker-b."""
    async with server.admin() as admin:
        ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = NS
        try:
            await admin.create(ns)
        except ApiError:
            pass
        for name, node in (("on-a", "worker-a"), ("on-b", "worker-b")):
            pod = core_pb2.Pod(api_version="v1", kind="Pod")
            pod.metadata.name, pod.metadata.namespace = name, NS
            pod.spec.node_name = node
            pod.spec.containers.add(name="app", image="busybox")
            await admin.create(pod)


def _node(name: str, labels: dict[str, str] | None = None, taints: tuple[str, ...] = ()) -> core_pb2.Node:
    node = core_pb2.Node(api_version="v1", kind="Node")
    node.metadata.name = name
    node.metadata.labels.update(labels or {})
    for key in taints:
        node.spec.taints.add(key=key, effect="NoSchedule")
    return node


# ---------------------------------------------------------------- 8: a node's own Node


async def test_a_node_registers_with_taints_and_its_own_labels_but_never_a_role(server: Server) -> None:
    async with server.node("reg-1") as kubelet:
        with pytest.raises(Forbidden) as refused:
            await kubelet.create(_node("reg-1", {"kubernetes.io/hostname": "reg-1",
                                                 "node-role.kubernetes.io/control-plane": "",
                                                 "node-restriction.kubernetes.io/pci": "yes"}))
        assert str(refused.value) == (
            'nodes "reg-1" is forbidden: node "reg-1" is not allowed to set the following labels: '
            "node-restriction.kubernetes.io/pci, node-role.kubernetes.io/control-plane")
        # What a kubelet registers with: its own labels (the kubelet's set, or outside kubernetes.io) and taints.
        created = await kubelet.create(_node("reg-1", {
            "kubernetes.io/hostname": "reg-1", "kubernetes.io/os": "linux", "node.kubernetes.io/instance-type": "vm",
            "topology.kubernetes.io/zone": "z1", "example.com/gpu": "true"}, taints=("dedicated",)))
        assert [t.key for t in created.spec.taints] == ["dedicated"]
    async with server.admin() as admin:
        assert (await admin.get(core_pb2.Node, "reg-1")).metadata.labels["example.com/gpu"] == "true"


async def test_a_node_cannot_lift_its_taints_or_label_its_role(server: Server) -> None:
    async with server.admin() as admin:  # the admin registers the node tainted, as `cluster up` does the master
        role = "node-role.kubernetes.io/control-plane"
        await admin.create(_node("cp-1", {"kubernetes.io/hostname": "cp-1", role: ""}, taints=(role,)))
    async with server.node("cp-1") as kubelet:
        mine = await kubelet.get(core_pb2.Node, "cp-1")
        del mine.spec.taints[:]  # the attack: take control-plane pods' placement without their tolerations
        with pytest.raises(Forbidden) as refused:
            await kubelet.update(mine)
        assert str(refused.value) == 'nodes "cp-1" is forbidden: node "cp-1" is not allowed to modify taints'

        mine = await kubelet.get(core_pb2.Node, "cp-1")
        mine.spec.taints.add(key="only-me", effect="NoSchedule")
        with pytest.raises(Forbidden, match="not allowed to modify taints"):
            await kubelet.update(mine)

        mine = await kubelet.get(core_pb2.Node, "cp-1")
        del mine.metadata.labels["node-role.kubernetes.io/control-plane"]
        mine.metadata.labels["node-role.kubernetes.io/ingress"] = ""
        with pytest.raises(Forbidden) as refused:
            await kubelet.update(mine)
        assert str(refused.value) == ('nodes "cp-1" is forbidden: is not allowed to modify labels: '
                                      "node-role.kubernetes.io/control-plane, node-role.kubernetes.io/ingress")

        # What a kubelet does keep doing: its own labels, its status.
        mine = await kubelet.get(core_pb2.Node, "cp-1")
        mine.metadata.labels["kubernetes.io/arch"] = "amd64"
        mine.metadata.labels["kubelet.kubernetes.io/managed"] = "true"
        updated = await kubelet.update(mine)
        assert updated.metadata.labels["kubernetes.io/arch"] == "amd64"
        updated.status.conditions.add(type="Ready", status="True")
        assert (await kubelet.update_status(updated)).status.conditions[0].status == "True"
    async with server.admin() as admin:  # and the admin still may: `kctl taint`, `kctl label`
        node = await admin.get(core_pb2.Node, "cp-1")
        del node.spec.taints[:]
        node.metadata.labels["node-role.kubernetes.io/ingress"] = ""
        assert not (await admin.update(node)).spec.taints


# ---------------------------------------------------------------- 9: metrics follow the pods


def _usage(pod: str) -> metrics_pb2.PodMetrics:
    report = metrics_pb2.PodMetrics(api_version="metrics.k8s.io/v1beta1", kind="PodMetrics", window="10s")
    report.metadata.name, report.metadata.namespace = pod, NS
    report.containers.add(name="app", usage={"cpu": "1m", "memory": "1Mi"})
    return report


async def test_a_worker_writes_and_withdraws_only_its_own_pods_metrics(server: Server) -> None:
    await make_pods(server)
    async with server.node("worker-b") as b:
        await b.create(_usage("on-b"))  # B's own report
    async with server.node("worker-a") as a:
        await a.create(_usage("on-a"))
        await a.update(_usage("on-a"))
        with pytest.raises(Forbidden) as refused:
            await a.create(_usage("on-b"))  # the attack: a forged report for B's pod (the HPA reads these)
        assert str(refused.value) == ('podmetrics.metrics.k8s.io "on-b" is forbidden: node "worker-a" can only '
                                      'write metrics of pods bound to it: pod "medium/on-b" is bound to node '
                                      '"worker-b"')
        with pytest.raises(Forbidden, match='can only write metrics of pods bound to it'):
            await a.update(_usage("on-b"))
        with pytest.raises(Forbidden, match='can only delete metrics of pods bound to it: pod "medium/on-b" is '
                                            'bound to node "worker-b"'):
            await a.delete(metrics_pb2.PodMetrics, "on-b", NS)  # the attack: blind `top` and the HPA to B's pod
        with pytest.raises(Forbidden, match='pod "medium/ghost" is not found'):
            await a.create(_usage("ghost"))
        await a.delete(metrics_pb2.PodMetrics, "on-a", NS)  # its own: withdrawn
    async with server.admin() as admin:
        assert (await admin.get(metrics_pb2.PodMetrics, "on-b", NS)).containers[0].usage["cpu"] == "1m"
        # A pod deleted while its report is still there: its node withdraws the report afterwards.
        await admin.delete(core_pb2.Pod, "on-b", NS, grace_period_seconds=0)
    async with server.node("worker-b") as b:
        await b.delete(metrics_pb2.PodMetrics, "on-b", NS)


# ---------------------------------------------------------------- 10: the audit log


async def test_the_audit_log_records_secret_reads_and_dry_runs_but_never_a_value(server: Server) -> None:
    value = "hunter2-correct-horse-battery"
    async with server.admin() as admin:
        ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = "audit-secrets"
        await admin.create(ns)
        secret = manifest.from_dict({"apiVersion": "v1", "kind": "Secret",
                                     "metadata": {"name": "db", "namespace": "audit-secrets",
                                                  "annotations": {"note": value}},
                                     "stringData": {"password": value}})
        await admin.create(secret)
        assert (await admin.get(core_pb2.Secret, "db", "audit-secrets")).data["password"] == value.encode()
        await admin.list(core_pb2.Secret, "audit-secrets")
        await admin.list(core_pb2.ConfigMap, "audit-secrets")  # an ordinary read: not recorded
        trial = manifest.from_dict({"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": "trial", "namespace": "audit-secrets"}})
        await admin.create(trial, dry_run=True)
        await admin.create(trial)
    async with server.client_as("mallory") as mallory:
        with pytest.raises(Forbidden):
            await mallory.get(core_pb2.Secret, "db", "audit-secrets")

    raw = server.audit_log.read_bytes()
    assert value.encode() not in raw  # neither the data nor the annotation: records have no bodies
    mine = [r for r in server.records() if r["namespace"] == "audit-secrets"]
    seen = {(r["user"], r["verb"], r["resource"], r["name"], r["result"]) for r in mine}
    assert {("admin", "create", "secrets", "db", "OK"), ("admin", "get", "secrets", "db", "OK"),
            ("admin", "list", "secrets", "", "OK"), ("mallory", "get", "secrets", "db", "Forbidden")} <= seen
    assert not any(r["verb"] == "list" and r["resource"] == "configmaps" for r in mine)
    trials = [r for r in mine if r["name"] == "trial"]
    assert [r.get("dryRun", False) for r in trials] == [True, False]
    assert stat.S_IMODE(os.stat(server.audit_log).st_mode) == 0o600


def test_the_audit_log_stays_private_through_rotation(tmp_path: Path) -> None:
    from controlplane.apiserver.audit import AuditLog
    from controlplane.apiserver.auth import Attributes, UserInfo

    old_umask = os.umask(0o022)  # what a daemon usually runs with: new files 0644 unless asked otherwise
    try:
        log = AuditLog(tmp_path / "audit" / "audit.log", max_bytes=400, backups=2)
        attrs = Attributes(UserInfo("ann", ("devs",)), "get", "secrets", "web", "tls", "", "")
        for _ in range(20):
            log.record(attrs, "OK", 0.0)
    finally:
        os.umask(old_umask)
    files = sorted(p.name for p in (tmp_path / "audit").iterdir())
    assert files == ["audit.log", "audit.log.1", "audit.log.2"]
    assert {stat.S_IMODE(os.stat(tmp_path / "audit" / f).st_mode) for f in files} == {0o600}
    assert stat.S_IMODE(os.stat(tmp_path / "audit").st_mode) == 0o700


def test_cluster_up_runs_the_apiserver_with_an_audit_log() -> None:
    from provision import components

    plan = components.ClusterPlan("t", "10.9.0.1", (components.NodePlan("m", "10.9.0.1", "10.244.0.0/24", True),),
                                  "10.244.0.0/16", "https://127.0.0.1:2379", Path("/etc/flotilla"))
    argv = components.apiserver_argv(plan)
    assert argv[argv.index("--audit-log-path") + 1] == "/etc/flotilla/audit/audit.log"
    assert argv[argv.index("--audit-log-maxsize") + 1] == "100"
    assert argv[argv.index("--audit-log-maxbackup") + 1] == "5"


# ---------------------------------------------------------------- 8: what `cluster up` prints


def test_cluster_up_prints_how_to_make_a_token_never_a_live_one() -> None:
    from client import bootstrap
    from provision import phases

    token = bootstrap.generate_token()
    command = phases.JoinCommand("10.9.0.1:6444", str(token), "sha256:00")
    detail = phases.join_detail(2)
    assert token.secret not in detail and str(command) not in detail
    assert detail == ("2 workers joined with a bootstrap token; to add a node: "
                      "kctl token create --print-join-command --node <name>")
    assert phases.JOIN_TOKEN_TTL.total_seconds() == 3600  # `up`'s own token; `kctl token create` keeps 24 h
    secret = bootstrap.token_secret(token, ttl=phases.JOIN_TOKEN_TTL, node_names=("w1", "w2"))
    assert bootstrap.node_names_of(secret) == ["w1", "w2"]
    with pytest.raises(ValueError, match="must be a lowercase DNS subdomain"):
        bootstrap.token_secret(token, ttl=None, node_names=("Bad_Name",))
