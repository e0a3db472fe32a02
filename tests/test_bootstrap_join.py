"""Joining a node, told as stories: a token, a pinned CA, a certificate request, a node identity.

Given a TLS apiserver that serves its chain (serving certificate + CA) and takes
bootstrap tokens on its token port, and a controller manager running the CSR
approver, the CSR signer (with the cluster CA) and the token cleaner, speaking
as `system:kube-controller-manager` over mTLS:

- `kctl token create --print-join-command` prints a `kctl join` line that, run
  on a new node, writes a bootstrap kubeconfig; the wrong pin writes nothing;
- the kubelet's bootstrap turns that into a client certificate for
  `system:node:<n>`, which may update its own Node and no other;
- a bootstrap token may ask for certificates and do nothing else, cannot
  approve its own request, and stops working (then disappears) once expired;
- a request for another signer waits until `kctl certificate approve`;
- a token made for a node (`--node NAME`) obtains that node's identity and no
  other's (issue 20: a leaked join token cannot mint a running node's identity);
- a request for `client auth` alone gets a valid certificate (no empty KeyUsage)
  that completes a TLS handshake with the apiserver.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import stat
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from click.testing import CliRunner

from client import Client, bootstrap, certificates
from client import config as clientconfig
from kctl.main import cli
from nodeagent.kubelet import bootstrap as kubelet_bootstrap
from proto import certificates_pb2, core_pb2
from proto.errors import ApiError, Forbidden, NotFound, Unauthorized
from provision.processes import Etcd, Process, free_port, start_apiserver

CSR = certificates_pb2.CertificateSigningRequest


@dataclass
class Cluster:
    secure: str  # mTLS port: client certificates
    tokens: str  # token port: bearer and bootstrap tokens
    ca: certificates.KeyPair
    admin_kubeconfig: Path

    def client_as(self, user: str, *groups: str) -> Client:
        cert = certificates.create_client_cert(self.ca, user, groups)
        return Client(self.secure, credentials=grpc.ssl_channel_credentials(self.ca.cert_pem, cert.key_pem,
                                                                            cert.cert_pem), timeout=10)

    def token_client(self, token: str) -> Client:
        return Client(self.tokens, credentials=grpc.ssl_channel_credentials(self.ca.cert_pem), token=token,
                      timeout=10)

    def kctl(self, *args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["--kubeconfig", str(self.admin_kubeconfig), *args])
        return result.exit_code, result.output


def _kubeconfig(path: Path, server: str, ca: certificates.KeyPair, user: str,
                *groups: str) -> Path:
    credentials = certificates.create_client_cert(ca, user, groups)
    path.write_text(certificates.kubeconfig("test", server, ca.cert_pem, user, credentials))
    return path


@pytest.fixture(scope="module")
def cluster(etcd: Etcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder: Path = tmp_path_factory.mktemp("join")
    ca = certificates.create_ca()
    ca_crt, ca_key = ca.write(folder, "ca")
    serving = certificates.create_serving_cert(ca, "flotilla-apiserver", ["127.0.0.1", "localhost"])
    serving = certificates.with_chain(serving, ca)
    crt, key = serving.write(folder, "apiserver")
    secure, tokens = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    server = start_apiserver(etcd.url, folder, extra=[
        "--secure-listen", secure, "--token-listen", tokens, "--tls-cert-file", str(crt),
        "--tls-private-key-file", str(key), "--client-ca-file", str(ca_crt), "--enable-bootstrap-token-auth",
        "--authorization-mode", "RBAC"])
    cm_config = _kubeconfig(folder / "controller-manager.conf", secure, ca, "system:kube-controller-manager")
    manager = Process("controller-manager", [
        sys.executable, "-m", "controlplane.controllers.main", "--kubeconfig", str(cm_config), "--server", secure,
        "--controllers", "csrapproving,csrsigning,tokencleaner", "--leader-elect", "false",
        "--cluster-signing-cert-file", str(ca_crt), "--cluster-signing-key-file", str(ca_key)],
        folder / "controller-manager.log")
    manager.start()
    admin = _kubeconfig(folder / "admin.conf", secure, ca, "kubernetes-admin", "system:masters")
    yield Cluster(secure, tokens, ca, admin)
    manager.stop()
    server.process.stop()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def kctl(cluster: Cluster, *args: str) -> tuple[int, str]:
    """kctl runs its own event loop: give it a thread."""
    return await asyncio.to_thread(cluster.kctl, *args)


async def join_command(cluster: Cluster, *extra: str) -> list[str]:
    code, out = await kctl(cluster, "token", "publish-cluster-info", "--api-server", cluster.secure,
                           "--bootstrap-server", cluster.tokens)
    assert code == 0, out
    code, out = await kctl(cluster, "token", "create", "--print-join-command", *extra)
    assert code == 0, out
    line = out.strip()
    assert re.fullmatch(rf"kctl join {re.escape(cluster.tokens)} --token [a-z0-9]{{6}}\.[a-z0-9]{{16}} "
                        r"--discovery-token-ca-cert-hash sha256:[0-9a-f]{64}", line), line
    args = line.split()[1:]
    await token_usable(cluster, args[args.index("--token") + 1])
    return args


async def token_usable(cluster: Cluster, token: str) -> None:
    """A new token reaches the apiserver's authenticator through its watch: allow it a moment."""
    async with cluster.token_client(token) as joiner:
        async def accepted() -> bool:
            try:
                await joiner.list(CSR)
                return True
            except Unauthorized:
                return False
        await eventually(accepted, f"token {token[:6]} to be accepted")


