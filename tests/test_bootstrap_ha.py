"""Several masters on SSH and Vagrant machines (issue 18), bootstrapped into a temporary root.

Given an inventory of three masters (192.168.60.11-13) behind the API's
virtual IP .10 and one worker, the plan is highly available with the VIP as
every client's address; when the bootstrap steps provision each machine into
a folder (invoke.Context, a recording `systemctl`), each master runs its own
etcd member (its address and loopback, peers on every master's address, the
initial cluster naming all three), an apiserver dialing its own member
first, the VIP announcer knowing its peers, a leader-elected scheduler and
controller manager and DNS on its address; the registry and its files are on
the first master only; every kubeconfig names the VIP (and the three etcd
units' command lines, run here on loopback addresses, form one TLS cluster of
three started members); kube-dns lists the
three masters; a second run writes and restarts nothing, and a re-run of
`up` naming other masters is refused (etcd's membership stays what the first
`up` made). Inventories with an
even or too large number of masters, without a VIP, or with a VIP that a host
owns, off the masters' network or in the LoadBalancer pool are refused, each
error naming what is wrong. Vagrant's machines `master`/`master<N>` are the
masters and the VIP is .10 of their network; the Vagrantfile (evaluated by
Ruby with a stand-in for Vagrant) lays out one master as before and three
masters at .11-.13 with the bootstrap trigger on the last machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from controlplane.apiserver.storage import EtcdClientTLS
from provision import components, etcd_members, phases, ssh, vagrant
from provision.bootstrap import cluster, steps
from provision.bootstrap.host import BootstrapError
from provision.processes import Process
from provision.provider import Options
from tests import bootstrap_support as support

REPO = Path(__file__).resolve().parents[1]
VIP = "192.168.60.10"
MASTERS = {"m1-k8s": "192.168.60.11", "m2-k8s": "192.168.60.12", "m3-k8s": "192.168.60.13"}


@pytest.fixture
def systemctl(tmp_path: Path) -> tuple[str, Path]:
    return support.recording_systemctl(tmp_path)


def machines(root: Path, systemctl: str) -> list[cluster.Machine]:
    masters = [(name, address, "master") for name, address in MASTERS.items()]
    return support.machines(root, systemctl, [*masters, ("w1-k8s", "192.168.60.101", "worker")])


def argv_of(unit_text: str) -> list[str]:
    line = next(x for x in unit_text.splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_three_masters_plan_the_api_at_the_vip(tmp_path: Path, systemctl: tuple[str, Path]) -> None:
    plan = cluster.make_plan("lab", machines(tmp_path, systemctl[0]), api_vip=VIP)
    assert plan.ha and plan.master_address == VIP
    assert plan.https_url == f"https://{VIP}:6443" and plan.grpc_server == f"{VIP}:6445"
    assert [(n.name, n.control_plane, n.pod_cidr) for n in plan.nodes] == [
        ("m1-k8s", True, "10.244.0.0/24"), ("m2-k8s", True, "10.244.1.0/24"), ("m3-k8s", True, "10.244.2.0/24"),
        ("w1-k8s", False, "10.244.3.0/24")]
    assert plan.registry == "192.168.60.11:5000"  # the first master's, never the VIP
    # kube-dns: one Endpoints address per master's DNS (the VIP is the API's only).
    docs = list(yaml.safe_load_all(phases.dns_manifest(phases.dns_servers(plan), plan.dns_ip)))
    endpoints = next(d for d in docs if d["kind"] == "Endpoints")
    assert [a["ip"] for a in endpoints["subsets"][0]["addresses"]] == list(MASTERS.values())


def test_each_master_gets_its_member_control_plane_and_vip_announcer(tmp_path: Path,
                                                                   systemctl: tuple[str, Path]) -> None:
    script, log = systemctl
    nodes = machines(tmp_path, script)
    plan = cluster.make_plan("lab", nodes, api_vip=VIP, lb_pool="192.168.60.200-192.168.60.250")
    bundle = components.bundle(plan)

    def provision(machine: cluster.Machine) -> list[str]:
        node = plan.node(machine.node)
        changed = steps.sync_config(machine.host, steps.node_files(plan, node, bundle))
        units = (steps.master_units(plan, node) if node.control_plane else []) + steps.node_units(plan, node)
        return steps.apply_units(machine.host, units, changed)

    started = {m.node: provision(m) for m in nodes}
    control_plane = ["etcd", "apiserver", "api-vip", "scheduler", "controller-manager", "dns"]
    node_daemons = ["containerd", "kubelet", "proxy"]
    assert started["m1-k8s"] == [f"flotilla-{d}.service" for d in (
        "etcd", "registry", "registry-push", *control_plane[1:], *node_daemons)]
    for name in ("m2-k8s", "m3-k8s"):  # no registry there
        assert started[name] == [f"flotilla-{d}.service" for d in (*control_plane, *node_daemons)]
    assert started["w1-k8s"] == [f"flotilla-{d}.service" for d in node_daemons]

    peers = ",".join(f"{name}=https://{address}:2380" for name, address in MASTERS.items())
    for name, address in MASTERS.items():
        units = tmp_path / name / "etc/systemd/system"
        etcd = argv_of((units / "flotilla-etcd.service").read_text())
        assert flag(etcd, "--name") == name and flag(etcd, "--initial-cluster") == peers
        assert flag(etcd, "--listen-client-urls") == f"https://{address}:2379,https://127.0.0.1:2379"
        assert flag(etcd, "--listen-peer-urls") == f"https://{address}:2380"
        assert flag(etcd, "--initial-cluster-state") == "new"
        assert "--peer-client-cert-auth" in etcd and flag(etcd, "--data-dir") == steps.ETCD_DIR
        assert (flag(etcd, "--heartbeat-interval"), flag(etcd, "--election-timeout")) == ("200", "2000")
        apiserver = argv_of((units / "flotilla-apiserver.service").read_text())
        servers = flag(apiserver, "--etcd-servers").split(",")
        assert servers[0] == f"https://{address}:2379" and len(servers) == 3  # its own member first
        assert flag(apiserver, "--secure-listen") == "0.0.0.0:6445"  # its address and the VIP while it holds it
        assert flag(apiserver, "--advertise-address") == address
        vip = argv_of((units / "flotilla-api-vip.service").read_text())
        assert (flag(vip, "--vip"), flag(vip, "--node-ip"), flag(vip, "--server")) == (VIP, address, f"{address}:6445")
        assert sorted(vip[i + 1] for i, a in enumerate(vip) if a == "--peer") == sorted(
            a for a in MASTERS.values() if a != address)
        scheduler = argv_of((units / "flotilla-scheduler.service").read_text())
        assert flag(scheduler, "--leader-elect") == "true"
        assert "--leader-elect-lease-duration" in argv_of((units / "flotilla-controller-manager.service").read_text())
        assert flag(argv_of((units / "flotilla-dns.service").read_text()), "--listen") == f"{address}:53"
        # Every master holds the whole PKI; the etcd certificates name every master.
        assert (tmp_path / name / "etc/flotilla/pki/etcd/peer.key").exists()
        assert (tmp_path / name / "etc/flotilla/pki/ca.key").exists()
        # The kubelet registers the master tainted, and dials the API at the VIP.
        kubelet = (tmp_path / name / "etc/flotilla/kubelet.yaml").read_text()
        assert components.CONTROL_PLANE_TAINT in kubelet and f"{VIP}:6445" in kubelet
        assert (tmp_path / name / steps.REGISTRY_CONFIG.lstrip("/")).exists() == (name == "m1-k8s")
    # Every kubeconfig names the VIP: the admin's, the components', the kubelets'.
    for relative in ("kubeconfigs/admin.conf", "kubeconfigs/scheduler.conf", "kubeconfigs/kubelet-m2-k8s.conf"):
        doc = yaml.safe_load(bundle.files[relative])
        assert doc["clusters"][0]["cluster"]["server"] == f"https://{VIP}:6443", relative
    assert (tmp_path / "w1-k8s" / "etc/flotilla/kubeconfigs/proxy.conf").exists()
    assert not (tmp_path / "w1-k8s" / "etc/systemd/system/flotilla-etcd.service").exists()

    # Again: a re-run of `up` writes nothing and restarts nothing (etcd's data and flags stay as they are).
    log.write_text("")
    assert all(provision(m) == [] for m in nodes)
    assert "restart" not in log.read_text()


def test_the_units_etcd_members_form_one_tls_cluster(tmp_path: Path, systemctl: tuple[str, Path]) -> None:
    """The three etcd units' command lines, run here on loopback addresses: one cluster of three started
    members over peer TLS with the bundle's certificates, answering the backup client."""
    masters = {f"m{i}-k8s": f"127.0.1.1{i}" for i in (1, 2, 3)}
    nodes = support.machines(tmp_path, systemctl[0], [(n, a, "master") for n, a in masters.items()])
    plan = cluster.make_plan("lab", nodes, api_vip="127.0.1.10")
    config = tmp_path / "config"
    components.bundle(plan).write(config)
    started: list[Process] = []
    try:
        for name, address in masters.items():
            argv = [a.replace(steps.CONFIG_DIR, str(config)) for a in steps.master_units(plan, plan.node(name))[0].argv]
            argv[argv.index("--data-dir") + 1] = str(tmp_path / f"etcd-{name}")
            # One machine here: the members' loopback listeners (127.0.0.1:2379 on each master) would collide.
            argv[argv.index("--listen-client-urls") + 1] = f"https://{address}:{steps.ETCD_PORT}"
            proc = Process(f"etcd-{name}", argv, tmp_path / f"etcd-{name}.log")
            proc.start()
            started.append(proc)
        tls = components.etcd_backup_tls(config)
        client = EtcdClientTLS.from_files(tls.ca, tls.cert, tls.key)
        urls = [f"https://{a}:{steps.ETCD_PORT}" for a in masters.values()]
        deadline = time.monotonic() + 60
        found: list[etcd_members.Member] = []
        while time.monotonic() < deadline and not (len(found) == 3 and all(m.status == "started" for m in found)):
            assert all(p.alive() for p in started), "\n".join(p.tail() for p in started)
            with contextlib.suppress(etcd_members.EtcdUnreachable):
                found = asyncio.run(etcd_members.members(urls, client))
            time.sleep(0.5)
        assert sorted((m.name, m.peer_urls) for m in found) == [
            (name, (f"https://{address}:{steps.ETCD_PORT + 1}",)) for name, address in masters.items()]
        assert all(asyncio.run(etcd_members.healthy(url, client)) for url in urls)
    finally:
        for proc in started:
            proc.stop()


