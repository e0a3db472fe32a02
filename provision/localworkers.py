"""Growing and shrinking a running local cluster: `kctl cluster add-worker` and `remove-worker`.

kubeadm adds a node to a running cluster with a fresh token (`kubeadm token
create`) and `kubeadm join` on the new machine; it takes one out with
`kubectl drain`, `kubeadm reset` on the machine and `kubectl delete node`.
Here the machine is a network namespace on this host, so both directions are
the provider's to do, in those steps:

add (all new workers at once)
    addresses     the next worker number (its name, address .10i and veth follow from it) and the lowest
                  free /24 of the pod network, planned around the state's nodes and every Node the API
                  knows (localplan.next_workers); state.json gains them before anything is made, so `down`
                  undoes a half-made one; then its namespace, eth0 on the cluster bridge, the host's route
                  to its pods
    certificates  its kubelet's serving certificate from the cluster CA (its client certificate comes from
                  its own CSR once it has joined, as at `up`)
    nodes         its containerd, kubelet and proxy appended to supervisor.json; SIGHUP has the running
                  supervisor start them (the kubelet waits for its bootstrap kubeconfig)
    join          a bootstrap token for these node names only, living WORKER_TOKEN_TTL; `kctl join`'s
                  discovery for each (phases.join_workers, as `up` joins its workers)
    readiness     the Nodes Ready, read from the API; the token deleted; the worker role label, as `up`

remove (one worker, never the master)
    drain         cordon, evict its pods (PodDisruptionBudgets honoured), DaemonSet pods left: kctl's
                  drain, handed in by the caller (provision sits below kctl)
    node          its daemons out of supervisor.json and stopped (SIGHUP), then its Node and its Lease
                  deleted -- in that order, so no running kubelet registers it again; the pod garbage
                  collector force-deletes the pods still bound to it (its DaemonSet pods): waited for
    cleanup       `down`'s runtime teardown for the node (runc state, shims, mounts incl. its kubelet's
                  volumes, cgroups), its namespace, veth and route, its folder; state.json without it

A failed add undoes its own nodes the same way (nothing to drain) and leaves
the rest of the cluster as it was. One change at a time per cluster (a lock
file): each rewrites state.json and supervisor.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import fcntl
import ipaddress
import os
import shutil
import signal
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

from client import bootstrap, certificates
from client import config as clientconfig
from controlplane.controllers.nodelifecycle import NODE_LEASE_NAMESPACE
from proto import coordination_pb2, core_pb2
from proto.errors import ApiError, NotFound
from provision import components, netns, phases
from provision.localdaemons import is_node_spec, node_specs, teardown_node
from provision.localplan import ClusterState, NodeInfo, load_state, next_workers, save_state
from provision.progress import Progress
from provision.provider import ProvisionError
from provision.supervisor import alive, read_pids, read_specs, reloadable, terminate, write_specs

# add-worker's token lives as long as one join may take (`up`'s: an hour); it is deleted once the nodes are Ready.
WORKER_TOKEN_TTL = dt.timedelta(minutes=15)
# The supervisor gives each daemon 10 s after SIGTERM, three daemons a node, one after the other.
STOP_TIMEOUT = 35.0
# The pod garbage collector deletes a gone node's pods at once; this bounds the wait if the controller manager is down.
PODS_GONE_TIMEOUT = 30.0

# How the caller drains a node before it goes: (the admin's kubeconfig, node name); raising stops the removal.
Drain = Callable[[Path, str], None]
# How a worker joins (the provider's `join`): (node, kctl join's arguments).
Join = Callable[[str, phases.JoinCommand], None]


def running_state(name: str) -> ClusterState:
    """The state of the running local cluster `name`, whose supervisor can take new daemons; else why not."""
    if os.geteuid() != 0:
        raise ProvisionError("the local provider makes network namespaces: run as root")
    state = load_state(name)
    if state is None:
        raise ProvisionError(f'cluster "{name}" not found (kctl cluster list names this machine\'s clusters)')
    pid = state.supervisor_pid
    if not pid or not alive(pid):
        raise ProvisionError(f'cluster "{name}" is not running (its supervisor is gone): kctl cluster down '
                             f"--name {name}, then up again")
    if not reloadable(pid):
        raise ProvisionError(f'cluster "{name}" runs a supervisor from before add-worker and remove-worker '
                             "(SIGHUP would stop it): make the cluster again (kctl cluster down, then up)")
    return state


@contextlib.contextmanager
def changing(state: ClusterState) -> Iterator[ClusterState]:
    """Hold the cluster's change lock; yields the state as read under it (another change may just have ended)."""
    with open(state.folder / "nodes.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProvisionError(f'another add-worker or remove-worker is changing cluster "{state.name}": '
                                 "try again once it is done") from None
        yield load_state(state.name) or state