def run_join(args: list[str], kubeconfig: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [*args, "--bootstrap-kubeconfig", str(kubeconfig)])
    return result.exit_code, result.output


async def test_join_with_the_right_pin_writes_a_bootstrap_kubeconfig(cluster: Cluster, tmp_path: Path) -> None:
    args = await join_command(cluster, "--description", "for node-a")
    target = tmp_path / "etc" / "bootstrap-kubeconfig"
    code, out = await asyncio.to_thread(run_join, args, target)
    assert code == 0, out
    assert f"talk to {cluster.secure}" in out  # cluster-info named the client-certificate port
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    config = clientconfig.load(kubeconfig=target)
    assert config.server == cluster.tokens and config.token == args[args.index("--token") + 1]
    assert config.certificate_authority_data == cluster.ca.cert_pem
    code, listing = await kctl(cluster, "token", "list")
    assert code == 0 and "for node-a" in listing and bootstrap.DEFAULT_EXTRA_GROUP in listing
    assert listing.split("\n")[0].split() == ["TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA", "GROUPS"]


async def test_join_with_a_wrong_pin_is_refused_and_writes_nothing(cluster: Cluster, tmp_path: Path) -> None:
    args = await join_command(cluster)
    pin = args.index("--discovery-token-ca-cert-hash") + 1
    args[pin] = "sha256:" + "0" * 64
    target = tmp_path / "bootstrap-kubeconfig"
    code, out = await asyncio.to_thread(run_join, args, target)
    assert code == 1
    assert "presented no CA matching --discovery-token-ca-cert-hash" in out
    assert certificates.ca_cert_hash(cluster.ca.cert_pem) in out  # it says what it saw
    assert not target.exists()


