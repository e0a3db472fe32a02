"""Bootstrap a whole cluster of machines from this host: the SSH and Vagrant providers' engine.

Given the machines (each a `Host` plus its node name, private address and
role), `up` goes through these phases, reported as it goes:

1. host: plans the cluster (components.ClusterPlan), makes its PKI and
   kubeconfigs once and keeps them in ~/.flotilla/clusters/<name>/bundle (so
   a second run writes identical files), builds Flotilla's wheels (`pip
   wheel`: guests may not reach PyPI);
2. machines, all at once: installs the wheels, writes each machine's files,
   starts the master's etcd, image registry and control plane (master) and
   containerd and the proxy (every node: the master is a tainted
   control-plane node), the kubelet on the master;
3. control plane, images, join, node readiness: the phases every provider
   shares (provision/phases.py): cluster-info, kube-dns and a bootstrap token
   published through the API, the base images built here and pushed to the
   registry on the master (nodes pull `nginx` from it: docker.io names
   resolve there), each new worker joined, every Node Ready read from the
   API; the admin kubeconfig goes here, to kctl's default config and to kctl
   on the master.

Workers join as with kubeadm: each worker without credentials runs `kctl join`
with the token and the CA's pin (`join`, its bootstrap kubeconfig written),
then its kubelet starts with `--bootstrap-kubeconfig`, obtaining its own client
certificate through a CSR the controller manager signs. Workers that joined
before are not joined again, and no token is made when none needs one; the
token is good for the new workers' names only and is deleted once they are
Ready (`up` prints `kctl token create --print-join-command`, never a live
token). Roles are labelled by the admin once Nodes are Ready. The
master's kubelet, the kubelet API's serving certificates and the proxy's
kubeconfig come from this host.

Several masters (1, 3, 5 or 7, kubeadm's stacked etcd): each runs an etcd
member on its address and the whole control plane (steps.master_units), and
every client dials the API's virtual IP, which one master's `api-vip` daemon
holds at a time. No master waits for another while the machines are
provisioned (a member of a new cluster is ready only once a quorum runs):
`up` waits for the API at the VIP. The first master also runs the image
registry and the NFS export. etcd's membership is what the first `up` made:
a re-run with other masters is refused (`check_etcd_members`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message

from client import bootstrap, certificates
from client import config as clientconfig
from controlplane.controllers.nfs import nfs_storage_class
from proto.errors import AlreadyExists, ApiError
from provision import components, phases
from provision.bootstrap import steps
from provision.bootstrap.host import BootstrapError, Host
from provision.images import registry
from provision.images.base import push_node_images
from provision.images.distribution import PushResult
from provision.progress import Progress
from provision.provider import Cluster, cluster_dir, home

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POD_NETWORK = "10.244.0.0/16"
READY_TIMEOUT = 900.0
# Reproducible wheel archives: the same source gives the same bytes, so a re-run installs nothing.
SOURCE_DATE_EPOCH = "315532800"
POLL = 2.0  # seconds between checks: every one is a round trip to a VM that may be emulated


@dataclass
class Machine:
    """One machine of the cluster: how to reach it and what it becomes."""

    host: Host
    node: str  # the Node's name (the machine's hostname)
    address: str  # its InternalIP: the private network's address, never a NAT one
    role: str  # "master" or "worker"

    def __post_init__(self) -> None:
        if self.role not in ("master", "worker"):
            raise BootstrapError(f"{self.node}: role must be master or worker, not {self.role!r}")


MAX_MASTERS = 7  # etcd's advice: more members only slow every write down


def check_masters(masters: list[str], api_vip: str, addresses: list[str]) -> None:
    """How many masters, and the API's virtual IP they share (BootstrapError naming what is wrong).

    `masters`: the control-plane machines' addresses; `addresses`: every machine's. One master is the API's
    address itself (no VIP). Several form an etcd cluster, whose quorum is a majority: an odd count from 3
    to MAX_MASTERS (2 masters survive no loss, 4 no more than 3 do), and a VIP on the masters' /24 (the
    segment the announcer's gratuitous ARP reaches) that no machine owns.
    """
    count = len(masters)
    if count == 0:
        raise BootstrapError("no master: one host (or an odd number, up to 7) must have role master")
    if count > MAX_MASTERS:
        raise BootstrapError(f"{count} masters: at most {MAX_MASTERS} (give 1, 3, 5 or 7): every etcd member more "
                             "slows every write down")
    if count % 2 == 0:
        raise BootstrapError(f"{count} masters: give an odd number (1, 3, 5 or 7): etcd's quorum is a majority, so "
                             f"{count} masters survive no more losses than {count - 1} do")
    if count == 1:
        if api_vip:
            raise BootstrapError(f"api_vip {api_vip} is for several masters: one master's API is at its own "
                                 f"address {masters[0]}")
        return
    if not api_vip:
        raise BootstrapError(f"{count} masters need an api_vip: a free address on their network that one master "
                             "at a time announces, named in every kubeconfig")
    try:
        vip = ipaddress.IPv4Address(api_vip)
    except ValueError:
        raise BootstrapError(f"api_vip {api_vip!r} is not an IPv4 address") from None
    network = ipaddress.IPv4Network(f"{masters[0]}/24", strict=False)
    strays = [m for m in masters if ipaddress.IPv4Address(m) not in network]
    if strays:
        raise BootstrapError(f"masters {', '.join(strays)} are outside {network}, the first master's network: "
                             "the API's virtual IP moves between masters on one network")
    if vip not in network or vip in (network.network_address, network.broadcast_address):
        raise BootstrapError(f"api_vip {api_vip} must be a host address of the masters' network {network}")
    if api_vip in addresses:
        raise BootstrapError(f"api_vip {api_vip} is a host's address: the VIP must be an address no machine has")


def make_plan(name: str, machines: list[Machine], *, pod_network: str = DEFAULT_POD_NETWORK,
              lb_pool: str = "", offline: bool = False, api_vip: str = "") -> components.ClusterPlan:
    """The cluster's plan: masters first (the first one also runs the image registry and the NFS export).

    With several masters every client dials `api_vip` (`master_address`); each master's etcd member listens
    on its address, and the apiservers dial their own member first (components.master_control_plane_argvs).
    """
    masters = [m for m in machines if m.role == "master"]
    check_masters([m.address for m in masters], api_vip, [m.address for m in machines])
    ordered = [*masters, *[m for m in machines if m.role != "master"]]
    nodes = tuple(components.NodePlan(m.node, m.address, f"{pod_network.rsplit('.', 2)[0]}.{i}.0/24",
                                      control_plane=m.role == "master") for i, m in enumerate(ordered))
    ha = len(masters) > 1
    # Every member also answers on its loopback: the one URL that names "this master's member" everywhere.
    return components.ClusterPlan(name, api_vip if ha else masters[0].address, nodes, pod_network,
                                  f"https://127.0.0.1:{steps.ETCD_PORT}", Path(steps.CONFIG_DIR), lb_pool=lb_pool,
                                  python=f"{steps.VENV}/bin/python",
                                  registry=registry.registry_address(masters[0].address), offline=offline, ha=ha)


def load_bundle(plan: components.ClusterPlan) -> components.Bundle:
    """The cluster's files, made once per plan and kept (the CA survives a change of plan)."""
    folder = cluster_dir(plan.name) / "bundle"
    key = json.dumps({"nodes": [(n.name, n.address) for n in plan.nodes], "master": plan.master_address})
    stamp = folder / "plan.json"
    if stamp.exists() and stamp.read_text() == key:
        files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
                 if p.is_file() and p != stamp}
        return components.Bundle(files)
    # The encryption key is kept: a new one would leave every stored Secret unreadable. So is etcd's CA:
    # members restarted one machine after another with peer certificates of two CAs would not talk.
    bundle = components.bundle(plan, components.read_ca(folder), keep=components.read_kept(folder),
                               etcd_ca=components.read_etcd_ca(folder))
    bundle.write(folder)
    stamp.write_text(key)
    return bundle