def test_status_names_each_masters_daemons(tmp_path: Path) -> None:
    script = tmp_path / "is-active"
    script.write_text('#!/bin/sh\nshift\nfor u in "$@"; do case $u in *api-vip*) echo inactive;; *) echo active;; '
                      'esac; done\n')
    script.chmod(0o755)
    nodes = machines(tmp_path, str(script))
    states = cluster.status(cluster.make_plan("lab", nodes, api_vip=VIP), nodes)
    assert states["etcd/m2-k8s"] and states["apiserver/m3-k8s"] and states["registry/m1-k8s"]
    assert not states["api-vip/m1-k8s"] and "registry/m2-k8s" not in states
    assert states["kubelet/w1-k8s"] and "etcd/w1-k8s" not in states


def test_a_re_plan_keeps_etcds_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  systemctl: tuple[str, Path]) -> None:
    monkeypatch.setenv("FLOTILLA_HOME", str(tmp_path / "home"))
    nodes = machines(tmp_path, systemctl[0])
    first = cluster.load_bundle(cluster.make_plan("lab", nodes[:3], api_vip=VIP))
    second = cluster.load_bundle(cluster.make_plan("lab", nodes, api_vip=VIP))  # a worker added: a new plan
    assert second.files["pki/etcd/ca.crt"] == first.files["pki/etcd/ca.crt"]
    assert second.files["pki/ca.crt"] == first.files["pki/ca.crt"]
    assert "kubeconfigs/kubelet-w1-k8s.conf" in second.files


