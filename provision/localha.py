"""What happens to a master of a local cluster with several: the HA fault suite's and bench/ha.py's hands.

A master of a `kctl cluster up --masters N` cluster is a network namespace
whose daemons (etcd member, apiserver, VIP announcer, scheduler, controller
manager, DNS, containerd, kubelet, proxy) the cluster's supervisor runs
(provision/localdaemons.py: `<daemon>/<node>` in pids.json). The faults a
master can suffer, as the operations here make them:

    freeze / thaw   SIGSTOP / SIGCONT every daemon of the master: a hung machine (the supervisor sees
                    them alive and leaves them alone)
    cut / heal      its veth's host end down / up: the machine off the network
    kill            SIGKILL one daemon (the supervisor starts it again after its back-off)

`vip_holder` says which master holds the API's virtual IP now (the /32 on its
eth0); `leader_identity` which copy holds a component's Lease.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

from provision.localplan import ClusterState, NodeInfo
from provision.supervisor import read_pids


def master(state: ClusterState, name: str) -> NodeInfo:
    found = next((n for n in state.master_infos() if n.name == name), None)
    if found is None or not state.ha:
        raise LookupError(f'cluster "{state.name}" has no master {name} in a namespace of its own')
    return found


def daemon_pids(state: ClusterState, node: str) -> dict[str, int]:
    """The master's supervised daemons: `<daemon>` -> pid."""
    return {name.partition("/")[0]: pid for name, pid in read_pids(state.folder).items()
            if name.partition("/")[2] == node}


def freeze(state: ClusterState, node: str) -> None:
    for pid in daemon_pids(state, node).values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)


def thaw(state: ClusterState, node: str) -> None:
    for pid in daemon_pids(state, node).values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def cut(state: ClusterState, node: str) -> None:
    subprocess.run(["ip", "link", "set", master(state, node).host_veth, "down"], check=True)


def heal(state: ClusterState, node: str) -> None:
    subprocess.run(["ip", "link", "set", master(state, node).host_veth, "up"], check=True)


def kill(state: ClusterState, node: str, daemon: str) -> int:
    """SIGKILL one daemon of the master; its pid."""
    pid = daemon_pids(state, node)[daemon]
    os.kill(pid, signal.SIGKILL)
    return pid


def vip_holder(state: ClusterState) -> str:
    """The master whose eth0 holds the API's virtual IP ("" for none)."""
    for info in state.master_infos():
        out = subprocess.run(["ip", "-n", info.name, "-o", "-4", "addr", "show"], capture_output=True,
                             text=True).stdout
        if f" {state.api_vip}/32 " in out:
            return info.name
    return ""


def node_of_pid(state: ClusterState, pid: int) -> str:
    """The master a supervised daemon's pid runs on ("" if none): a Lease holder's identity names its pid."""
    return next((name.partition("/")[2] for name, p in read_pids(state.folder).items() if p == pid), "")


def leader_node(state: ClusterState, holder_identity: str) -> str:
    """The master of a component copy by its Lease identity (`<host>_<pid>_<nonce>`, client/component.py)."""
    parts = holder_identity.split("_")
    return node_of_pid(state, int(parts[-2])) if len(parts) >= 3 and parts[-2].isdigit() else ""
