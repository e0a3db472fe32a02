"""The bootstrap steps, run through invoke.Context against a temporary root.

Given a planned cluster, when the steps provision a master and a worker into a
folder, then every file and unit is there; when they run again, nothing is
written and nothing restarts; when one input changes, only the units that read
it restart; teardown leaves nothing behind. systemd is not PID 1 here, so
`systemctl` is a small script that records its arguments.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from invoke import Context

from provision import components, ssh
from provision.bootstrap import cluster, steps
from provision.bootstrap.host import Host
from tests import bootstrap_support as support


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    return folder


@pytest.fixture
def systemctl(tmp_path: Path) -> tuple[str, Path]:
    return support.recording_systemctl(tmp_path)


def machines(root: Path, systemctl: str) -> list[cluster.Machine]:
    return support.machines(root, systemctl, [("m-k8s", "192.168.60.10", "master"),
                                              ("w1-k8s", "192.168.60.101", "worker")])


def provision(machine: cluster.Machine, plan: components.ClusterPlan, bundle: components.Bundle) -> list[str]:
    node = plan.node(machine.node)
    changed = steps.sync_config(machine.host, steps.node_files(plan, node, bundle))
    units = (steps.master_units(plan, node) if node.control_plane else []) + steps.node_units(plan, node)
    return steps.apply_units(machine.host, units, changed)


def test_provision_twice_changes_nothing_then_restarts_only_what_changed(root, systemctl):
    script, log = systemctl
    nodes = machines(root, script)
    plan = cluster.make_plan("lab", nodes, lb_pool="192.168.60.200-192.168.60.250")
    bundle = components.bundle(plan)
    master, worker = nodes

    restarted = provision(master, plan, bundle)
    assert restarted == [f"flotilla-{d}.service" for d in ("etcd", "registry", "registry-push", "apiserver",
                                                           "scheduler", "controller-manager", "dns", "containerd",
                                                           "kubelet", "proxy")]
    assert provision(worker, plan, bundle) == ["flotilla-containerd.service", "flotilla-kubelet.service",
                                               "flotilla-proxy.service"]
    m = root / "m-k8s"
    unit = (m / "etc/systemd/system/flotilla-apiserver.service").read_text()
    assert "ExecStart=/opt/flotilla/venv/bin/python -m controlplane.apiserver.main" in unit
    assert "--secure-listen 192.168.60.10:6445" in unit and "Restart=always" in unit  # gRPC; HTTPS on 6443
    assert stat.S_IMODE(os.stat(m / "etc/flotilla/pki/ca.key").st_mode) == 0o600
    kubelet = (m / "etc/flotilla/kubelet.yaml").read_text()
    assert "192.168.60.10" in kubelet and components.CONTROL_PLANE_TAINT in kubelet
    w = root / "w1-k8s"
    # A worker holds the CA certificate, never the CA key or another node's key; its kubelet's client
    # credentials come from the TLS bootstrap (kctl join), not from the provisioner.
    assert not (w / "etc/flotilla/kubeconfigs/kubelet-w1-k8s.conf").exists()
    assert "--bootstrap-kubeconfig /etc/flotilla/bootstrap-kubeconfig" in (
        w / "etc/systemd/system/flotilla-kubelet.service").read_text()
    assert steps.needs_join(worker.host, plan, plan.node("w1-k8s"))
    assert not steps.needs_join(master.host, plan, plan.node("m-k8s"))
    assert not (w / "etc/flotilla/pki/ca.key").exists()
    assert not (w / "etc/flotilla/kubeconfigs/admin.conf").exists()
    assert not (w / "etc/systemd/system/flotilla-apiserver.service").exists()

    log.write_text("")
    assert provision(master, plan, bundle) == []
    assert provision(worker, plan, bundle) == []
    calls = log.read_text()
    assert "restart" not in calls and "daemon-reload" not in calls
    assert "enable -q --now flotilla-kubelet.service" in calls  # a stopped unit would be started again

    # A new LoadBalancer pool changes one argv (the controller manager runs the pool): only that daemon restarts.
    replanned = cluster.make_plan("lab", nodes, lb_pool="192.168.60.210-192.168.60.220")
    assert provision(master, replanned, bundle) == ["flotilla-controller-manager.service"]
    # A new proxy credential restarts the proxy only, on both nodes.
    renewed = components.Bundle({**bundle.files, "kubeconfigs/proxy.conf": b"renewed\n"})
    assert provision(master, replanned, renewed) == ["flotilla-proxy.service"]
    assert provision(worker, replanned, renewed) == ["flotilla-proxy.service"]
    # New wheels (new code) restart every daemon of the node, though no file changed.
    units = steps.node_units(replanned, replanned.node("w1-k8s"))
    assert steps.apply_units(worker.host, units, set(), code_changed=True) == [u.service for u in units]


def test_teardown_removes_what_bootstrap_installed(root, systemctl):
    script, log = systemctl
    nodes = machines(root, script)
    plan = cluster.make_plan("lab", nodes)
    bundle = components.bundle(plan)
    master = nodes[0]
    provision(master, plan, bundle)
    steps.kctl_config(master.host, "", bundle.files["kubeconfigs/admin.conf"])
    steps.teardown(master.host)
    m = root / "m-k8s"
    assert not (m / "etc/flotilla").exists() and not (m / "root/.kctl").exists()
    assert list((m / "etc/systemd/system").iterdir()) == []
    assert "disable -q --now flotilla-apiserver.service" in log.read_text()


def test_put_text_writes_only_on_change(root):
    host = Host("h", Context(), root=str(root))
    assert host.put_text("/etc/x/a.conf", "one\n", 0o600)
    assert not host.put_text("/etc/x/a.conf", "one\n", 0o600)
    assert host.put_text("/etc/x/a.conf", "two\n")
    assert (root / "etc/x/a.conf").read_text() == "two\n"
    assert host.read_text("/etc/x/a.conf") == "two\n" and host.read_text("/etc/x/none") is None


def test_plan_needs_a_master(root, systemctl):
    worker = machines(root, systemctl[0])[1]
    with pytest.raises(RuntimeError, match="no master: one host"):
        cluster.make_plan("lab", [worker])


@pytest.mark.parametrize(("hosts", "message"), [
    ([{"name": "a", "address": "10.0.0.1", "user": "u", "key_file": "k", "role": "boss"}], "role must be"),
    ([{"name": "a", "address": "node-a", "user": "u", "key_file": "k", "role": "master"}], "not an IP"),
    ([{"name": "a", "address": "10.0.0.1", "role": "master"}], "missing user, key_file"),
    ([{"name": "a", "address": "10.0.0.1", "user": "u", "key_file": "k", "role": "worker"}], "no master"),
])
def test_inventory_errors_name_the_problem(hosts, message):
    with pytest.raises(ssh.InventoryError, match=message):
        ssh.parse_inventory({"hosts": hosts}, source="hosts.yaml")


def test_inventory_parses(tmp_path):
    path = tmp_path / "hosts.yaml"
    path.write_text("name: lab\nhosts:\n"
                    "  - {name: m, address: 192.168.60.10, user: debian, key_file: ~/.ssh/k, role: master}\n"
                    "  - {name: w, address: 192.168.60.101, user: root, key_file: k, role: worker, port: 2222}\n")
    inventory = ssh.load_inventory(path)
    assert [h.name for h in inventory.hosts] == ["m", "w"] and inventory.hosts[1].port == 2222
    assert ssh.default_lb_pool(inventory) == "192.168.60.200-192.168.60.250"


def test_status_reads_every_unit_from_systemd(root, tmp_path):
    # systemctl is-active prints one state per unit, in order; this stand-in says the kubelets are down.
    script = tmp_path / "is-active"
    script.write_text('#!/bin/sh\nshift\nfor u in "$@"; do case $u in *kubelet*) echo inactive;; *) echo active;; '
                      'esac; done\n')
    script.chmod(0o755)
    nodes = machines(root, str(script))
    states = cluster.status(cluster.make_plan("lab", nodes), nodes)
    assert states["apiserver"] and states["containerd/w1-k8s"] and states["proxy/m-k8s"]
    assert not states["kubelet/m-k8s"] and not states["kubelet/w1-k8s"]
    assert "apiserver/w1-k8s" not in states and "etcd" in states


def test_the_master_exports_its_nfs_share_to_the_nodes_once(root, systemctl, tmp_path, monkeypatch):
    script, log = systemctl
    master = machines(root, script)[0].host
    monkeypatch.setenv("PATH", f"{tmp_path / 'none'}:/usr/bin:/bin")
    if shutil.which("exportfs") is None:  # a machine without an NFS server: no export, no `nfs` class
        assert steps.export_nfs(master, ["192.168.60.10"]) is False
        assert not (root / "m-k8s" / steps.NFS_EXPORTS.lstrip("/")).exists()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exportfs = bin_dir / "exportfs"
    exportfs.write_text(f'#!/bin/sh\necho "exportfs $*" >> {log}\n')
    exportfs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert steps.export_nfs(master, ["192.168.60.10", "192.168.60.101"]) is True
    exports = (root / "m-k8s" / steps.NFS_EXPORTS.lstrip("/")).read_text()
    assert exports == ("/srv/flotilla/nfs 192.168.60.10(rw,sync,no_subtree_check,no_root_squash) "
                       "192.168.60.101(rw,sync,no_subtree_check,no_root_squash)\n")
    assert (root / "m-k8s" / "srv/flotilla/nfs").is_dir()
    assert log.read_text().splitlines()[-2:] == ["enable -q --now nfs-server", "exportfs -ra"]
    # Again: the exports are unchanged, so nothing is re-exported.
    assert steps.export_nfs(master, ["192.168.60.10", "192.168.60.101"]) is True
    assert log.read_text().splitlines()[-1] == "enable -q --now nfs-server"