def test_a_re_run_of_up_keeps_the_etcd_members_it_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        systemctl: tuple[str, Path]) -> None:
    monkeypatch.setenv("FLOTILLA_HOME", str(tmp_path / "home"))
    nodes = machines(tmp_path, systemctl[0])
    three = cluster.make_plan("lab", nodes, api_vip=VIP)
    cluster.check_etcd_members(three, nodes)
    for name in MASTERS:  # the members ran: each master holds its data
        (tmp_path / name / steps.ETCD_DIR.lstrip("/") / "member").mkdir(parents=True)
    cluster.check_etcd_members(three, nodes)  # the same masters: fine
    one = [cluster.Machine(nodes[0].host, "m1-k8s", "192.168.60.11", "master"), nodes[3]]
    with pytest.raises(BootstrapError, match=r"its etcd members are m1-k8s, m2-k8s, m3-k8s .*m1-k8s still holds "
                                             r"etcd data\); the inventory now names m1-k8s as masters"):
        cluster.check_etcd_members(cluster.make_plan("lab", one), one)
    # The machines made again (`vagrant destroy`, then `up`): no member's data is left, a new cluster starts.
    for name in MASTERS:
        shutil.rmtree(tmp_path / name / steps.ETCD_DIR.lstrip("/"))
    cluster.check_etcd_members(cluster.make_plan("lab", one), one)
    cluster.check_etcd_members(three, nodes)
    # One master to another (a new machine, a new etcd) is no membership change: as before.
    cluster.check_etcd_members(cluster.make_plan("solo", one), one)
    other = [cluster.Machine(nodes[1].host, "m2-k8s", "192.168.60.12", "master")]
    cluster.check_etcd_members(cluster.make_plan("solo", other), other)
    (tmp_path / "m2-k8s" / steps.ETCD_DIR.lstrip("/") / "member").mkdir(parents=True)
    with pytest.raises(BootstrapError, match="does not change etcd's membership"):  # m2-k8s's one-member etcd
        cluster.check_etcd_members(cluster.make_plan("solo", nodes, api_vip=VIP), nodes)


