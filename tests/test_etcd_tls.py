"""etcd as clusters run it: TLS only, and only the apiserver's and the backup tool's certificates open it.

Given the PKI `provision/components.py` makes for a cluster (its own etcd CA,
etcd's serving and peer pairs, the apiserver's and the backup tool's client
certificates) and etcd started with `processes.etcd_argv(..., tls)`, as `kctl
cluster up` and the SSH/Vagrant units start it: plaintext gets nothing on
either port, a TLS client without a certificate or with one the *cluster* CA
signed (an admin's, a kubelet's) is turned away, while the apiserver, given
`--etcd-cafile/--etcd-certfile/--etcd-keyfile`, serves from it, and `kctl etcd
snapshot save` takes a 0600 snapshot with the backup certificate and refuses
without it.
"""

from __future__ import annotations

import asyncio
import os
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from client import Client
from controlplane.apiserver.storage import EtcdClientTLS, Storage
from kctl.main import cli
from proto import core_pb2
from proto.errors import Unavailable
from provision import components
from provision.processes import ApiServer, Etcd, free_port, start_apiserver, start_etcd


def _plan(config_dir: Path, etcd_port: int) -> components.ClusterPlan:
    master = components.NodePlan("tls-master", "192.168.91.1", "10.244.0.0/24", control_plane=True)
    return components.ClusterPlan("tls", "192.168.91.1", (master,), "10.244.0.0/16",
                                  f"https://127.0.0.1:{etcd_port}", config_dir)


class TLSControlPlane:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.plan = _plan(base / "config", free_port())
        components.bundle(self.plan).write(self.plan.config_dir)
        tls = components.etcd_tls(self.plan)
        assert tls is not None
        port = int(self.plan.etcd_url.rpartition(":")[2])
        self.etcd: Etcd = start_etcd(base / "etcd", client_port=port, log_dir=base, tls=tls,
                                     client_tls=components.etcd_backup_tls(self.plan.config_dir))
        self.apiserver: ApiServer = start_apiserver(
            self.etcd.url, base, extra=["--log-level", "WARNING", *components._etcd_client_flags(self.plan)])

    def path(self, relative: str) -> str:
        return self.plan.path(relative)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSControlPlane]:
    made = TLSControlPlane(tmp_path_factory.mktemp("etcd-tls"))
    yield made
    made.apiserver.process.stop()
    made.etcd.process.stop()


def test_the_argv_has_no_plaintext_url_and_checks_clients_and_peers(cluster: TLSControlPlane) -> None:
    argv = cluster.etcd.process.argv
    urls = [argv[i + 1] for i, a in enumerate(argv) if a.endswith("-urls")]
    assert urls and all(u.startswith("https://") for u in urls)
    for flag in ("--client-cert-auth", "--peer-client-cert-auth", "--trusted-ca-file", "--peer-trusted-ca-file"):
        assert flag in argv
    # The cluster's apiserver gets Kubernetes' flags for it.
    apiserver = components.apiserver_argv(cluster.plan)
    assert apiserver[apiserver.index("--etcd-certfile") + 1].endswith("pki/apiserver-etcd-client.crt")
    assert apiserver[apiserver.index("--etcd-servers") + 1].startswith("https://")


def test_plaintext_gets_nothing_on_the_client_or_the_peer_port(cluster: TLSControlPlane) -> None:
    for port in (cluster.etcd.client_port, cluster.etcd.peer_port):
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()


async def _reach(cluster: TLSControlPlane, tls: EtcdClientTLS) -> int:
    storage = Storage(cluster.etcd.url, tls=tls)
    try:
        await storage.connect(timeout=2)
        return await storage.revision()
    finally:
        await storage.close()