def check_etcd_members(plan: components.ClusterPlan, machines: list[Machine]) -> None:
    """Refuse a plan whose masters differ from the etcd members an earlier `up` made (when either has several)
    while some planned master still holds etcd data; remember the plan's masters otherwise.

    etcd's membership changes only through `member add`/`remove` (the local provider's `add-master`): a
    re-run of `up` with other masters would start members with an `--initial-cluster` the running members do
    not share, which etcd refuses, or leave a machine that was one master alone with a one-member etcd.
    Machines without etcd data (VMs destroyed and made again) make a new cluster: nothing to keep.
    """
    path = cluster_dir(plan.name) / "etcd-members.json"
    members = [[n.name, n.address] for n in plan.nodes if n.control_plane]
    before = json.loads(path.read_text()) if path.exists() else members
    if before != members and (len(before) > 1 or len(members) > 1):
        with ThreadPoolExecutor(max_workers=len(members)) as pool:
            masters = [m for m in machines if m.role == "master"]
            holding = [m.node for m, has in zip(masters, pool.map(lambda m: steps.has_etcd_data(m.host), masters),
                                                strict=True) if has]
        if holding:
            raise BootstrapError(
                f"cluster {plan.name}: its etcd members are {', '.join(name for name, _ in before)} (made by an "
                f"earlier up, and {', '.join(holding)} still holds etcd data); the inventory now names "
                f"{', '.join(name for name, _ in members)} as masters. Re-running up does not change etcd's "
                "membership: keep the masters as they were, or take the cluster down and up again (kctl etcd "
                "snapshot save/restore keeps its data)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(members))


def build_wheels() -> list[Path]:
    """Flotilla and its dependencies as wheels, built here (the guests cannot use PyPI over HTTPS)."""
    out = home() / "wheels"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("flotilla-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory() as build_dir:
        # A clean copy of the source: a stale build/ folder must not leak into the wheel.
        src = Path(build_dir) / "src"
        shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info",
                                                                  "__pycache__", ".vagrant", "tests", "bench"))
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(out),
                               "--find-links", str(out), str(src)], capture_output=True, text=True, timeout=900,
                              env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH})
    if done.returncode != 0:
        raise BootstrapError(f"pip wheel failed: {done.stderr.strip()[-500:]}")
    newest: dict[str, Path] = {}
    for wheel in sorted(out.glob("*.whl"), key=lambda p: p.stat().st_mtime):
        newest[wheel.name.split("-")[0].lower()] = wheel  # one version per project: the latest built
    return sorted(newest.values())