def host(name: str, address: str, role: str) -> dict[str, str]:
    return {"name": name, "address": address, "user": "debian", "key_file": "k", "role": role}


def inventory(masters: int, **top: object) -> dict[str, object]:
    hosts = [host(f"m{i}", f"192.168.60.1{i}", "master") for i in range(1, masters + 1)]
    return {"hosts": [*hosts, host("w1", "192.168.60.101", "worker")], **top}


def test_an_inventory_of_three_masters_parses() -> None:
    parsed = ssh.parse_inventory(inventory(3, api_vip=VIP), source="hosts.yaml")
    assert parsed.api_vip == VIP and [h.role for h in parsed.hosts].count("master") == 3


@pytest.mark.parametrize(("data", "message"), [
    (inventory(2, api_vip=VIP), "2 masters: give an odd number"),
    (inventory(4, api_vip=VIP), "4 masters: give an odd number"),
    (inventory(9, api_vip=VIP), "9 masters: at most 7"),
    (inventory(3), "3 masters need an api_vip"),
    (inventory(3, api_vip="192.168.60.12"), "api_vip 192.168.60.12 is a host's address"),
    (inventory(3, api_vip="192.168.60.101"), "api_vip 192.168.60.101 is a host's address"),
    (inventory(3, api_vip="10.1.2.3"), "must be a host address of the masters' network 192.168.60.0/24"),
    (inventory(3, api_vip="vip"), "api_vip 'vip' is not an IPv4 address"),
    (inventory(3, api_vip="192.168.60.210"), "is in the LoadBalancer pool 192.168.60.200-192.168.60.250"),
    (inventory(1, api_vip=VIP), "api_vip 192.168.60.10 is for several masters"),
    (inventory(3, api_vip=VIP, apivip="x"), r"unknown field\(s\) apivip"),
    ({"hosts": [host("m1", "192.168.60.11", "master"), host("m2", "192.168.61.12", "master"),
                host("m3", "192.168.60.13", "master")], "api_vip": VIP}, "masters 192.168.61.12 are outside"),
])
def test_inventory_errors_about_masters_name_the_problem(data: dict[str, object], message: str) -> None:
    with pytest.raises(ssh.InventoryError, match=f"hosts.yaml: .*{message}"):
        ssh.parse_inventory(data, source="hosts.yaml")


def test_the_plan_refuses_what_the_inventory_refuses(tmp_path: Path, systemctl: tuple[str, Path]) -> None:
    with pytest.raises(BootstrapError, match="3 masters need an api_vip"):
        cluster.make_plan("lab", machines(tmp_path, systemctl[0]))