# ---------------------------------------------------------------- add


def add_workers(state: ClusterState, count: int, progress: Progress, deadline: float, join: Join) -> list[NodeInfo]:
    """`count` new workers, joined and Ready; on failure none of them is left behind."""
    hint = f"logs in {state.folder / 'logs'}"
    progress.phase("addresses")
    try:
        known = phases.registered_nodes(state.kubeconfig)
    except RuntimeError as err:
        raise ProvisionError(f"{err}; {hint}") from None
    added = next_workers(state, count, taken_names=[n.metadata.name for n in known],
                         taken_addresses=[a.address for n in known for a in n.status.addresses],
                         taken_pod_cidrs=[c for n in known for c in (n.spec.pod_cidr, *n.spec.pod_cidrs) if c])
    _refuse_taken(added)
    state.add_nodes(added)
    save_state(state)  # before anything is made: `down` (or the undo below) removes whatever gets made
    try:
        _make(state, added, progress, deadline, join, hint)
    except BaseException:
        _unmake(state, added)
        raise
    return added


def _refuse_taken(added: list[NodeInfo]) -> None:
    """The host must not hold these nodes' namespace, veth or pod route already (another cluster's, a leftover)."""
    for info in added:
        taken = ([f"network namespace {info.name}"] if netns.netns_exists(info.name) else []) + \
                ([f"interface {info.host_veth}"] if netns.link_exists(info.host_veth) else []) + \
                ([f"a route to {info.pod_cidr}"] if netns.routed(info.pod_cidr) else [])
        if taken:
            raise ProvisionError(f"cannot add {info.name}: this host already has {', '.join(taken)} (a leftover of "
                                 "another cluster? `ip netns`, `ip link` and `ip route` show them)")


def _make(state: ClusterState, added: list[NodeInfo], progress: Progress, deadline: float, join: Join,
          hint: str) -> None:
    names = [n.name for n in added]
    links = [link for link in state.links() if link.netns in names]
    prefix = ipaddress.ip_network(state.subnet).prefixlen
    for link in links:
        netns.create_node(state.bridge, link, prefix)
    netns.add_host_pod_routes(links, state.bridge)
    progress.done(", ".join(f"{n.name} {n.address} (pods {n.pod_cidr})" for n in added) + f" on {state.bridge}")

    progress.phase("certificates")
    cluster = state.components_plan()
    ca = components.read_ca(state.config_dir)
    if ca is None:
        raise ProvisionError(f'cluster "{state.name}" has no CA in {state.config_dir}')
    for info in added:
        _write_serving_certificate(state, cluster, ca, info)
    progress.done(f"kubelet serving certificate for {', '.join(names)} (client certificates: by CSR, after the join)")

    progress.phase("nodes")
    _set_node_daemons(state, add=added)
    wanted = {f"{daemon}/{name}" for daemon in ("containerd", "kubelet", "proxy") for name in names}
    phases.wait(lambda: wanted <= _running(state.folder), "the new nodes' containerd, kubelet and proxy", deadline,
                hint=hint)
    progress.done(f"containerd, kubelet and proxy on {', '.join(names)}, under the cluster's supervisor")

    progress.phase("join")
    token = bootstrap.generate_token()
    phases.wait(lambda: phases.create_join_token(state.kubeconfig, token, names, ttl=WORKER_TOKEN_TTL,
                                                 description=f"kctl cluster add-worker: joins {', '.join(names)}"),
                "a bootstrap token", deadline, hint=hint)
    try:
        phases.join_workers(names, join, phases.JoinCommand.for_plan(cluster, token, ca.cert_pem), deadline,
                            hint=hint)
        progress.done(f"{len(names)} joined with a bootstrap token for {', '.join(names)} only "
                      f"(expires in {WORKER_TOKEN_TTL.seconds // 60} min, deleted once Ready)")
        progress.phase("node readiness")
        phases.wait_for_nodes_ready(state.kubeconfig, names, deadline, hint=hint)
    finally:
        with contextlib.suppress(RuntimeError):  # it expires by itself; a failure here must not hide the first
            phases.delete_token(state.kubeconfig, token)
    new_only = dataclasses.replace(cluster, nodes=tuple(n.plan() for n in added))
    phases.wait(lambda: phases.label_node_roles(state.kubeconfig, new_only), "the new nodes' role label", deadline,
                hint=hint)
    state.pids = read_pids(state.folder)
    save_state(state)
    progress.done(f"{', '.join(names)} Ready, role worker; {len(state.nodes)} Nodes in the cluster")