@dataclass
class NodeState:
    """What provisioning changed on each node, for the steps after the apiserver is up."""

    changed: dict[str, set[str]] = field(default_factory=dict)
    code_changed: dict[str, bool] = field(default_factory=dict)
    nfs_exported: list[bool] = field(default_factory=list)  # the first master's export_nfs answer


def provision_node(machine: Machine, plan: components.ClusterPlan, bundle: components.Bundle, wheels: list[Path],
                   report: Callable[[str], None], timings: dict[str, float], state: NodeState) -> None:
    """Everything one machine needs, in order; each step idempotent."""
    host, node = machine.host, plan.node(machine.node)

    def step(what: str, action: Callable[[], object]) -> None:
        report(what)
        started = time.monotonic()
        action()
        timings[f"{machine.node}: {what}"] = round(time.monotonic() - started, 1)

    changed: set[str] = set()
    installed: list[bool] = []
    step("install wheels", lambda: installed.append(steps.install_flotilla(host, wheels)))
    step("write config", lambda: changed.update(steps.sync_config(host, steps.node_files(plan, node, bundle))))
    # A worker's kubelet waits for `join` (after the apiserver is up): see join_workers.
    daemons = (steps.master_units(plan, node) if node.control_plane else []) + [
        u for u in steps.node_units(plan, node) if node.control_plane or u.name != "kubelet"]
    step("start daemons", lambda: steps.apply_units(host, daemons, changed, code_changed=installed[0]))
    state.changed[machine.node] = changed
    state.code_changed[machine.node] = installed[0]
    if node.control_plane:
        admin = bundle.files[f"kubeconfigs/{components.ADMIN.name}.conf"]
        step("kctl config", lambda: steps.kctl_config(host, _login_user(host), admin))
    if node == steps.first_master(plan):
        step("nfs export", lambda: state.nfs_exported.append(
            steps.export_nfs(host, [n.address for n in plan.nodes])))
    report("done")