def test_vagrant_machines_named_master_are_masters_and_the_vip_is_dot_10() -> None:
    assert [vagrant.role(m) for m in ("master", "master1", "master3", "w1", "masterx", "mymaster")] == [
        "master", "master", "master", "worker", "worker", "worker"]
    three = [ssh.InventoryHost(f"m{i}-k8s", f"192.168.60.1{i}", "vagrant", "k", "master") for i in (1, 2, 3)]
    assert vagrant.api_vip(three) == VIP
    assert vagrant.api_vip(three[:1]) == ""  # one master: the API at its address
    assert vagrant.ssh_hint(ssh.Inventory("vagrant", tuple(three), api_vip=VIP)).startswith("vagrant ssh master1 ")
    provider = vagrant.VagrantProvider(Options("vagrant"))
    provider._inventory = ssh.Inventory("vagrant", tuple(three), api_vip=VIP)
    assert provider.down_command() == ("FLOTILLA_MASTERS=3 python -m provision vagrant down; "
                                       "FLOTILLA_MASTERS=3 vagrant destroy -f")


# Vagrant's configuration objects, stood in for: each machine's name, hostname, address, primary flag and
# trigger, printed as JSON (no Vagrant, no VM).
VAGRANT_STUB = """
require "json"

class Anything
  def method_missing(*_args)
    self
  end

  def respond_to_missing?(*)
    true
  end
end

class Machine < Anything
  def initialize(record)
    super()
    @record = record
  end

  def vm
    self
  end

  def hostname=(name)
    @record["hostname"] = name
  end

  def network(_kind, ip:)
    @record["ip"] = ip
  end

  def trigger
    self
  end

  def after(event)
    t = Struct.new(:name, :info, :run).new
    yield t
    @record["trigger"] = [event.to_s, t.run[:inline]]
  end
end

class Config < Anything
  attr_reader :machines

  def initialize
    super
    @machines = []
  end

  def vm
    self
  end

  def define(name, primary: false)
    record = { "name" => name, "primary" => primary }
    @machines << record
    yield Machine.new(record)
  end
end

module Vagrant
  def self.configure(_version)
    config = Config.new
    yield config
    puts JSON.dump(config.machines)
  end
end

load ARGV[0]
"""


def vagrantfile(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    stub = tmp_path / "stub.rb"
    stub.write_text(VAGRANT_STUB)
    return subprocess.run(["ruby", str(stub), str(REPO / "Vagrantfile")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "FLOTILLA_NETWORK_PREFIX": "192.168.60", **env}, timeout=60)


@pytest.mark.skipif(shutil.which("ruby") is None, reason="the Vagrantfile is Ruby")
def test_the_vagrantfile_lays_out_one_or_three_masters(tmp_path: Path) -> None:
    def layout(**env: str) -> list[tuple[str, str, str, bool, bool]]:
        done = vagrantfile(tmp_path, **env)
        assert done.returncode == 0, done.stderr
        return [(m["name"], m["hostname"], m["ip"], m["primary"], "trigger" in m) for m in json.loads(done.stdout)]

    assert layout(FLOTILLA_WORKERS="2") == [  # the book's layout, as before
        ("master", "m-k8s", "192.168.60.10", True, False), ("w1", "w1-k8s", "192.168.60.101", False, False),
        ("w2", "w2-k8s", "192.168.60.102", False, True)]
    assert layout(FLOTILLA_MASTERS="3", FLOTILLA_WORKERS="1") == [
        ("master1", "m1-k8s", "192.168.60.11", True, False), ("master2", "m2-k8s", "192.168.60.12", False, False),
        ("master3", "m3-k8s", "192.168.60.13", False, False), ("w1", "w1-k8s", "192.168.60.101", False, True)]
    # No worker: the bootstrap still runs, after the last master.
    assert layout(FLOTILLA_MASTERS="3", FLOTILLA_WORKERS="0")[-1] == (
        "master3", "m3-k8s", "192.168.60.13", False, True)
    refused = vagrantfile(tmp_path, FLOTILLA_MASTERS="2")
    assert refused.returncode != 0 and "FLOTILLA_MASTERS=2: give 1, 3, 5 or 7 masters" in refused.stderr


@pytest.mark.parametrize(("provider", "hint"), [("ssh", "api_vip in the inventory"),
                                                ("vagrant", "FLOTILLA_MASTERS=3")])
def test_kctl_masters_flag_is_refused_for_machine_providers(provider: str, hint: str) -> None:
    """--masters is the local provider's: on ssh/vagrant it would be silently ignored, so it is refused."""
    from click.testing import CliRunner

    from kctl.main import cli

    result = CliRunner().invoke(cli, ["cluster", "up", "--provider", provider, "--masters", "3"])
    assert result.exit_code == 1, result.output
    assert "--masters and --api-vip are for the local provider" in result.output and hint in result.output
