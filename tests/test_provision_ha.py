"""Several masters, planned (issue 18): without root, namespaces or processes.

Given `--masters 3 --workers 2` on 192.168.93.0/24, the masters are namespace
nodes at .11-.13 (veths, the first pod /24s, control-plane), the workers stay
at .101-.102, the API's virtual IP is the subnet's last usable address and
every client's address (kubeconfigs, the apiserver certificate with each
master's address too); a VIP outside the subnet, on the host's .1 or on a
node, and more than seven masters are refused. Each master's daemons parse
their own command lines: the apiserver on every address with its own etcd
member first, the VIP announcer contending through its own apiserver and
knowing the other masters, a leader-elected scheduler, DNS on the master's
address; every etcd member starts before any apiserver, each inside its
master's namespace. etcd's peer certificate serves and dials. One master is
planned exactly as before.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from provision import components, localdaemons, localmasters, localplan
from provision.localplan import ClusterState
from provision.provider import Options, ProvisionError

SUBNET = "192.168.93.0/24"


def _state(masters: int = 3, api_vip: str = "") -> ClusterState:
    return localplan.new_state(Options(name="ha", masters=masters, workers=2, subnet=SUBNET, bridge="flt93",
                                       pod_network="10.93.0.0/16", api_port=16443, etcd_port=16379, api_vip=api_vip))


def test_masters_are_namespace_nodes_behind_one_virtual_ip() -> None:
    state = _state()
    infos = state.node_infos()
    assert [(n.name, n.address, n.pod_cidr, n.host_veth, n.control_plane) for n in infos] == [
        ("ha-master-1", "192.168.93.11", "10.93.0.0/24", "flt93-m1", True),
        ("ha-master-2", "192.168.93.12", "10.93.1.0/24", "flt93-m2", True),
        ("ha-master-3", "192.168.93.13", "10.93.2.0/24", "flt93-m3", True),
        ("ha-worker-1", "192.168.93.101", "10.93.3.0/24", "flt93-w1", False),
        ("ha-worker-2", "192.168.93.102", "10.93.4.0/24", "flt93-w2", False)]
    assert state.ha and state.api_vip == "192.168.93.254" and state.master_address == "192.168.93.1"
    assert [link.netns for link in state.links()] == [n.name for n in infos]  # masters on veths too
    plan = state.components_plan()
    assert plan.ha and plan.https_url == "https://192.168.93.254:16443"
    assert plan.grpc_server == "192.168.93.254:16445"
    assert state.etcd_endpoints() == [f"https://192.168.93.1{i}:16379" for i in (1, 2, 3)]
    assert state.registry.startswith("192.168.93.1:")  # the registry stays on the host


def test_one_master_is_planned_as_before() -> None:
    state = _state(1)
    assert not state.ha and state.api_vip == ""
    assert state.node_infos()[0].name == "ha-master" and state.node_infos()[0].host_veth == ""
    assert state.etcd_endpoints() == ["https://127.0.0.1:16379"]
    assert [link.netns for link in state.links()] == ["ha-worker-1", "ha-worker-2"]


@pytest.mark.parametrize(("vip", "why"), [("10.0.0.9", "free host address of the subnet"),
                                          ("192.168.93.1", "not .1"), ("192.168.93.12", "a node's address"),
                                          ("nope", "not an IP address")])
def test_a_bad_virtual_ip_is_refused(vip: str, why: str) -> None:
    with pytest.raises(ProvisionError, match=why):
        _state(api_vip=vip)


def test_more_than_seven_masters_are_refused() -> None:
    with pytest.raises(ProvisionError, match="--masters 1 to 7"):
        _state(8)


def test_each_masters_daemons_parse_their_command_lines(tmp_path: Path) -> None:
    from controlplane.apiserver import main as apiserver
    from controlplane.dns import main as dns
    from controlplane.scheduler import main as scheduler
    from nodeagent.apivip import main as apivip

    plan = _state().components_plan()
    second = plan.nodes[1]
    argvs = components.master_control_plane_argvs(plan, second, etcd_port=16379)
    assert list(argvs) == ["apiserver", "api-vip", "scheduler", "controller-manager", "dns"]
    opts = apiserver.parse_args(argvs["apiserver"][3:])
    assert (opts.https_listen, opts.secure_listen) == ("0.0.0.0:16443", "0.0.0.0:16445")
    assert opts.etcd_servers.split(",")[0] == "https://192.168.93.12:16379"  # its own member first
    assert len(opts.etcd_servers.split(",")) == 3
    assert opts.advertise_address == "192.168.93.12"  # its endpoint in the `kubernetes` Service
    vip = apivip.COMMAND.parse_args(argvs["api-vip"][3:])
    assert (vip.server, vip.vip, vip.node_name) == ("192.168.93.12:16445", "192.168.93.254", "ha-master-2")
    assert vip.peer == ["192.168.93.11", "192.168.93.13"] and vip.kubeconfig == plan.kubeconfig_path(components.PROXY)
    assert scheduler.parse_args(argvs["scheduler"][3:]).leader_elect == "true"
    assert dns.parse_args(argvs["dns"][3:]).listen == ("192.168.93.12", 53)


def test_every_etcd_member_starts_first_each_in_its_masters_namespace(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTILLA_HOME", str(tmp_path))
    state = _state()
    (state.folder / "logs").mkdir(parents=True)
    try:
        specs = localdaemons.master_specs(state, etcd_port=16379)
        nodes = [s for info in state.node_infos() for s in localdaemons.node_specs(state, info)]
    finally:
        for info in state.node_infos():
            with contextlib.suppress(OSError):
                (localdaemons.SOCKET_ROOT / info.name).rmdir()
    names = [s.name for s in specs]
    assert names[:3] == ["etcd/ha-master-1", "etcd/ha-master-2", "etcd/ha-master-3"]
    # Daemon by daemon across the masters; only the last apiserver is waited for.
    assert names[3:9] == [f"{d}/ha-master-{i}" for d in ("apiserver", "api-vip") for i in (1, 2, 3)]
    assert [s.name for s in specs if s.ready.startswith("tcp:192")][3:] == ["apiserver/ha-master-3"]
    for spec in [*specs, *(s for s in nodes if "master" in s.name and not s.name.startswith("proxy"))]:
        node = spec.name.partition("/")[2]
        assert spec.argv[:2] == ["nsenter", f"--net=/run/netns/{node}"], spec
    etcd = specs[1].argv
    assert etcd[etcd.index("--initial-cluster") + 1] == ",".join(
        f"ha-master-{i}=https://192.168.93.1{i}:16380" for i in (1, 2, 3))
    assert etcd[etcd.index("--listen-client-urls") + 1] == "https://192.168.93.12:16379,https://127.0.0.1:16379"
    audit = {a for s in specs if s.name.startswith("apiserver/") for a in s.argv if a.endswith(".log")}
    assert len(audit) == 3  # one audit log per apiserver
    joining = localdaemons.master_specs(state, etcd_port=16379, masters=state.master_infos()[2:],
                                        initial_state="existing")
    assert "existing" in joining[0].argv
    # A master's kubelet has its own kubeconfig from `up` (no bootstrap token), and its proxy programs its
    # namespace like a worker's.
    kubelet = next(s for s in nodes if s.name == "kubelet/ha-master-2")
    assert "bootstrap" not in " ".join(kubelet.argv)
    assert "/run/flotilla/ha-master-2/containerd.sock" in kubelet.argv[4:6]  # it waits for its containerd
    proxy = next(s for s in nodes if s.name == "proxy/ha-master-2")
    assert proxy.argv[proxy.argv.index("--netns") + 1] == "ha-master-2"


def test_certificates_name_the_vip_and_every_master(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTILLA_HOME", str(tmp_path))
    plan = _state().components_plan()
    files = components.bundle(plan, token_joined=["ha-worker-1", "ha-worker-2"])

    def sans(name: str) -> set[str]:
        cert = x509.load_pem_x509_certificate(files.files[f"{name}.crt"])
        return {str(a) for a in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                .get_values_for_type(x509.IPAddress)}

    masters = {"192.168.93.11", "192.168.93.12", "192.168.93.13"}
    assert {"192.168.93.254", *masters} <= sans(components.APISERVER)
    assert masters <= sans(components.ETCD_SERVER) and masters <= sans(components.ETCD_PEER)
    peer = x509.load_pem_x509_certificate(files.files[f"{components.ETCD_PEER}.crt"])
    usages = set(peer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    # Masters get their kubelet kubeconfig from `up`; workers join with a token.
    assert "kubeconfigs/kubelet-ha-master-2.conf" in files.files
    assert "kubeconfigs/kubelet-ha-worker-1.conf" not in files.files


def test_the_next_master_takes_the_lowest_free_number_and_pod_cidr() -> None:
    state = _state()
    state.remove_nodes(["ha-master-2"])
    added = localmasters.next_master(state)
    assert (added.name, added.address, added.pod_cidr, added.host_veth) == (
        "ha-master-2", "192.168.93.12", "10.93.1.0/24", "flt93-m2")
    with pytest.raises(ProvisionError, match="one master, the host itself"):
        localmasters.add_master(_state(1), None, 0.0)  # type: ignore[arg-type]
