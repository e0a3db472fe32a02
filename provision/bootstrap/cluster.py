"""Bootstrap a whole cluster of machines from this host: the SSH and Vagrant providers' engine.

Given the machines (each a `Host` plus its node name, private address and
role), `up`:

1. on this host: plans the cluster (components.ClusterPlan), makes its PKI
   and kubeconfigs once and keeps them in ~/.flotilla/clusters/<name>/bundle
   (so a second run writes identical files), builds Flotilla's wheels
   (`pip wheel`: guests may not reach PyPI);
2. on every node at once: installs the wheels, writes its files, starts the
   master's etcd, image registry and control plane (master) and containerd,
   the kubelet and the proxy (every node: the master is a tainted
   control-plane node);
3. waits for the apiserver, applies the kube-dns Service, builds the base
   images here and pushes them to the registry on the master (nodes pull
   `nginx` from it: docker.io names resolve there), waits until every Node is
   Ready, writes the admin kubeconfig here and for kctl on the master.

Workers join as with kubeadm: once the apiserver serves, the master prints a
join command (`kctl token create --print-join-command`), each worker runs it
(`kctl join`: CA pinned by hash, bootstrap kubeconfig written) and its kubelet
starts with `--bootstrap-kubeconfig`, obtaining its own client certificate
through a CSR the controller manager signs. The master's kubelet, the kubelet
API's serving certificates and the proxy's kubeconfig come from this host.
"""

from __future__ import annotations

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

import yaml
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from provision import components
from provision.bootstrap import steps
from provision.bootstrap.host import BootstrapError, Host
from provision.images import registry
from provision.images.base import push_node_images
from provision.local import dns_manifest, home

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POD_NETWORK = "10.244.0.0/16"
READY_TIMEOUT = 900.0
# Reproducible wheel archives: the same source gives the same bytes, so a re-run installs nothing.
SOURCE_DATE_EPOCH = "315532800"

console = Console(stderr=True)


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


@dataclass
class Result:
    name: str
    kubeconfig: Path
    nodes: list[str]
    timings: dict[str, float] = field(default_factory=dict)


def cluster_folder(name: str) -> Path:
    return home() / "clusters" / name


def make_plan(name: str, machines: list[Machine], *, pod_network: str = DEFAULT_POD_NETWORK,
              lb_pool: str = "") -> components.ClusterPlan:
    masters = [m for m in machines if m.role == "master"]
    if len(masters) != 1:
        raise BootstrapError(f"cluster {name}: exactly one master is needed, the inventory has {len(masters)}")
    master = masters[0]
    ordered = [master, *[m for m in machines if m is not master]]
    nodes = tuple(components.NodePlan(m.node, m.address, f"{pod_network.rsplit('.', 2)[0]}.{i}.0/24",
                                      control_plane=m is master) for i, m in enumerate(ordered))
    return components.ClusterPlan(name, master.address, nodes, pod_network, f"http://127.0.0.1:{steps.ETCD_PORT}",
                                  Path(steps.CONFIG_DIR), lb_pool=lb_pool, python=f"{steps.VENV}/bin/python",
                                  registry=registry.registry_address(master.address))


def load_bundle(plan: components.ClusterPlan) -> components.Bundle:
    """The cluster's files, made once per plan and kept (the CA survives a change of plan)."""
    folder = cluster_folder(plan.name) / "bundle"
    key = json.dumps({"nodes": [(n.name, n.address) for n in plan.nodes], "master": plan.master_address})
    stamp = folder / "plan.json"
    if stamp.exists() and stamp.read_text() == key:
        files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
                 if p.is_file() and p != stamp}
        return components.Bundle(files)
    bundle = components.bundle(plan, components.read_ca(folder))
    bundle.write(folder)
    stamp.write_text(key)
    return bundle


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


