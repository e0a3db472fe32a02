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
eth0); `leader_identity` which copy holds a component's Lease;
`api_answered_after` how long after a fault a client reaches the API through
the VIP again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time

from client import config as clientconfig
from proto import core_pb2
from proto.errors import ApiError
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


async def _answered(state: ClusterState, timeout: float) -> float | None:
    """When a fresh client's read through the VIP was answered (None: refused, failed or timed out)."""
    with contextlib.suppress(ApiError, TimeoutError, OSError):
        async with clientconfig.load(kubeconfig=state.kubeconfig).client(timeout=timeout) as probe:
            await asyncio.wait_for(probe.get(core_pb2.Namespace, "default"), timeout + 0.5)
            return time.monotonic()
    return None


async def api_answered_after(state: ClusterState, since: float, every: float = 0.25, timeout: float = 1.0) -> float:
    """Seconds from `since` (time.monotonic) until a fresh client's request through the VIP is answered.

    A new probe starts every `every` seconds while earlier ones are in flight. One probe at a time would
    measure in steps of its own timeout: a connection begun just before the VIP moved waits for the old
    holder (TCP's first SYN retry is 1 s) and the next probe starts only after it gives up.
    """
    probes: set[asyncio.Task[float | None]] = set()
    try:
        while True:
            probes.add(asyncio.create_task(_answered(state, timeout)))
            next_probe = time.monotonic() + every
            while (left := next_probe - time.monotonic()) > 0:
                if not probes:  # every probe failed at once (a refused connection): wait for the next
                    await asyncio.sleep(left)
                    break
                done, probes = await asyncio.wait(probes, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                answered = [at for at in (task.result() for task in done) if at is not None]
                if answered:
                    return min(answered) - since
    finally:
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
