"""The local provider: a Flotilla cluster on this machine, started by `kctl cluster up`.

Today it brings up the control plane: etcd, the apiserver, the scheduler and
the controller manager, as detached processes with their logs, pid files and a
kubeconfig under `~/.flotilla/clusters/<name>/` (or $FLOTILLA_HOME/clusters/<name>/).
Worker nodes (network namespaces, each with containerd, kubelet and proxy) come
with the provisioning work and build on the same folder layout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from provision.processes import Process, start_apiserver, start_etcd

# Daemons that only need the apiserver's address, started after it in this order.
CONTROL_PLANE_DAEMONS = (
    ("scheduler", "controlplane.scheduler.main"),
    ("controller-manager", "controlplane.controllers.main"),
)
DEFAULT_ETCD_PORT = 12379  # not 2379: a distribution's own etcd may already hold that
DEFAULT_API_PORT = 6443


def home() -> Path:
    return Path(os.environ.get("FLOTILLA_HOME", Path.home() / ".flotilla"))


def cluster_dir(name: str) -> Path:
    return home() / "clusters" / name


@dataclass
class ClusterState:
    """What `up` started, written to state.json so `down` and `status` can find it."""

    name: str
    api_address: str
    etcd_url: str
    pids: dict[str, int]
    kubeconfig: str


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_state(name: str) -> ClusterState | None:
    path = cluster_dir(name) / "state.json"
    if not path.exists():
        return None
    return ClusterState(**json.loads(path.read_text()))


def kubeconfig_text(name: str, server: str) -> str:
    """A kubeconfig-shaped file pointing kctl at this cluster (no TLS yet: loopback only)."""
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": f"{name}-admin", "user": {}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin",
                                                "namespace": "default"}}],
    }, sort_keys=False)


def up(name: str = "flotilla", *, api_port: int = DEFAULT_API_PORT, etcd_port: int = DEFAULT_ETCD_PORT,
       write_default_config: bool = True) -> ClusterState:
    """Start the cluster's processes (idempotent: a running cluster is left as it is)."""
    state = load_state(name)
    if state and all(_alive(pid) for pid in state.pids.values()):
        return state
    if state:
        down(name, remove=False)
    folder = cluster_dir(name)
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    etcd = start_etcd(folder / "etcd", client_port=etcd_port, peer_port=etcd_port + 1, log_dir=logs)
    started: list[Process] = [etcd.process]
    try:
        api = start_apiserver(etcd.url, logs, port=api_port)
        started.append(api.process)
        for component, module in CONTROL_PLANE_DAEMONS:
            daemon = Process(component, [sys.executable, "-m", module, "--server", api.address],
                             logs / f"{component}.log")
            daemon.start()
            started.append(daemon)
    except Exception:
        for proc in reversed(started):
            proc.stop()
        raise
    kubeconfig = folder / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text(name, api.address))
    state = ClusterState(name, api.address, etcd.url, {p.name: p.pid for p in started}, str(kubeconfig))
    (folder / "state.json").write_text(json.dumps(asdict(state), indent=2))
    if write_default_config:
        default = Path(os.environ.get("KCTL_CONFIG", Path.home() / ".kctl" / "config"))
        default.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kubeconfig, default)
    return state


def down(name: str = "flotilla", *, remove: bool = True) -> bool:
    """Stop the cluster's processes and (by default) delete its folder. False if unknown."""
    state = load_state(name)
    folder = cluster_dir(name)
    if state is None and not folder.exists():
        return False
    # Clients first, then the apiserver, so nothing writes to etcd while it stops.
    for component in (*(c for c, _ in reversed(CONTROL_PLANE_DAEMONS)), "apiserver", "etcd"):
        pid = state.pids.get(component) if state else None
        if pid and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    if remove:
        shutil.rmtree(folder, ignore_errors=True)
    return True


def status(name: str = "flotilla") -> dict[str, bool]:
    state = load_state(name)
    if state is None:
        return {}
    return {component: _alive(pid) for component, pid in state.pids.items()}


def names() -> list[str]:
    root = home() / "clusters"
    return sorted(p.name for p in root.iterdir() if (p / "state.json").exists()) if root.exists() else []