async def test_kubelet_bootstrap_gets_a_node_identity_limited_to_its_own_node(cluster: Cluster,
                                                                             tmp_path: Path) -> None:
    bootstrap_file = tmp_path / "bootstrap-kubeconfig"
    code, out = await asyncio.to_thread(run_join, await join_command(cluster), bootstrap_file)
    assert code == 0, out
    kubeconfig = tmp_path / "kubelet.conf"
    started = time.monotonic()
    await kubelet_bootstrap.bootstrap_kubeconfig(bootstrap_file, kubeconfig, "join-node-1", timeout=20)
    print(f"TLS bootstrap took {time.monotonic() - started:.2f}s")
    assert stat.S_IMODE(os.stat(kubeconfig).st_mode) == 0o600
    config = clientconfig.load(kubeconfig=kubeconfig)
    assert config.server == cluster.secure and config.token is None
    identity = certificates.identity_of(config.client_certificate_data or b"")
    assert identity == ("system:node:join-node-1", ("system:nodes",))

    other = core_pb2.Node(api_version="v1", kind="Node")
    other.metadata.name = "join-node-other"
    async with cluster.client_as("kubernetes-admin", "system:masters") as admin:
        try:
            await admin.create(other)
        except ApiError:
            pass
        csrs = [c for c in (await admin.list(CSR)).items if c.spec.username.startswith("system:bootstrap:")]
    assert any(bootstrap.csr_condition(c, "Approved") and c.status.certificate for c in csrs)
    async with config.client() as kubelet:
        node = core_pb2.Node(api_version="v1", kind="Node")
        node.metadata.name = "join-node-1"
        created = await kubelet.create(node)
        created.metadata.labels["joined"] = "yes"
        assert (await kubelet.update(created)).metadata.labels["joined"] == "yes"
        theirs = await kubelet.get(core_pb2.Node, "join-node-other")
        theirs.metadata.labels["hijacked"] = "yes"
        with pytest.raises(Forbidden, match="may only modify its own Node"):
            await kubelet.update(theirs)
    # A second start finds the kubeconfig and does not ask again.
    assert await kubelet_bootstrap.bootstrap_kubeconfig(tmp_path / "gone", kubeconfig, "join-node-1") == kubeconfig
    code, table = await kctl(cluster, "get", "csr")
    assert code == 0 and table.split("\n")[0].split() == ["NAME", "AGE", "SIGNERNAME", "REQUESTOR",
                                                           "REQUESTEDDURATION", "CONDITION"]
    assert "Approved,Issued" in table


async def test_a_bootstrap_token_may_only_ask_for_certificates(cluster: Cluster) -> None:
    token = (await join_command(cluster))[3]
    async with cluster.token_client(token) as joiner:
        await joiner.list(CSR)  # allowed: system:node-bootstrapper
        with pytest.raises(Forbidden, match=r'User "system:bootstrap:[a-z0-9]{6}" cannot list resource "pods"'):
            await joiner.list(core_pb2.Pod, "default")
        with pytest.raises(Forbidden):
            await joiner.list(core_pb2.Secret, "kube-system")
        with pytest.raises(Forbidden):
            await joiner.get(core_pb2.ConfigMap, "kube-proxy", bootstrap.CLUSTER_INFO_NAMESPACE)

        # Its own request for a client certificate as somebody else: stamped with who really asked,
        # and the requester cannot approve it.
        request_pem = certificates.create_csr("alice", ("developers",))[0]
        csr = bootstrap.new_csr(request_pem, bootstrap.SIGNER_KUBE_APISERVER_CLIENT, name="join-alice")
        csr.spec.username = "system:admin"  # a lie the apiserver must ignore
        created = await joiner.create(csr)
        assert created.spec.username == f"system:bootstrap:{token[:6]}"
        assert bootstrap.BOOTSTRAPPERS_GROUP in created.spec.groups
        bootstrap.add_csr_condition(created, "Approved", "SelfService", "approving myself")
        with pytest.raises(Forbidden, match="certificatesigningrequests/approval"):
            await joiner.update_approval(created)


