"""The local provider's pure parts and its supervisor, without root or network namespaces.

Given a cluster plan, the master is the bridge's .1 with podCIDR 10.244.0.0/24
and workers sit at .101, .102 with 10.244.1.0/24, 10.244.2.0/24; the master's
containerd and kubelet run on the host, tainted, and every daemon carries a
kubeconfig; given a supervisor, a daemon that dies is started again and all of
them stop with the supervisor; `up` reports one plain line per phase when its
output is not a terminal. Every provider answers the one Provider protocol; the
workers join at once and a refused join is tried again; the summary lists every
node. Workers added to a running cluster continue up's plan (the lowest free
number and pod CIDR, around the Nodes the API knows; a full subnet or pod
network refused), the master cannot be removed, only the local provider
changes workers, and a supervisor starts and stops daemons on SIGHUP. (The
whole cluster, and add-worker/remove-worker on it, are tests/e2e/.)
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from kctl.cluster import ConsoleProgress
from provision import localdaemons, localplan, localworkers, phases
from provision.local import LocalProvider
from provision.progress import summary
from provision.provider import PROVIDERS, Cluster, Options, ProvisionError, provider, workers
from provision.supervisor import DaemonSpec, read_pids, reloadable, write_specs


def test_plan_places_workers_like_the_books_vagrantfile() -> None:
    nodes = localplan.plan("demo", workers=3, subnet="192.168.77.0/24", bridge="flt77", pod_network="10.244.0.0/16")
    assert [(n.name, n.address, n.pod_cidr, n.host_veth, n.control_plane) for n in nodes] == [
        ("demo-master", "192.168.77.1", "10.244.0.0/24", "", True),
        ("demo-worker-1", "192.168.77.101", "10.244.1.0/24", "flt77-w1", False),
        ("demo-worker-2", "192.168.77.102", "10.244.2.0/24", "flt77-w2", False),
        ("demo-worker-3", "192.168.77.103", "10.244.3.0/24", "flt77-w3", False),
    ]


def test_the_master_is_a_tainted_node_on_the_host_and_every_daemon_speaks_tls(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTILLA_HOME", str(tmp_path))
    nodes = localplan.plan("unit-tls", workers=1, subnet="192.168.77.0/24", bridge="flt77", pod_network="10.244.0.0/16")
    state = localplan.ClusterState("unit-tls", "192.168.77.1:16477", "http://127.0.0.1:12477", {}, "kubeconfig",
                                   "flt77", "192.168.77.0/24", "192.168.77.1", [asdict(n) for n in nodes],
                                   token_address="192.168.77.1:16478", grpc_address="192.168.77.1:16479")
    assert [link.netns for link in state.links()] == ["unit-tls-worker-1"]  # the master is the host: no namespace
    folder = state.folder
    try:
        specs = {s.name: s.argv for s in localdaemons.daemon_specs(state, etcd_port=12477)}
    finally:
        for node in nodes:  # the containerd socket folders it made under /run/flotilla
            with contextlib.suppress(OSError):
                (localdaemons.SOCKET_ROOT / node.name).rmdir()
    # The master's containerd, kubelet and proxy run on the host; a worker's inside its namespace.
    assert specs["containerd/unit-tls-master"][0] != "nsenter"
    assert specs["kubelet/unit-tls-worker-1"][:2] == ["nsenter", "--net=/run/netns/unit-tls-worker-1"]
    # The master's proxy: the cluster's own table, node ports on the master's address only, no LB announcing.
    master_proxy = specs["proxy/unit-tls-master"]
    assert "--netns" not in master_proxy and "--node-ip" not in master_proxy
    assert master_proxy[master_proxy.index("--table") + 1] == "flotilla-proxy-unit-tls" == state.proxy_table
    assert master_proxy[master_proxy.index("--nodeport-addresses") + 1] == "192.168.77.1/32"
    assert "--table" not in specs["proxy/unit-tls-worker-1"]  # a worker's namespace is its own
    # A worker's kubelet waits for `up` to join it, then bootstraps its own credentials from the token.
    bootstrap_file = str(localplan.bootstrap_kubeconfig_path(folder, "unit-tls-worker-1"))
    assert bootstrap_file in specs["kubelet/unit-tls-worker-1"][:7]
    worker = yaml.safe_load((folder / "nodes" / "unit-tls-worker-1" / "kubelet.yaml").read_text())
    assert worker["bootstrap_kubeconfig"] == bootstrap_file
    assert worker["kubeconfig"] == str(localplan.kubelet_kubeconfig_path(folder, "unit-tls-worker-1"))
    apiserver = specs["apiserver"]
    assert "--listen" not in apiserver and apiserver[apiserver.index("--secure-listen") + 1] == "192.168.77.1:16479"
    assert "lb-controller" not in specs  # the controller manager runs the service-lb controller
    for daemon in ("scheduler", "controller-manager", "dns", "proxy/unit-tls-worker-1"):
        assert "--kubeconfig" in specs[daemon], daemon
    kubelet = yaml.safe_load((folder / "nodes" / "unit-tls-master" / "kubelet.yaml").read_text())
    assert kubelet["register_with_taints"] == ["node-role.kubernetes.io/control-plane:NoSchedule"]
    assert kubelet["node_role"] == "control-plane" and kubelet["kubeconfig"].endswith("kubelet-unit-tls-master.conf")
    assert kubelet["tls_cert_file"] and kubelet["client_ca_file"]
    assert kubelet["node_routes"] is False  # the host's routes are the provisioner's, not the master kubelet's


def test_kube_dns_points_at_the_master() -> None:
    service, endpoints = list(yaml.safe_load_all(phases.dns_manifest("192.168.77.1")))[1:]
    assert service["spec"]["clusterIP"] == localplan.DNS_SERVICE_IP
    assert endpoints["subsets"][0]["addresses"] == [{"ip": "192.168.77.1"}]
    assert {p["protocol"] for p in endpoints["subsets"][0]["ports"]} == {"UDP", "TCP"}


def _wait_for(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_supervisor_restarts_a_daemon_that_dies_and_stops_all_on_sigterm(tmp_path: Path) -> None:
    write_specs(tmp_path, [
        DaemonSpec("first", ["sleep", "300"], str(tmp_path / "first.log")),
        DaemonSpec("second", ["sleep", "300"], str(tmp_path / "second.log")),
    ])
    supervisor = subprocess.Popen([sys.executable, "-m", "provision.supervisor", str(tmp_path)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (tmp_path / "supervisor.ready").exists() and len(read_pids(tmp_path)) == 2)
        first = read_pids(tmp_path)["first"]
        os.kill(first, signal.SIGKILL)
        _wait_for(lambda: read_pids(tmp_path).get("first", first) != first)
        pids = read_pids(tmp_path).values()
        assert all(_alive(pid) for pid in pids)
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(30)
        assert not any(_alive(pid) for pid in pids)
        assert read_pids(tmp_path) == {}
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()


def test_the_nginx_stand_in_says_what_it_is() -> None:
    import io
    import json
    import tarfile

    from provision.images import base as images

    with tarfile.open(fileobj=io.BytesIO(images.stand_in_nginx_archive())) as archive:
        index = archive.extractfile("index.json")
        assert index is not None
        manifest = json.load(index)["manifests"][0]
    assert manifest["annotations"]["io.containerd.image.name"] == images.NGINX_IMAGE
    assert b"not available" in images.STAND_IN_PAGE


def test_up_progress_is_one_plain_line_per_phase_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    progress = ConsoleProgress(Console(file=io.StringIO(), force_terminal=False))
    progress.phase("certificates")
    progress.done("CA, 5 serving/client certificates")
    progress.phase("node readiness")
    progress.failed()
    out, err = capsys.readouterr()
    assert re.fullmatch(r"certificates: CA, 5 serving/client certificates \(\d+\.\ds\)\n", out)
    assert re.fullmatch(r"node readiness failed after \d+\.\ds\n", err)


def test_every_provider_answers_the_one_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTILLA_HOME", str(tmp_path))
    chosen = provider("local", Options("unit-proto", workers=1, subnet="192.168.77.0/24"))
    assert isinstance(chosen, LocalProvider) and chosen.kind == "local" and chosen.name == "unit-proto"
    plan = chosen.plan()  # what up would make, and nothing made
    assert [(n.name, n.role) for n in plan.nodes] == [("unit-proto-master", "control-plane"),
                                                      ("unit-proto-worker-1", "worker")]
    assert not (tmp_path / "clusters").exists()
    assert chosen.status() == {} and not chosen.down() and chosen.clusters() == []
    for kind, (module, cls) in PROVIDERS.items():
        made = getattr(importlib.import_module(module), cls)
        for verb in ("plan", "up", "join", "down", "status", "clusters"):
            assert callable(getattr(made, verb)), (kind, verb)
    with pytest.raises(ProvisionError, match="no provider 'kind'"):
        provider("kind", Options())
    with pytest.raises(ProvisionError, match="needs --inventory"):
        provider("ssh", Options()).plan()


def test_workers_join_at_once_and_a_refused_join_is_tried_again() -> None:
    command = phases.JoinCommand("192.168.77.1:6444", "abcdef.0123456789abcdef", "sha256:00")
    assert str(command) == ("kctl join 192.168.77.1:6444 --token abcdef.0123456789abcdef "
                            "--discovery-token-ca-cert-hash sha256:00")
    tries: list[str] = []

    def join(node: str, given: phases.JoinCommand) -> None:
        tries.append(node)
        if tries.count(node) == 1:  # the apiserver has not seen the token's Secret yet
            raise RuntimeError("Unauthorized")

    phases.join_workers(["w1", "w2"], join, command, time.monotonic() + 5)
    assert sorted(tries) == ["w1", "w1", "w2", "w2"]

    def refused(node: str, given: phases.JoinCommand) -> None:
        raise RuntimeError("Unauthorized")

    with pytest.raises(phases.WaitTimeout, match=r"w1 joining .* \(last error: Unauthorized\); logs in x"):
        phases.join_workers(["w1"], refused, command, time.monotonic() + 0.5, hint="logs in x")


def test_the_summary_lists_every_node_with_its_status() -> None:
    nodes = tuple(n.plan() for n in localplan.plan("demo", workers=1, subnet="192.168.77.0/24", bridge="flt77",
                                                   pod_network="10.244.0.0/16"))
    made = Cluster("demo", "local", "192.168.77.1:6443", Path("/k"), nodes, "/logs", "kctl cluster down --name demo")
    shown = summary(made, {"demo-master": "Ready"}, 2.5)
    assert shown.title == 'cluster "demo" is up in 2.5s: apiserver https://192.168.77.1:6443'
    assert shown.rows == [["demo-master", "control-plane", "192.168.77.1", "10.244.0.0/24", "Ready"],
                          ["demo-worker-1", "worker", "192.168.77.101", "10.244.1.0/24", "Unknown"]]
    assert shown.notes[-1] == "  kctl cluster down --name demo" and "logs: /logs" in shown.notes


# ---------------------------------------------------------------- add-worker, remove-worker: the pure parts


def _state(workers: int, *, subnet: str = "192.168.77.0/24", pod_network: str = "10.244.0.0/16"
           ) -> localplan.ClusterState:
    return localplan.new_state(Options("grow", workers=workers, subnet=subnet, bridge="flt77", pod_network=pod_network))


def _placed(infos: list[localplan.NodeInfo]) -> list[tuple[str, str, str, str]]:
    return [(n.name, n.address, n.pod_cidr, n.host_veth) for n in infos]


def test_added_workers_continue_the_plan_of_up() -> None:
    assert _placed(localplan.next_workers(_state(2), 2)) == [
        ("grow-worker-3", "192.168.77.103", "10.244.3.0/24", "flt77-w3"),
        ("grow-worker-4", "192.168.77.104", "10.244.4.0/24", "flt77-w4"),
    ]


def test_a_removed_workers_number_and_pod_cidr_are_taken_again_lowest_first() -> None:
    state = _state(3)
    state.remove_nodes(["grow-worker-1"])
    added = localplan.next_workers(state, 2)
    assert _placed(added) == [
        ("grow-worker-1", "192.168.77.101", "10.244.1.0/24", "flt77-w1"),
        ("grow-worker-4", "192.168.77.104", "10.244.4.0/24", "flt77-w4"),
    ]
    state.add_nodes(added)  # listed in address order, the master first, as up lists them
    assert [n.name for n in state.node_infos()] == ["grow-master", *(f"grow-worker-{i}" for i in range(1, 5))]


def test_nodes_the_api_knows_are_planned_around_as_node_ipam_would() -> None:
    # A node joined by hand: node IPAM gave it the lowest free /24, and it may use a worker's name or address.
    placed = localplan.next_workers(_state(1), 1, taken_names=["grow-worker-2"], taken_addresses=["192.168.77.103"],
                                    taken_pod_cidrs=["10.244.2.0/24"])
    assert _placed(placed) == [("grow-worker-4", "192.168.77.104", "10.244.3.0/24", "flt77-w4")]


def test_a_full_subnet_or_pod_network_is_refused_with_what_is_taken() -> None:
    full = _state(99)  # .101-.199: the LoadBalancer pool starts at .200
    with pytest.raises(ProvisionError, match=r"subnet 192\.168\.77\.0/24 has no free worker address for 1 more "
                                             r"worker\(s\): workers take 192\.168\.77\.101-192\.168\.77\.199 "
                                             r"\(the LoadBalancer pool starts at 192\.168\.77\.200\), and every "
                                             "one is in use"):
        localplan.next_workers(full, 1)
    small = _state(1, subnet="192.168.77.0/25")  # .101-.126 fit below its broadcast address
    assert localplan.max_worker_number("192.168.77.0/25") == 26
    assert len(localplan.next_workers(small, 25)) == 25
    with pytest.raises(ProvisionError, match="no free worker address for 1 more"):
        localplan.next_workers(small, 26)
    with pytest.raises(ProvisionError, match=r"pod network 10\.244\.0\.0/22 has no free /24 left for grow-worker-4"):
        localplan.next_workers(_state(3, pod_network="10.244.0.0/22"), 1)  # the master and 3 workers hold all four
    with pytest.raises(ProvisionError, match="give --count 1 or more"):
        localplan.next_workers(_state(1), 0)
    assert len(_state(1).nodes) == 2  # planning changes no state


def test_a_nodes_daemons_are_the_ones_up_starts_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTILLA_HOME", str(tmp_path))
    state = _state(1)
    state.add_nodes(localplan.next_workers(state, 1))
    try:
        every = localdaemons.daemon_specs(state, etcd_port=12477)
        added = localdaemons.node_specs(state, state.node_infos()[-1])
    finally:
        for info in state.node_infos():
            with contextlib.suppress(OSError):
                (localdaemons.SOCKET_ROOT / info.name).rmdir()
    assert [s.name for s in added] == ["containerd/grow-worker-2", "kubelet/grow-worker-2", "proxy/grow-worker-2"]
    # The same daemons with the same command lines; `up` starts every containerd first, waiting for none
    # (each kubelet waits for its own socket), where add-worker waits for the new node's socket.
    ours = [s for s in every if localdaemons.is_node_spec(s, "grow-worker-2")]
    assert sorted((s.name, s.argv) for s in ours) == sorted((s.name, s.argv) for s in added)
    assert every[-2:] == added[1:]
    first = [s.name for s in every].index("etcd")
    assert {s.name for s in every[:first] if s.name.startswith("containerd/")} == {
        "containerd/grow-master", "containerd/grow-worker-1", "containerd/grow-worker-2"}
    assert all(not s.ready for s in every if s.name.startswith("containerd/"))


def test_the_master_and_unknown_nodes_cannot_be_removed() -> None:
    state = _state(1)
    with pytest.raises(ProvisionError, match='grow-master is the control plane of cluster "grow" and cannot be '
                                             r"removed \(kctl cluster down --name grow removes the whole cluster\)"):
        localworkers.worker(state, "grow-master")
    with pytest.raises(ProvisionError, match=r'"grow" has no worker grow-worker-9 \(its workers: grow-worker-1\;'):
        localworkers.worker(state, "grow-worker-9")
    assert localworkers.worker(state, "grow-worker-1").address == "192.168.77.101"


def test_only_the_local_provider_changes_workers(tmp_path: Path) -> None:
    local = provider("local", Options("unit-workers"))
    assert workers(local, "add") is local
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text("name: lab\nhosts:\n  - {name: m, address: 192.168.60.10, role: master}\n")
    ssh = provider("ssh", Options(inventory=str(inventory)))
    with pytest.raises(ProvisionError, match=r"add-worker is not supported by the ssh provider \(only by local\): put "
                                             "the machine in the inventory"):
        workers(ssh, "add")
    with pytest.raises(ProvisionError, match="remove-worker is not supported by the vagrant provider"):
        workers(provider("vagrant", Options()), "remove")


def test_supervisor_takes_new_daemons_and_drops_removed_ones_on_sighup(tmp_path: Path) -> None:
    keep, gone, new = (DaemonSpec(n, ["sleep", "300"], str(tmp_path / f"{n}.log")) for n in ("keep", "gone", "new"))
    write_specs(tmp_path, [keep, gone])
    supervisor = subprocess.Popen([sys.executable, "-m", "provision.supervisor", str(tmp_path)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (tmp_path / "supervisor.ready").exists() and len(read_pids(tmp_path)) == 2)
        assert reloadable(supervisor.pid)
        before = read_pids(tmp_path)
        write_specs(tmp_path, [keep, new])
        supervisor.send_signal(signal.SIGHUP)
        _wait_for(lambda: set(read_pids(tmp_path)) == {"keep", "new"})
        after = read_pids(tmp_path)
        assert after["keep"] == before["keep"] and _alive(after["new"])  # the unchanged one runs on
        _wait_for(lambda: not _alive(before["gone"]))
        (tmp_path / "supervisor.json").write_text("not json")  # a broken file changes nothing
        supervisor.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert read_pids(tmp_path) == after and supervisor.poll() is None
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(30)
        assert not any(_alive(pid) for pid in after.values())
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert not reloadable(sleeper.pid)  # SIGHUP would end it: add-worker refuses such a supervisor
    finally:
        sleeper.kill()
        sleeper.wait()


def test_daemons_cache_their_bytecode_away_from_the_sources(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    """PYTHONDONTWRITEBYTECODE (no .pyc beside the sources) would have every daemon compile every module at
    every start: they get a bytecode folder of their own instead; a prefix already chosen is kept."""
    from provision import processes

    monkeypatch.setattr(processes, "PYCACHE", tmp_path / "pycache")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)
    env = processes.daemon_env({"EXTRA": "x"})
    assert env["EXTRA"] == "x" and "PYTHONDONTWRITEBYTECODE" not in env
    assert env["PYTHONPYCACHEPREFIX"] == str(tmp_path / "pycache") and (tmp_path / "pycache").is_dir()
    monkeypatch.setenv("PYTHONPYCACHEPREFIX", "/elsewhere")
    assert processes.daemon_env()["PYTHONPYCACHEPREFIX"] == "/elsewhere"
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE")
    monkeypatch.delenv("PYTHONPYCACHEPREFIX")
    assert "PYTHONPYCACHEPREFIX" not in processes.daemon_env()  # Python's own default: __pycache__


def test_an_images_blobs_are_named_by_their_digests() -> None:
    """blobs() reads the digests from the manifest (no second hashing): they must be the content's."""
    import hashlib

    from provision.images.oci import make_image

    base, top = b"base layer" * 1000, b"top layer"
    digests: dict[int, str] = {}
    image = make_image([base, top], {"Cmd": ["true"]}, digests=digests)
    again = make_image([base], {"Cmd": ["sh"]}, digests=digests)
    for made in (image, again):
        for digest, data in made.blobs().items():
            assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert set(again.blobs()) - {f"sha256:{hashlib.sha256(again.config).hexdigest()}"} == {
        "sha256:" + hashlib.sha256(base).hexdigest()}