def _write_serving_certificate(state: ClusterState, cluster: components.ClusterPlan, ca: certificates.KeyPair,
                               info: NodeInfo) -> None:
    """The kubelet API's certificate for the node's name and address, where its settings say (as `up` mints)."""
    settings = components.kubelet_settings(cluster, info.plan())
    pair = certificates.create_serving_cert(ca, info.name, [info.address, info.name])
    files = {settings["tls_cert_file"]: pair.cert_pem, settings["tls_private_key_file"]: pair.key_pem}
    components.Bundle({str(Path(path).relative_to(state.config_dir)): content
                       for path, content in files.items()}).write(state.config_dir)


def _unmake(state: ClusterState, added: list[NodeInfo]) -> None:
    """Undo a failed add: the new nodes' daemons, Nodes (if they registered), runtime, network and files."""
    names = [n.name for n in added]
    _stop_node_daemons(state, names)
    for name in names:
        with contextlib.suppress(RuntimeError):
            _delete_node(state.kubeconfig, name)
    _clean(state, added)


# ---------------------------------------------------------------- remove


def worker(state: ClusterState, name: str) -> NodeInfo:
    """The worker `name` of the cluster; ProvisionError for the master or a node the cluster did not make."""
    info = next((n for n in state.node_infos() if n.name == name), None)
    if info is None:
        workers = state.worker_names()
        raise ProvisionError(f'cluster "{state.name}" has no worker {name} ('
                             + (f"its workers: {', '.join(workers)}" if workers else "it has no workers")
                             + "; a node joined by hand leaves with kctl drain, kctl delete node and its own "
                               "machine's teardown)")
    if info.control_plane:
        raise ProvisionError(f'{name} is the control plane of cluster "{state.name}" and cannot be removed '
                             f"(kctl cluster down --name {state.name} removes the whole cluster)")
    return info


def remove_worker(state: ClusterState, info: NodeInfo, progress: Progress, drain: Drain) -> None:
    """Drain the worker, stop its daemons, delete its Node, and leave nothing of it on the host."""
    progress.phase("drain")
    drain(Path(state.kubeconfig), info.name)
    progress.done(f"{info.name} cordoned and drained (evictions: PodDisruptionBudgets honoured; DaemonSet pods go "
                  "with the Node)")

    progress.phase("node")
    _stop_node_daemons(state, [info.name])
    try:
        _delete_node(state.kubeconfig, info.name)
        left = _wait_for_pods_gone(state.kubeconfig, info.name, time.monotonic() + PODS_GONE_TIMEOUT)
    except RuntimeError as err:
        raise ProvisionError(f"{err} (its daemons are stopped; run remove-worker again)") from None
    progress.done(f"containerd, kubelet and proxy stopped; Node {info.name} deleted"
                  + (f"; {left} pods still bound to it (the pod garbage collector deletes them)" if left
                     else ", and every pod bound to it"))

    progress.phase("cleanup")
    _clean(state, [info])
    progress.done(f"namespace {info.name}, veth {info.host_veth}, route to {info.pod_cidr} and "
                  f"{state.folder / 'nodes' / info.name} removed; {len(state.nodes)} Nodes in the cluster")