def _create(kubeconfig: Path, obj: Message) -> bool:
    """Create `obj` as the admin (already there is fine); for phases.wait, which retries while the API warms up."""
    async def create() -> None:
        async with clientconfig.load(kubeconfig=str(kubeconfig)).client(timeout=10) as client:
            with contextlib.suppress(AlreadyExists):
                await client.create(obj)

    try:
        asyncio.run(create())
    except (ApiError, clientconfig.ConfigError) as err:
        raise RuntimeError(f"cannot create {type(obj).__name__} {obj.metadata.name}: {err}") from None  # type: ignore[attr-defined]
    return True


def join(machine: Machine, command: phases.JoinCommand) -> None:
    """kubeadm's join on one worker: `kctl join` there (CA pinned, bootstrap kubeconfig written)."""
    steps.join(machine.host, str(command))


def start_kubelets(plan: components.ClusterPlan, workers: list[Machine], state: NodeState) -> None:
    """Every worker's kubelet, once the worker has credentials (TLS bootstrap: its own CSR)."""
    def start(worker: Machine) -> None:
        kubelet = [u for u in steps.node_units(plan, plan.node(worker.node)) if u.name == "kubelet"]
        steps.apply_units(worker.host, kubelet, state.changed.get(worker.node, set()),
                          code_changed=state.code_changed.get(worker.node, False))

    with ThreadPoolExecutor(max_workers=max(1, len(workers))) as pool:
        for future in [pool.submit(start, w) for w in workers]:
            future.result()


def _login_user(host: Host) -> str:
    return str(getattr(host.c, "user", "") or "")


def up(name: str, machines: list[Machine], *, pod_network: str = DEFAULT_POD_NETWORK, lb_pool: str = "",
       timeout: float = READY_TIMEOUT, write_default_config: bool = True, progress: Progress,
       kind: str = "ssh", down_command: str = "", offline: bool = False, api_vip: str = "") -> Cluster:
    """Bootstrap every machine and wait until all Nodes are Ready (several masters: the API at `api_vip`)."""
    started = time.monotonic()
    timings: dict[str, float] = {}
    plan = make_plan(name, machines, pod_network=pod_network, lb_pool=lb_pool, offline=offline, api_vip=api_vip)
    folder = cluster_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    hint = "logs: journalctl -u 'flotilla-*' on the machines"
    t0 = time.monotonic()

    def done(what: str, detail: str) -> None:
        nonlocal t0
        timings[what] = round(time.monotonic() - t0, 1)
        progress.done(detail)
        t0 = time.monotonic()

    progress.phase("host")
    check_etcd_members(plan, machines)
    bundle = load_bundle(plan)
    wheels = build_wheels()
    done("host: PKI, wheels", f"PKI in {folder / 'bundle'}, {len(wheels)} wheels")

    progress.phase("machines")
    state = NodeState()

    def run(machine: Machine) -> None:
        def report(what: str) -> None:
            progress.step(f"{machine.node} ({machine.role}): {what}")
        try:
            provision_node(machine, plan, bundle, wheels, report, timings, state)
        except Exception as err:
            report(f"failed: {err}")  # at once: the other machines may take minutes more
            raise

    with ThreadPoolExecutor(max_workers=len(machines)) as pool:
        for future in [pool.submit(run, m) for m in machines]:
            future.result()
    done("machines", f"{len(machines)} machines: Flotilla installed, files written, daemons started")

    progress.phase("control plane")
    kubeconfig = folder / "kubeconfig"
    certificates.write_private(kubeconfig, bundle.files[f"kubeconfigs/{components.ADMIN.name}.conf"])
    deadline = time.monotonic() + timeout
    phases.wait_for_port(plan.grpc_server, "apiserver", deadline, hint=hint)
    workers = [m for m in machines if m.role == "worker"]
    new = [w for w in workers if steps.needs_join(w.host, plan, plan.node(w.node))]
    token = bootstrap.generate_token() if new else None
    phases.wait(lambda: phases.publish(kubeconfig, plan, bundle.ca().cert_pem, token=token,
                                       nodes=[w.node for w in new]),
                "cluster-info and kube-dns", deadline, hint=hint, interval=POLL)
    if state.nfs_exported == [True]:  # shared storage: the first master's export, ReadWriteMany (docs/storage.md)
        nfs_server = steps.first_master(plan).address  # never the VIP: the export stays on one machine
        phases.wait(lambda: _create(kubeconfig, nfs_storage_class(nfs_server, steps.NFS_SHARE)),
                    "the nfs StorageClass", deadline, hint=hint, interval=POLL)
    masters = [n.name for n in plan.nodes if n.control_plane]
    through = f" (the VIP, held by one of {len(masters)} masters)" if plan.ha else ""
    done("apiserver ready", f"apiserver {plan.https_url}{through} (gRPC {plan.grpc_server}), cluster-info, "
                            f"kube-dns {plan.dns_ip}")

    progress.phase("images")
    pki = folder / "bundle"
    phases.wait(lambda: registry.cluster_ready(plan.registry, pki / registry.CA_FILE), "image registry", deadline,
                hint=hint, interval=POLL)
    # Retried as a whole (blobs already there are skipped): on a loaded emulated machine the registry may
    # drop a connection mid-push, which ended the first Vagrant three-master bootstrap.
    pushed: list[PushResult] = []

    def push_all() -> bool:
        pushed[:] = push_node_images(plan.registry, registry.cluster_push_target(pki, plan.registry))
        return True

    phases.wait(push_all, "the base images pushed", deadline, hint=hint, interval=POLL)
    done("images pushed", ", ".join(p.reference.partition("/")[2] for p in pushed) + f" pushed to {plan.registry}")

    progress.phase("join")
    joined = "every worker had joined before: no token made"
    if token is not None:
        command = phases.JoinCommand.for_plan(plan, token, bundle.ca().cert_pem)
        by_name = {w.node: w for w in new}
        phases.join_workers(list(by_name), lambda node, cmd: join(by_name[node], cmd), command, deadline,
                            hint=hint)
        joined = phases.join_detail(len(new))
    start_kubelets(plan, workers, state)
    done("workers join", joined)

    progress.phase("node readiness")
    phases.wait_for_nodes_ready(kubeconfig, [m.node for m in machines], deadline, hint=hint,
                                report=progress.step, interval=POLL)
    if token is not None:  # every worker holds its certificate: nothing else may join with this token
        phases.delete_token(kubeconfig, token)
    phases.wait(lambda: phases.label_node_roles(kubeconfig, plan), "the nodes' role labels", deadline, hint=hint,
                interval=POLL)
    done("nodes ready", f"{len(machines)} Nodes Ready")
    if write_default_config:
        phases.point_kctl_at(kubeconfig)
    timings["total"] = round(time.monotonic() - started, 1)
    (folder / "timings.json").write_text(json.dumps(timings, indent=2))
    return Cluster(name, kind, f"{plan.master_address}:{plan.api_port}", kubeconfig, plan.nodes,
                   hint.removeprefix("logs: "), down_command or f"kctl cluster down --provider {kind}", timings)