def kctl(kubeconfig: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    # kctl.main has no __main__ guard: call its entry point (the same path a user's `kctl` takes).
    return subprocess.run([sys.executable, "-c", "from kctl.main import main; main()", *args], input=stdin,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KCTL_CONFIG": str(kubeconfig)})


def ready_nodes(kubeconfig: Path) -> set[str]:
    out = kctl(kubeconfig, "get", "nodes").stdout
    return {line.split()[0] for line in out.splitlines()[1:] if len(line.split()) > 1 and line.split()[1] == "Ready"}


def _wait(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(2)
    raise BootstrapError(f"{what}: not ready after {timeout:.0f}s")


@dataclass
class NodeState:
    """What provisioning changed on each node, for the steps after the apiserver is up."""

    changed: dict[str, set[str]] = field(default_factory=dict)
    code_changed: dict[str, bool] = field(default_factory=dict)


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
    daemons = (steps.master_units(plan) if node.control_plane else []) + [
        u for u in steps.node_units(plan, node) if node.control_plane or u.name != "kubelet"]
    step("start daemons", lambda: steps.apply_units(host, daemons, changed, code_changed=installed[0]))
    state.changed[machine.node] = changed
    state.code_changed[machine.node] = installed[0]
    if node.control_plane:
        admin = bundle.files[f"kubeconfigs/{components.ADMIN.name}.conf"]
        step("kctl config", lambda: steps.kctl_config(host, _login_user(host), admin))
    report("done")


def join_workers(plan: components.ClusterPlan, machines: list[Machine], state: NodeState) -> list[str]:
    """kubeadm's join: the master prints a join command (a fresh bootstrap token and the CA's hash), each
    worker without credentials runs it, then every worker's kubelet starts (TLS bootstrap: its own CSR).

    Workers that joined before are not joined again, and no token is made when none needs one.
    """
    master = next(m for m in machines if m.role == "master")
    workers = [m for m in machines if m.role == "worker"]
    new = [w for w in workers if steps.needs_join(w.host, plan, plan.node(w.node))]
    if new:
        # On the master, as its admin: the join command names the token port and pins the CA.
        command = master.host.run("KCTL_CONFIG=/root/.kctl/config kctl token create --ttl 1h --print-join-command "
                                  "--description 'flotilla bootstrap'", timeout=300).strip().splitlines()[-1]

    def start(worker: Machine) -> None:
        node = plan.node(worker.node)
        if worker in new:
            steps.join(worker.host, command)
        kubelet = [u for u in steps.node_units(plan, node) if u.name == "kubelet"]
        steps.apply_units(worker.host, kubelet, state.changed.get(worker.node, set()),
                          code_changed=state.code_changed.get(worker.node, False))

    with ThreadPoolExecutor(max_workers=max(1, len(workers))) as pool:
        for future in [pool.submit(start, w) for w in workers]:
            future.result()
    return [w.node for w in new]


def _login_user(host: Host) -> str:
    return str(getattr(host.c, "user", "") or "")


def up(name: str, machines: list[Machine], *, pod_network: str = DEFAULT_POD_NETWORK, lb_pool: str = "",
       timeout: float = READY_TIMEOUT, write_default_config: bool = True) -> Result:
    """Bootstrap every machine and wait until all Nodes are Ready."""
    started = time.monotonic()
    timings: dict[str, float] = {}
    plan = make_plan(name, machines, pod_network=pod_network, lb_pool=lb_pool)
    folder = cluster_folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as progress:
        prep = progress.add_task("host: PKI, wheels", total=1)
        t0 = time.monotonic()
        bundle = load_bundle(plan)
        wheels = build_wheels()
        timings["host: PKI, wheels"] = round(time.monotonic() - t0, 1)
        progress.update(prep, completed=1)
        tasks = {m.node: progress.add_task(f"{m.node} ({m.role}): connecting", total=1) for m in machines}
        state = NodeState()

        def run(machine: Machine) -> None:
            def report(what: str) -> None:
                if not console.is_terminal:  # Vagrant's trigger pipes our output: one plain line per step
                    console.print(f"{machine.node}: {what}", highlight=False)
                progress.update(tasks[machine.node], description=f"{machine.node} ({machine.role}): {what}",
                                completed=1 if what == "done" else 0)
            try:
                provision_node(machine, plan, bundle, wheels, report, timings, state)
            except Exception as err:
                report(f"[red]failed[/]: {err}")  # at once: the other nodes may take minutes more
                raise

        with ThreadPoolExecutor(max_workers=len(machines)) as pool:
            for future in [pool.submit(run, m) for m in machines]:
                future.result()
        kubeconfig = folder / "kubeconfig"
        kubeconfig.write_bytes(bundle.files[f"kubeconfigs/{components.ADMIN.name}.conf"])
        kubeconfig.chmod(0o600)
        ready = progress.add_task("apiserver", total=1)
        t0 = time.monotonic()
        _wait(lambda: kctl(kubeconfig, "get", "namespaces").returncode == 0, "apiserver", timeout)
        # kube-dns, and kube-public/cluster-info: what `kctl join` on the workers trusts and reads.
        published = dns_manifest(plan.master_address) + "---\n" + yaml.safe_dump(
            components.cluster_info_manifest(plan, bundle.ca().cert_pem), sort_keys=False)
        _wait(lambda: kctl(kubeconfig, "apply", "-f", "-", stdin=published).returncode == 0,
              "kube-dns Service and cluster-info", 120)
        timings["apiserver ready"] = round(time.monotonic() - t0, 1)
        progress.update(ready, completed=1, description="apiserver: serving")
        pushing = progress.add_task(f"images -> {plan.registry}", total=1)
        t0 = time.monotonic()
        _wait(lambda: registry.ready(plan.registry), "image registry", 300)
        pushed = push_node_images(plan.registry)
        timings["images pushed"] = round(time.monotonic() - t0, 1)
        progress.update(pushing, completed=1, description=f"images -> {plan.registry}: "
                        + ", ".join(p.reference.partition("/")[2] for p in pushed))
        joining = progress.add_task("workers: join", total=1)
        t0 = time.monotonic()
        joined = join_workers(plan, machines, state)
        timings["workers join"] = round(time.monotonic() - t0, 1)
        progress.update(joining, completed=1, description=f"workers: {', '.join(joined) or 'none'} joined "
                        "(bootstrap token, CSR signed by the cluster CA)")
        nodes = progress.add_task(f"Nodes Ready (0/{len(machines)})", total=len(machines))
        t0 = time.monotonic()

        def all_ready() -> bool:
            got = ready_nodes(kubeconfig)
            progress.update(nodes, completed=len(got), description=f"Nodes Ready ({len(got)}/{len(machines)})")
            return got >= {m.node for m in machines}

        _wait(all_ready, "Nodes Ready", timeout)
        timings["nodes ready"] = round(time.monotonic() - t0, 1)
    if write_default_config:
        default = Path(os.environ.get("KCTL_CONFIG", Path.home() / ".kctl" / "config"))
        default.parent.mkdir(parents=True, exist_ok=True)
        if not default.exists() or not default.samefile(kubeconfig):  # KCTL_CONFIG may point at ours already
            shutil.copyfile(kubeconfig, default)
    timings["total"] = round(time.monotonic() - started, 1)
    (folder / "timings.json").write_text(json.dumps(timings, indent=2))
    return Result(name, kubeconfig, [m.node for m in machines], timings)


def down(name: str, machines: list[Machine]) -> None:
    """Stop and remove what `up` installed on every machine, and the cluster's folder here."""
    with ThreadPoolExecutor(max_workers=max(1, len(machines))) as pool:
        for future in [pool.submit(steps.teardown, m.host, _login_user(m.host)) for m in machines]:
            future.result()
    shutil.rmtree(cluster_folder(name), ignore_errors=True)


def summary(result: Result) -> str:
    lines = [f'cluster "{result.name}" is up in {result.timings.get("total", 0):.0f}s: '
             f"{len(result.nodes)} nodes Ready ({', '.join(result.nodes)})",
             f"kubeconfig: {result.kubeconfig} (copied to kctl's default config)",
             "next: kctl get nodes -o wide; kctl run nginx --image=nginx; kctl get pods -o wide"]
    return "\n".join(lines)