def test_only_certificates_the_etcd_ca_signed_are_let_in(cluster: TLSControlPlane, tmp_path: Path) -> None:
    etcd_ca = Path(cluster.path(f"{components.ETCD_CA}.crt")).read_bytes()
    # The apiserver's and the backup tool's certificates work...
    for client in (components.APISERVER_ETCD_CLIENT, components.ETCD_BACKUP_CLIENT):
        tls = EtcdClientTLS.from_files(cluster.path(f"{components.ETCD_CA}.crt"), cluster.path(f"{client}.crt"),
                                       cluster.path(f"{client}.key"))
        assert asyncio.run(_reach(cluster, tls)) > 0
    # ... a certificate of the cluster CA (the admin's: system:masters for the apiserver) does not.
    admin = components.bundle(cluster.plan).files  # same plan, its own CA: any non-etcd CA is refused alike
    apiserver_kubelet = (Path(cluster.path(f"{components.APISERVER_KUBELET_CLIENT}.crt")).read_bytes(),
                         Path(cluster.path(f"{components.APISERVER_KUBELET_CLIENT}.key")).read_bytes())
    for cert, key in (apiserver_kubelet, (admin[f"{components.APISERVER_ETCD_CLIENT}.crt"],
                                          admin[f"{components.APISERVER_ETCD_CLIENT}.key"])):
        with pytest.raises(Unavailable, match="unreachable"):
            asyncio.run(_reach(cluster, EtcdClientTLS(etcd_ca, cert, key)))


def test_an_https_etcd_without_credentials_stops_the_apiserver_with_one_line(cluster: TLSControlPlane,
                                                                            tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="give its CA and a client certificate"):
        start_apiserver(cluster.etcd.url, tmp_path)
    with pytest.raises(RuntimeError, match="--etcd-cafile, --etcd-certfile and --etcd-keyfile together"):
        start_apiserver(cluster.etcd.url, tmp_path, extra=["--etcd-cafile", cluster.path(f"{components.ETCD_CA}.crt")])


async def _create_and_read_secret(address: str) -> bytes:
    async with Client(address) as client:
        secret = core_pb2.Secret(api_version="v1", kind="Secret")
        secret.metadata.name, secret.metadata.namespace = "over-tls", "default"
        secret.data["k"] = b"v"
        await client.create(secret)
        return bytes((await client.get(core_pb2.Secret, "over-tls", "default")).data["k"])


def test_the_apiserver_serves_from_a_tls_etcd(cluster: TLSControlPlane) -> None:
    assert asyncio.run(_create_and_read_secret(cluster.apiserver.address)) == b"v"


def test_snapshot_save_uses_the_backup_certificate_writes_0600_and_refuses_without(cluster: TLSControlPlane,
                                                                                   tmp_path: Path) -> None:
    runner = CliRunner()
    snap = tmp_path / "backup.db"
    credentials = ["--cacert", cluster.path(f"{components.ETCD_CA}.crt"),
                   "--cert", cluster.path(f"{components.ETCD_BACKUP_CLIENT}.crt"),
                   "--key", cluster.path(f"{components.ETCD_BACKUP_CLIENT}.key")]
    saved = runner.invoke(cli, ["etcd", "snapshot", "save", str(snap), "--endpoints", cluster.etcd.url, *credentials])
    assert saved.exit_code == 0, saved.output
    assert stat.S_IMODE(os.stat(snap).st_mode) == 0o600 and snap.stat().st_size > 0

    refused = runner.invoke(cli, ["etcd", "snapshot", "save", str(tmp_path / "no.db"), "--endpoints",
                                  cluster.etcd.url, "--cluster", "no-such-cluster"])
    assert refused.exit_code == 1
    assert "takes only clients with a certificate its CA signed: pass --cacert, --cert and --key" in refused.output
    assert not (tmp_path / "no.db").exists()
    half = runner.invoke(cli, ["etcd", "snapshot", "save", str(tmp_path / "no.db"), "--endpoints",
                               cluster.etcd.url, *credentials[:2]])
    assert half.exit_code == 1 and "--cacert, --cert and --key go together" in half.output