async def test_a_csr_for_another_signer_waits_for_a_person(cluster: Cluster) -> None:
    csr = bootstrap.new_csr(certificates.create_csr("bob", ("developers",))[0], bootstrap.SIGNER_KUBE_APISERVER_CLIENT,
                            name="join-bob")
    csr.spec.expiration_seconds = 3600
    async with cluster.client_as("bob") as bob:
        with pytest.raises(Forbidden):
            await bob.create(csr)  # bob himself may not ask: he has no role
    async with cluster.client_as("kubernetes-admin", "system:masters") as admin:
        await admin.create(csr)
        await asyncio.sleep(1.5)  # the approver and signer have seen it by now, and must leave it alone
        pending = await admin.get(CSR, "join-bob")
        assert not pending.status.conditions and not pending.status.certificate
        code, out = await kctl(cluster, "get", "csr", "join-bob")
        assert code == 0 and out.split("\n")[1].split()[-1] == "Pending" and "60m" in out

        code, out = await kctl(cluster, "certificate", "approve", "join-bob")
        assert (code, out) == (0, "certificatesigningrequest.certificates.k8s.io/join-bob approved\n")

        async def issued() -> bool:
            return bool((await admin.get(CSR, "join-bob")).status.certificate)
        await eventually(issued, "the signer to issue join-bob")
        signed = await admin.get(CSR, "join-bob")
    assert certificates.identity_of(signed.status.certificate) == ("bob", ("developers",))
    lifetime = x509_lifetime(signed.status.certificate)
    assert 3500 < lifetime <= 3600 + 300  # expirationSeconds honoured (plus the signer's clock-skew margin)
    code, described = await kctl(cluster, "describe", "csr", "join-bob")
    assert code == 0 and "Approved,Issued" in described and "Common Name:" in described and "bob" in described
    code, out = await kctl(cluster, "certificate", "deny", "join-bob")
    assert code == 1 and "already approved" in out


def x509_lifetime(pem: bytes) -> float:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    return (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds()


async def test_an_expired_token_is_refused_and_cleaned_away(cluster: Cluster) -> None:
    import datetime as dt

    code, token = await kctl(cluster, "token", "create", "--ttl", "4s", "--description", "short-lived")
    assert code == 0, token
    token = token.strip()
    await token_usable(cluster, token)  # valid while it lasts
    async with cluster.client_as("kubernetes-admin", "system:masters") as admin:
        secret = await admin.get(core_pb2.Secret, f"bootstrap-token-{token[:6]}", "kube-system")
    expires = bootstrap.expiration(secret)
    assert expires is not None
    await asyncio.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
    async with cluster.token_client(token) as joiner:
        with pytest.raises(Unauthorized):
            await joiner.list(CSR)
    async with cluster.client_as("kubernetes-admin", "system:masters") as admin:
        async def cleaned() -> bool:
            try:
                await admin.get(core_pb2.Secret, f"bootstrap-token-{token[:6]}", "kube-system")
                return False
            except NotFound:
                return True
        await eventually(cleaned, "the token cleaner to delete the expired token")


async def test_token_secret_has_kubernetes_format(cluster: Cluster) -> None:
    code, token = await kctl(cluster, "token", "create", "--ttl", "1h", "--groups",
                             "system:bootstrappers:workers")
    assert code == 0, token
    token = token.strip()
    await token_usable(cluster, token)
    async with cluster.client_as("kubernetes-admin", "system:masters") as admin:
        secret = await admin.get(core_pb2.Secret, f"bootstrap-token-{token[:6]}", "kube-system")
    assert secret.type == "bootstrap.kubernetes.io/token"
    data = {k: v.decode() for k, v in secret.data.items()}
    assert data["token-id"] == token[:6] and data["token-secret"] == token[7:]
    assert data["usage-bootstrap-authentication"] == data["usage-bootstrap-signing"] == "true"
    assert data["auth-extra-groups"] == "system:bootstrappers:workers"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["expiration"])
    code, out = await kctl(cluster, "token", "delete", token[:6])
    assert (code, out) == (0, f'bootstrap token "{token[:6]}" deleted\n')
    async with cluster.token_client(token) as gone:
        async def refused() -> bool:
            try:
                await gone.list(CSR)
                return False
            except Unauthorized:
                return True
        await eventually(refused, "the deleted token to stop working")


def test_a_csr_in_yaml_carries_its_request_in_base64() -> None:
    from proto import manifest

    request, _ = certificates.create_csr("carol")
    csr = bootstrap.new_csr(request, bootstrap.SIGNER_KUBE_APISERVER_CLIENT, name="carol")
    data = manifest.to_dict(csr)
    assert base64.b64decode(data["spec"]["request"]) == request
    assert data["spec"]["signerName"] == bootstrap.SIGNER_KUBE_APISERVER_CLIENT
    assert yaml.safe_dump(data)