def down(name: str, machines: list[Machine], *, api_vip: str = "") -> None:
    """Stop and remove what `up` installed on every machine (the API's VIP too, wherever a killed announcer
    left it), and the cluster's folder here."""
    addresses = (api_vip,) if api_vip else ()
    with ThreadPoolExecutor(max_workers=max(1, len(machines))) as pool:
        for future in [pool.submit(steps.teardown, m.host, _login_user(m.host), announced=addresses)
                       for m in machines]:
            future.result()
    phases.forget_default_config(name, cluster_dir(name) / "kubeconfig")
    shutil.rmtree(cluster_dir(name), ignore_errors=True)


def status(plan: components.ClusterPlan, machines: list[Machine]) -> dict[str, bool]:
    """Each machine's flotilla units, active or not (`systemctl is-active`, one round trip per machine):
    a single master's control plane by daemon name, every other daemon as daemon/node, as the local
    provider names them (several masters run one control plane each)."""
    def read(machine: Machine) -> dict[str, bool]:
        node = plan.node(machine.node)
        units = (steps.master_units(plan, node) if node.control_plane else []) + steps.node_units(plan, node)
        out = machine.host.run(f"{machine.host.systemctl} is-active " + " ".join(u.service for u in units),
                               check=False).split()
        per_node = {u.name for u in units} if plan.ha else {u.name for u in steps.node_units(plan, node)}
        active = out + [""] * (len(units) - len(out))  # a unit systemd does not know prints nothing useful
        return {(f"{u.name}/{node.name}" if u.name in per_node else u.name): active[i] == "active"
                for i, u in enumerate(units)}

    result: dict[str, bool] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(machines))) as pool:
        for found in pool.map(read, machines):
            result.update(found)
    return result
