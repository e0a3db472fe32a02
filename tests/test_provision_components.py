"""What a cluster's components are given (provision/components.py), checked against the real daemons.

Given a cluster plan, the PKI names the apiserver by every address a client
dials, each kubeconfig carries the CA and an identity RBAC knows, and each
daemon's argv is accepted by that daemon's own flag parser. Then, with an
apiserver started from exactly that argv (on loopback, so no root), each
component's kubeconfig may do its job and no more, a caller without
credentials is refused as unauthenticated, and the kubelet API over TLS takes
the apiserver's client certificate and refuses a node's.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509

from client import Client, bootstrap, certificates
from client import config as clientconfig
from client.informer import Store
from controlplane.apiserver.proxy import KubeletClientTLS
from nodeagent.kubelet.runtime import Runtime
from nodeagent.kubelet.server import ServingTLS, serve
from proto import core_pb2, kubelet_pb2, kubelet_pb2_grpc
from proto.errors import AlreadyExists, Forbidden, Unauthorized
from provision import components
from provision.processes import Etcd, Process, free_port, wait_until


def make_plan(config_dir: Path, *, master: str = "192.168.73.1", api_port: int = 16473, token_port: int = 16474,
              grpc_port: int = 16475, etcd_url: str = "http://127.0.0.1:12473") -> components.ClusterPlan:
    nodes = (components.NodePlan("tls-master", master, "10.73.0.0/24", control_plane=True),
             components.NodePlan("tls-worker-1", "192.168.73.101" if master != "127.0.0.1" else "127.0.0.1",
                                 "10.73.1.0/24"),
             components.NodePlan("tls-worker-2", "192.168.73.102" if master != "127.0.0.1" else "127.0.0.1",
                                 "10.73.2.0/24"))
    return components.ClusterPlan("tls", master, nodes, "10.73.0.0/16", etcd_url, config_dir, api_port=api_port,
                                  token_port=token_port, grpc_port=grpc_port, lb_pool="192.168.73.200-192.168.73.250")


def sans(cert_pem: bytes) -> set[str]:
    ext = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return {*ext.value.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in ext.value.get_values_for_type(x509.IPAddress))}


def test_apiserver_certificate_names_every_address_and_chains_to_the_ca(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    files = components.bundle(plan).files
    chain = x509.load_pem_x509_certificates(files["pki/apiserver.crt"])
    ca = x509.load_pem_x509_certificate(files["pki/ca.crt"])
    assert len(chain) == 2 and chain[1] == ca  # the CA rides along, so a client can fetch it and pin it
    chain[0].verify_directly_issued_by(ca)
    assert {"192.168.73.1", "127.0.0.1", "localhost", "10.96.0.1", "kubernetes.default.svc.cluster.local"} \
        <= sans(files["pki/apiserver.crt"])
    assert sans(files["pki/kubelet-tls-worker-1.crt"]) == {"192.168.73.101", "tls-worker-1"}


def test_each_kubeconfig_carries_the_ca_and_its_own_identity(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    bundle = components.bundle(plan)
    bundle.write(tmp_path)
    expected = {"admin": ("kubernetes-admin", ("system:masters",)),
                "scheduler": ("system:kube-scheduler", ()),
                "controller-manager": ("system:kube-controller-manager", ()),
                "proxy": ("system:kube-proxy", ()), "dns": ("system:coredns", ()),
                "kubelet-tls-worker-2": ("system:node:tls-worker-2", ("system:nodes",))}
    for name, identity in expected.items():
        loaded = clientconfig.load(kubeconfig=tmp_path / "kubeconfigs" / f"{name}.conf")
        assert loaded.server == "192.168.73.1:16475" and loaded.url == "https://192.168.73.1:16473"
        assert loaded.certificate_authority_data == bundle.files["pki/ca.crt"]
        assert loaded.client_certificate_data is not None
        assert certificates.identity_of(loaded.client_certificate_data) == identity, name
    # Private keys, and kubeconfigs that carry one, are the owner's only.
    assert all((tmp_path / p).stat().st_mode & 0o077 == 0 for p in ("pki/ca.key", "kubeconfigs/admin.conf"))


def test_token_joined_nodes_get_no_minted_kubelet_credentials(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    files = components.bundle(plan, token_joined=["tls-worker-1"]).files
    assert "kubeconfigs/kubelet-tls-worker-1.conf" not in files  # it asks for its own by a CSR
    assert "kubeconfigs/kubelet-tls-master.conf" in files and "pki/kubelet-tls-worker-1.crt" in files
    with pytest.raises(components.PlanError, match="no node tls-worker-9"):
        components.bundle(plan, token_joined=["tls-worker-9"])


def test_an_existing_ca_is_kept(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    components.bundle(plan).write(tmp_path)
    ca = components.read_ca(tmp_path)
    assert ca is not None
    again = components.bundle(plan, ca)
    assert again.files["pki/ca.crt"] == ca.cert_pem
    x509.load_pem_x509_certificate(again.files["pki/apiserver.crt"]).verify_directly_issued_by(
        x509.load_pem_x509_certificate(ca.cert_pem))


def test_every_argv_is_accepted_by_its_daemon(tmp_path: Path) -> None:
    from controlplane.apiserver import main as apiserver
    from controlplane.controllers import main as controllers
    from controlplane.dns import main as dns
    from controlplane.scheduler import main as scheduler
    from nodeagent.kubelet import main as kubelet
    from nodeagent.proxy import main as proxy

    plan = make_plan(tmp_path)
    argvs = components.control_plane_argvs(plan)
    opts = apiserver.parse_args(argvs["apiserver"][3:])
    apiserver.check_options(opts)
    assert (opts.secure_listen, opts.token_listen, opts.listen) == ("192.168.73.1:16475", "192.168.73.1:16474", "")
    assert opts.https_listen == "192.168.73.1:16473"  # the Kubernetes API over HTTPS, kubectl's `server`
    assert opts.kubelet_client_certificate.endswith("apiserver-kubelet-client.crt")
    assert opts.enable_bootstrap_token_auth and opts.authorization_mode == "RBAC"
    cm = controllers.parse_args(argvs["controller-manager"][3:])
    assert cm.server == "192.168.73.1:16475" and cm.cluster_signing_key_file == plan.path("pki/ca.key")
    assert len(cm.lb_pool) == 51 and "service-lb" in controllers.enabled(cm.controllers)
    for module, identity in ((scheduler, components.SCHEDULER), (dns, components.DNS)):
        assert module.parse_args(argvs[identity.name][3:]).kubeconfig == plan.kubeconfig_path(identity)
    master = plan.nodes[0]
    assert proxy.parse_args(components.proxy_argv(plan, master)[3:]).node_name == "tls-master"
    opts = proxy.parse_args(components.proxy_argv(plan, master, table="flotilla-proxy-tls", announce=False,
                                                  nodeport_addresses=["192.168.73.1/32"])[3:])
    assert (opts.table, opts.nodeport_addresses, opts.node_ip) == ("flotilla-proxy-tls", ["192.168.73.1/32"], None)

    settings = components.kubelet_settings(plan, master)
    config_file = tmp_path / "kubelet.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    config = kubelet.parse_args(components.kubelet_argv(plan, master, config_file=str(config_file),
                                                        containerd_socket="/run/x.sock")[3:])
    assert config.register_with_taints == ["node-role.kubernetes.io/control-plane:NoSchedule"]
    assert config.node_role == "control-plane" and config.server == "192.168.73.1:16475"
    assert config.tls_cert_file.endswith("pki/kubelet-tls-master.crt") and config.client_ca_file


def test_cluster_info_tells_joining_nodes_where_to_go_and_what_to_trust(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    ca = components.bundle(plan).ca()
    manifest = components.cluster_info_manifest(plan, ca.cert_pem)
    assert (manifest["metadata"]["namespace"], manifest["metadata"]["name"]) == ("kube-public", "cluster-info")
    info = core_pb2.ConfigMap(data=manifest["data"])
    assert bootstrap.read_cluster_info(info) == ("https://192.168.73.1:16475", ca.cert_pem)
    assert info.data[bootstrap.CLUSTER_INFO_BOOTSTRAP_SERVER_KEY] == "192.168.73.1:16474"


def test_a_bad_plan_is_refused_with_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(components.PlanError, match="outside the pod network"):
        components.ClusterPlan("x", "192.168.73.1", (components.NodePlan("n", "192.168.73.2", "10.1.0.0/24"),),
                               "10.73.0.0/16", "http://127.0.0.1:1", tmp_path)
    with pytest.raises(components.PlanError, match="planned twice"):
        node = components.NodePlan("n", "192.168.73.2", "10.73.1.0/24")
        components.ClusterPlan("x", "192.168.73.1", (node, node), "10.73.0.0/16", "http://127.0.0.1:1", tmp_path)


# ---------------------------------------------------------------- against a running apiserver

@pytest.fixture(scope="module")
def tls_cluster(own_etcd: Etcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[components.ClusterPlan]:
    folder: Path = tmp_path_factory.mktemp("components")
    plan = make_plan(folder, master="127.0.0.1", api_port=free_port(), token_port=free_port(),
                     grpc_port=free_port(), etcd_url=own_etcd.url)
    components.bundle(plan).write(folder)
    proc = Process("apiserver", components.apiserver_argv(plan), folder / "apiserver.log")
    proc.start()

    def answers() -> bool:
        import socket
        with socket.create_connection(("127.0.0.1", plan.grpc_port), timeout=0.5):
            return True
    wait_until(answers, "TLS apiserver", proc, timeout=60)
    yield plan
    proc.stop()


def read(plan: components.ClusterPlan, relative: str) -> bytes:
    return Path(plan.path(relative)).read_bytes()


def client_of(plan: components.ClusterPlan, identity: components.Identity) -> Client:
    return clientconfig.load(kubeconfig=plan.kubeconfig_path(identity)).client(timeout=10)


@pytest.mark.parametrize(("identity", "allowed", "denied"), [
    (components.SCHEDULER, [("list", "pods"), ("create", "pods/binding"), ("update", "leases")],
     [("delete", "nodes")]),
    (components.PROXY, [("watch", "services"), ("list", "endpoints"), ("update", "leases")],
     [("update", "services")]),
    (components.DNS, [("watch", "services"), ("watch", "endpoints")], [("list", "secrets")]),
    (components.CONTROLLER_MANAGER, [("update", "deployments"), ("create", "pods"), ("update", "services/status")],
     []),
])
async def test_each_component_may_do_its_job_and_no_more(tls_cluster: components.ClusterPlan,
                                                          identity: components.Identity,
                                                          allowed: list[tuple[str, str]],
                                                          denied: list[tuple[str, str]]) -> None:
    async with client_of(tls_cluster, identity) as client:
        for verb, resource in allowed:
            assert (await client.review_access(verb, resource, "default")).allowed, (identity.user, verb, resource)
        for verb, resource in denied:
            assert not (await client.review_access(verb, resource, "default")).allowed, (identity.user, verb, resource)


async def test_the_standalone_lb_controller_identity_may_write_service_status_only(
        tls_cluster: components.ClusterPlan) -> None:
    """`flotilla-lb-controller` run on its own (not in the controller manager) as system:lb-controller."""
    async with client_of(tls_cluster, components.ADMIN) as admin:
        async def allowed(verb: str, resource: str) -> bool:
            return (await admin.review_access(verb, resource, "default", user="system:lb-controller")).allowed
        assert await allowed("watch", "services") and await allowed("update", "services/status")
        assert not await allowed("update", "services") and not await allowed("list", "secrets")


async def test_a_node_kubeconfig_cannot_touch_another_node(tls_cluster: components.ClusterPlan) -> None:
    async with client_of(tls_cluster, components.ADMIN) as admin:
        for name in ("tls-worker-1", "tls-worker-2"):
            node = core_pb2.Node(api_version="v1", kind="Node")
            node.metadata.name = name
            try:
                await admin.create(node)
            except AlreadyExists:  # from an earlier run against this etcd
                pass
    async with client_of(tls_cluster, components.node_identity("tls-worker-1")) as worker:
        own = await worker.get(core_pb2.Node, "tls-worker-1")
        own.metadata.labels["seen"] = "yes"
        await worker.update(own)
        other = await worker.get(core_pb2.Node, "tls-worker-2")
        other.metadata.labels["hijacked"] = "yes"
        with pytest.raises(Forbidden, match="may only modify its own Node"):
            await worker.update(other)


async def test_no_credentials_is_unauthenticated(tls_cluster: components.ClusterPlan) -> None:
    ca = read(tls_cluster, "pki/ca.crt")
    async with Client(f"127.0.0.1:{tls_cluster.token_port}", credentials=grpc.ssl_channel_credentials(ca),
                      timeout=5) as anonymous:
        with pytest.raises(Unauthorized, match="anonymous"):
            await anonymous.list(core_pb2.Pod, "default")


async def test_kubelet_api_takes_the_apiservers_certificate_only(tls_cluster: components.ClusterPlan) -> None:
    plan = tls_cluster
    node = plan.node("tls-worker-1")
    settings = components.kubelet_settings(plan, node)
    tls = ServingTLS.from_files(settings["tls_cert_file"], settings["tls_private_key_file"],
                                settings["client_ca_file"])
    runtime = Runtime("/nonexistent/containerd.sock")
    server, port = await serve(runtime, Store[core_pb2.Pod](), "127.0.0.1:0", tls)
    ca = read(plan, "pki/ca.crt")
    request = kubelet_pb2.ExecRequest(namespace="default", pod="p")  # no command: refused after authorization

    async def call(credentials: grpc.ChannelCredentials) -> grpc.StatusCode:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            try:
                await kubelet_pb2_grpc.KubeletStub(channel).Exec(request, timeout=5)
            except grpc.aio.AioRpcError as err:
                return err.code()
        return grpc.StatusCode.OK

    try:
        apiserver = KubeletClientTLS(read(plan, "pki/apiserver-kubelet-client.crt"),
                                     read(plan, "pki/apiserver-kubelet-client.key"), ca)
        assert await call(apiserver.credentials()) == grpc.StatusCode.INVALID_ARGUMENT  # past authorization
        worker = clientconfig.load(kubeconfig=plan.kubeconfig_path(components.node_identity("tls-worker-2")))
        worker_credentials = worker.credentials()
        assert worker_credentials is not None
        assert await call(worker_credentials) == grpc.StatusCode.PERMISSION_DENIED
        assert await call(grpc.ssl_channel_credentials(ca)) == grpc.StatusCode.UNAVAILABLE  # no certificate
    finally:
        await server.stop(grace=0)
        await runtime.close()


def test_bundle_kubeconfigs_are_self_contained(tmp_path: Path) -> None:
    """Inline data only: a provider can copy a kubeconfig to another machine as it is."""
    files = components.bundle(make_plan(tmp_path)).files
    doc = yaml.safe_load(files["kubeconfigs/proxy.conf"])
    cluster = doc["clusters"][0]["cluster"]
    assert cluster["server"] == "https://192.168.73.1:16473"  # the Kubernetes API, as kubectl dials it
    assert cluster["extensions"] == [{"name": "flotilla.dev/grpc", "extension": {
        "server": "192.168.73.1:16475", "tokenServer": "192.168.73.1:16474"}}]  # kctl's gRPC ports
    assert base64.b64decode(cluster["certificate-authority-data"]) == files["pki/ca.crt"]
    assert set(doc["users"][0]["user"]) == {"client-certificate-data", "client-key-data"}