async def test_a_bad_certificate_request_is_invalid(cluster: Cluster) -> None:
    from proto.errors import Invalid

    csr = CSR(api_version="certificates.k8s.io/v1", kind="CertificateSigningRequest")
    csr.metadata.name = "join-junk"
    csr.spec.request = b"-----BEGIN CERTIFICATE REQUEST-----\njunk\n-----END CERTIFICATE REQUEST-----\n"
    csr.spec.signer_name = "kubernetes.io/made-up"
    csr.spec.usages.append("client auth")
    async with cluster.client_as("kubernetes-admin", "system:masters") as admin:
        with pytest.raises(Invalid) as refused:
            await admin.create(csr)
    assert "spec.request: Invalid value" in str(refused.value)
    assert 'spec.signerName: Unsupported value: "kubernetes.io/made-up"' in str(refused.value)


def _token_secret(expires_in: float, *usages: str) -> tuple[str, core_pb2.Secret]:
    import datetime as dt

    token = bootstrap.generate_token()
    secret = bootstrap.token_secret(token, ttl=dt.timedelta(seconds=1), usages=usages or bootstrap.USAGES,
                                    now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in - 1))
    secret.metadata.namespace = "kube-system"
    return str(token), secret


def test_the_authenticator_checks_expiry_usage_and_secret_itself() -> None:
    from controlplane.apiserver.auth import BootstrapTokens

    tokens = BootstrapTokens()
    live, live_secret = _token_secret(3600)
    expired, expired_secret = _token_secret(-5)
    signing_only, signing_secret = _token_secret(3600, "signing")
    for secret in (live_secret, expired_secret, signing_secret):
        tokens.observe("ADDED", secret)
    user = tokens.lookup(live)
    assert user is not None and user.name == f"system:bootstrap:{live[:6]}"
    assert user.groups[:2] == ("system:bootstrappers", bootstrap.DEFAULT_EXTRA_GROUP)
    assert tokens.lookup(live[:7] + "x" * 16) is None  # the right id with a wrong secret
    assert tokens.lookup("not-a-token") is None
    with pytest.raises(Unauthorized, match="has expired"):
        tokens.lookup(expired)
    with pytest.raises(Unauthorized, match="may not be used for authentication"):
        tokens.lookup(signing_only)
    tokens.observe("DELETED", live_secret)
    assert tokens.lookup(live) is None


def _node_csr(requester: str, groups: tuple[str, ...], cn: str, orgs: tuple[str, ...] = ("system:nodes",),
              signer: str = bootstrap.SIGNER_KUBELET_CLIENT) -> CSR:
    csr = bootstrap.new_csr(certificates.create_csr(cn, orgs)[0], signer)
    csr.spec.username = requester
    csr.spec.groups.extend(groups)
    return csr


def test_the_approver_approves_only_kubelet_client_requests_from_bootstrappers_or_the_node_itself() -> None:
    from controlplane.controllers.csrapproving import auto_approval

    joiner = ("system:bootstrap:abcdef", ("system:bootstrappers", "system:authenticated"))
    any_node = bootstrap.token_secret(bootstrap.parse_token("abcdef.0123456789abcdef"), ttl=None)
    for_n1 = bootstrap.token_secret(bootstrap.parse_token("abcdef.0123456789abcdef"), ttl=None, node_names=("n1",))
    assert auto_approval(_node_csr(*joiner, "system:node:n1"), any_node) is not None
    assert auto_approval(_node_csr(*joiner, "system:node:n1"), for_n1) is not None
    assert auto_approval(_node_csr(*joiner, "system:node:n2"), for_n1) is None  # not the token's node
    assert auto_approval(_node_csr(*joiner, "system:node:n1")) is None  # the token is gone: nothing vouches
    assert auto_approval(_node_csr("system:node:n1", ("system:nodes",), "system:node:n1")) is not None
    assert auto_approval(_node_csr("system:node:n2", ("system:nodes",), "system:node:n1")) is None  # not its own
    assert auto_approval(_node_csr("mallory", ("developers",), "system:node:n1")) is None
    assert auto_approval(_node_csr(*joiner, "system:node:n1", ("system:masters",)), any_node) is None
    assert auto_approval(_node_csr(*joiner, "admin"), any_node) is None
    assert auto_approval(_node_csr(*joiner, "system:node:n1", signer=bootstrap.SIGNER_KUBE_APISERVER_CLIENT),
                         any_node) is None