# ---------------------------------------------------------------- shared by both


def _running(folder: Path) -> set[str]:
    return {daemon for daemon, pid in read_pids(folder).items() if alive(pid)}


def _set_node_daemons(state: ClusterState, *, add: Collection[NodeInfo] = (), remove: Collection[str] = ()) -> None:
    """Rewrite supervisor.json with `add`'s daemons appended and `remove`'s taken out, and tell the supervisor."""
    names = {*remove, *(n.name for n in add)}
    specs = [s for s in read_specs(state.folder) if not any(is_node_spec(s, name) for name in names)]
    for info in add:
        specs += node_specs(state, info)
    write_specs(state.folder, specs)
    with contextlib.suppress(ProcessLookupError):  # a supervisor that died: its daemons are stopped by hand below
        os.kill(state.supervisor_pid, signal.SIGHUP)


def _stop_node_daemons(state: ClusterState, names: Collection[str]) -> None:
    """The nodes' daemons out of the supervisor's hands and stopped (killed if they outlive STOP_TIMEOUT)."""
    pids = [pid for daemon, pid in read_pids(state.folder).items() if daemon.partition("/")[2] in names]
    _set_node_daemons(state, remove=names)
    until = time.monotonic() + STOP_TIMEOUT
    while any(alive(pid) for pid in pids) and time.monotonic() < until:
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            terminate(pid, timeout=5)


def _clean(state: ClusterState, infos: Collection[NodeInfo]) -> None:
    """What the stopped nodes left on the host and in the cluster folder; state.json without them."""
    for info in infos:
        teardown_node(state, info)
        netns.remove_node(netns.NodeLink(info.name, info.host_veth, info.address, info.pod_cidr))
        shutil.rmtree(state.folder / "nodes" / info.name, ignore_errors=True)
        settings = components.kubelet_settings(state.components_plan(), info.plan())
        for path in (settings["tls_cert_file"], settings["tls_private_key_file"]):
            Path(path).unlink(missing_ok=True)
    state.remove_nodes([n.name for n in infos])
    state.pids = read_pids(state.folder)
    save_state(state)


def _delete_node(kubeconfig: str, name: str) -> None:
    """The Node and its heartbeat Lease (`kubectl delete node`; the Lease would otherwise outlive it)."""
    async def delete() -> None:
        async with clientconfig.load(kubeconfig=kubeconfig).client(timeout=10) as client:
            with contextlib.suppress(NotFound):
                await client.delete(core_pb2.Node, name)
            with contextlib.suppress(NotFound):
                await client.delete(coordination_pb2.Lease, name, NODE_LEASE_NAMESPACE)

    try:
        asyncio.run(delete())
    except (ApiError, clientconfig.ConfigError) as err:
        raise RuntimeError(f"cannot delete Node {name}: {err}") from None


def _wait_for_pods_gone(kubeconfig: str, node: str, deadline: float) -> int:
    """Until no pod is bound to the deleted `node` (the pod garbage collector's work); how many are left."""
    async def wait() -> int:
        async with clientconfig.load(kubeconfig=kubeconfig).client(timeout=10) as client:
            while True:
                pods = (await client.list(core_pb2.Pod, field_selector=f"spec.nodeName={node}")).items
                if not pods or time.monotonic() >= deadline:
                    return len(pods)
                await asyncio.sleep(0.2)

    try:
        return asyncio.run(wait())
    except (ApiError, clientconfig.ConfigError) as err:
        raise RuntimeError(f"cannot list the pods of Node {node}: {err}") from None