async def test_waiting_for_an_unapproved_certificate_ends_with_a_clear_error(cluster: Cluster) -> None:
    # An admin's request for a node certificate is not auto-approved (only bootstrappers' and the node's own).
    async with cluster.client_as("kubernetes-admin", "system:masters") as admin:
        with pytest.raises(kubelet_bootstrap.BootstrapError,
                           match=r"waiting for certificatesigningrequest node-csr-\w+ to be signed: it may need "
                                 r"`kctl certificate approve node-csr-\w+`"):
            await kubelet_bootstrap.request_certificate(admin, "join-node-2", timeout=1.0)


async def test_the_kubelet_process_bootstraps_before_it_starts(cluster: Cluster, tmp_path: Path) -> None:
    import subprocess

    bootstrap_file = tmp_path / "bootstrap-kubeconfig"
    code, out = await asyncio.to_thread(run_join, await join_command(cluster), bootstrap_file)
    assert code == 0, out
    kubeconfig = tmp_path / "kubelet.conf"
    argv = [sys.executable, "-m", "nodeagent.kubelet.main", "--node-name", "join-node-3", "--node-ip", "127.0.0.1",
            "--bootstrap-kubeconfig", str(bootstrap_file), "--kubeconfig", str(kubeconfig),
            "--containerd-socket", str(tmp_path / "no-containerd.sock"), "--root-dir", str(tmp_path / "root")]
    kubelet = Process("kubelet-bootstrap", argv, tmp_path / "kubelet.log")
    kubelet.start()
    try:
        async def written() -> bool:
            return kubeconfig.exists()
        await eventually(written, "the kubelet to write its kubeconfig")
    finally:
        kubelet.stop()
    assert clientconfig.load(kubeconfig=kubeconfig).server == cluster.secure
    assert "wrote" in (tmp_path / "kubelet.log").read_text()

    missing = await asyncio.to_thread(
        subprocess.run, [*argv[:7], "--bootstrap-kubeconfig", str(tmp_path / "none"), "--kubeconfig",
                         str(tmp_path / "none.conf")], capture_output=True, text=True, timeout=30)
    assert missing.returncode != 0
    assert "TLS bootstrap failed: neither the kubeconfig" in missing.stderr and "kctl join" in missing.stderr


async def test_a_token_for_one_node_cannot_obtain_another_nodes_identity(cluster: Cluster, tmp_path: Path) -> None:
    args = await join_command(cluster, "--node", "join-node-5")
    token = args[args.index("--token") + 1]
    async with cluster.client_as("kubernetes-admin", "system:masters") as admin:
        secret = await admin.get(core_pb2.Secret, f"bootstrap-token-{token[:6]}", "kube-system")
    assert secret.data["node-names"] == b"join-node-5"
    async with cluster.token_client(token) as joiner:
        # The attack: the token leaked from the new machine asks for a node that already runs.
        with pytest.raises(kubelet_bootstrap.BootstrapError, match=r"it may need `kctl certificate approve"):
            await kubelet_bootstrap.request_certificate(joiner, "join-node-running", timeout=2.0)
        # The machine it was made for gets its identity.
        cert_pem, _ = await kubelet_bootstrap.request_certificate(joiner, "join-node-5", timeout=15.0)
    assert certificates.identity_of(cert_pem) == ("system:node:join-node-5", ("system:nodes",))
    async with cluster.client_as("kubernetes-admin", "system:masters") as admin:
        stolen = [c for c in (await admin.list(CSR)).items
                  if c.spec.username == f"system:bootstrap:{token[:6]}" and not c.status.certificate]
    assert len(stolen) == 1 and not stolen[0].status.conditions  # left Pending, for a person
    code, out = await kctl(cluster, "token", "create", "--node", "Bad_Name")
    assert code == 1 and "must be a lowercase DNS subdomain" in out


async def test_a_client_auth_only_certificate_is_valid_and_opens_a_tls_session(cluster: Cluster) -> None:
    from cryptography import x509

    request_pem, key_pem = certificates.create_csr("dave", ("developers",))
    csr = bootstrap.new_csr(request_pem, bootstrap.SIGNER_KUBE_APISERVER_CLIENT, ("client auth",), name="join-dave")
    async with cluster.client_as("kubernetes-admin", "system:masters") as admin:
        await admin.create(csr)
        code, out = await kctl(cluster, "certificate", "approve", "join-dave")
        assert code == 0, out

        async def issued() -> bool:
            return bool((await admin.get(CSR, "join-dave")).status.certificate)
        await eventually(issued, "the signer to issue join-dave")
        cert_pem = (await admin.get(CSR, "join-dave")).status.certificate
    cert = x509.load_pem_x509_certificate(cert_pem)
    with pytest.raises(x509.ExtensionNotFound):  # no KeyUsage at all rather than an empty, critical one
        cert.extensions.get_extension_for_class(x509.KeyUsage)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    # The handshake completes and the apiserver knows dave: RBAC, not TLS, is what answers.
    credentials = grpc.ssl_channel_credentials(cluster.ca.cert_pem, key_pem, cert_pem)
    async with Client(cluster.secure, credentials=credentials, timeout=10) as dave:
        with pytest.raises(Forbidden, match='User "dave" cannot list resource "pods"'):
            await dave.list(core_pb2.Pod, "default")


async def test_cluster_up_labels_roles_and_deletes_its_token_after_the_join(cluster: Cluster) -> None:
    from provision import components, phases

    plan = components.ClusterPlan("t", "127.0.0.1", (
        components.NodePlan("role-cp", "127.0.0.1", "10.244.0.0/24", control_plane=True),
        components.NodePlan("role-w", "127.0.0.2", "10.244.1.0/24")), "10.244.0.0/16", "http://127.0.0.1:2379",
        Path("/nonexistent"))
    token = bootstrap.generate_token()
    async with cluster.client_as("kubernetes-admin", "system:masters") as admin:
        for planned in plan.nodes:
            node = core_pb2.Node(api_version="v1", kind="Node")
            node.metadata.name = planned.name
            await admin.create(node)
        await admin.create(bootstrap.token_secret(token, ttl=phases.JOIN_TOKEN_TTL, node_names=("role-w",)))
    await token_usable(cluster, str(token))

    assert await asyncio.to_thread(phases.label_node_roles, cluster.admin_kubeconfig, plan)
    await asyncio.to_thread(phases.delete_token, cluster.admin_kubeconfig, token)
    await asyncio.to_thread(phases.delete_token, cluster.admin_kubeconfig, token)  # gone already: fine
    async with cluster.client_as("kubernetes-admin", "system:masters") as admin:
        roles = {n.metadata.name: sorted(k for k in n.metadata.labels if k.startswith("node-role.kubernetes.io/"))
                 for n in (await admin.list(core_pb2.Node)).items if n.metadata.name.startswith("role-")}
        assert roles == {"role-cp": ["node-role.kubernetes.io/control-plane"],
                         "role-w": ["node-role.kubernetes.io/worker"]}
        with pytest.raises(NotFound):
            await admin.get(core_pb2.Secret, token.secret_name, "kube-system")
    async with cluster.token_client(str(token)) as joiner:
        async def refused() -> bool:
            try:
                await joiner.list(CSR)
                return False
            except Unauthorized:
                return True
        await eventually(refused, "the deleted join token to stop working")
