"""Growing and shrinking a running local cluster's control plane: `kctl cluster add-master` / `remove-master`.

kubeadm adds a control-plane node with `kubeadm join --control-plane` (the
certificates copied over, `etcdctl member add`, the static pods started) and
takes one out with `kubeadm reset` (`etcdctl member remove` first, so the
quorum never counts a member that is gone). Here a master is a network
namespace of a cluster made with `--masters N` (N > 1; provision/localdaemons.py
`master_specs`), so the provider does both, in these steps:

add
    addresses     the lowest free master number (`<name>-master-<i>` at .1i, veth `<bridge>-m<i>`) and
                  the lowest free pod /24; state.json gains it first (so `down` undoes a half-made one);
                  its namespace, eth0 on the bridge, the host's route to its pods
    certificates  the apiserver's and etcd's pairs again, naming every master now (same CAs), and the new
                  node's kubelet pairs and kubeconfig (components.joining_master_files)
    etcd          `member add` of its peer URL through the running members (needs their quorum)
    control plane its etcd member (`--initial-cluster-state existing`, an empty data directory: it copies
                  the data from the leader), apiserver, VIP announcer, scheduler, controller manager, DNS,
                  containerd, kubelet and proxy appended to supervisor.json (SIGHUP); every master's specs
                  rewritten to name the new member and peer (used at their next restart)
    readiness     its etcd member healthy, its Node Ready and labelled control-plane; kube-dns lists it

remove (never the last master)
    etcd          `member remove` through the other members: the quorum stops counting it before it stops
    node          its daemons out of supervisor.json and stopped; its Node and Lease deleted; kube-dns
                  without it
    cleanup       `down`'s teardown for the node, its namespace, veth, route and folder; state.json without it

One change at a time per cluster (add-worker's lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import time
from urllib.parse import urlsplit

from client import config as clientconfig
from controlplane.apiserver.storage import EtcdClientTLS
from proto import core_pb2
from proto.errors import ApiError
from provision import components, etcd_members, localworkers, netns, phases
from provision.localdaemons import is_node_spec, master_specs, node_specs
from provision.localplan import NODE_CIDR_MASK, ClusterState, NodeInfo, master, save_state
from provision.progress import Progress
from provision.provider import ProvisionError
from provision.supervisor import read_pids, read_specs, write_specs


def _require_ha(state: ClusterState) -> None:
    if not state.ha:
        raise ProvisionError(f'cluster "{state.name}" has one master, the host itself: masters are added to a '
                             "cluster made with --masters 3 (or more), whose masters are nodes of their own")


def _etcd_tls(state: ClusterState) -> EtcdClientTLS:
    files = components.etcd_backup_tls(state.config_dir)
    return EtcdClientTLS.from_files(files.ca, files.cert, files.key)


def _etcd_port(state: ClusterState) -> int:
    return urlsplit(state.etcd_url).port or 2379


def next_master(state: ClusterState) -> NodeInfo:
    infos = state.node_infos()
    names, veths = {n.name for n in infos}, {n.host_veth for n in infos}
    cidrs = {n.pod_cidr for n in infos}
    number = 1
    while True:
        candidate = master(state.name, state.bridge, state.subnet, number, "")
        if candidate.name not in names and candidate.host_veth not in veths:
            break
        number += 1
    free = (str(c) for c in ipaddress.ip_network(state.pod_network).subnets(new_prefix=NODE_CIDR_MASK)
            if str(c) not in cidrs)
    candidate.pod_cidr = next(free, "")
    if not candidate.pod_cidr:
        raise ProvisionError(f"the pod network {state.pod_network} has no free /{NODE_CIDR_MASK} for {candidate.name}")
    return candidate


def _rewrite_master_specs(state: ClusterState, *, added: NodeInfo | None = None) -> None:
    """supervisor.json with every master's control-plane specs regenerated (the member list and peers as they
    are now), `added`'s daemons appended; SIGHUP starts what is new (a changed spec applies at its restart)."""
    etcd_port = _etcd_port(state)
    fresh = {s.name: s for s in master_specs(state, etcd_port=etcd_port,
                                             masters=[m for m in state.master_infos()
                                                      if added is None or m.name != added.name])}
    specs = [fresh.get(s.name, s) for s in read_specs(state.folder)
             if added is None or not is_node_spec(s, added.name)]
    if added is not None:
        specs += master_specs(state, etcd_port=etcd_port, masters=[added], initial_state="existing")
        specs += node_specs(state, added)
    write_specs(state.folder, specs)
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.supervisor_pid, signal.SIGHUP)


def _update_dns_endpoints(state: ClusterState) -> bool:
    """kube-dns's Endpoints name every master's DNS server."""
    async def update() -> None:
        async with clientconfig.load(kubeconfig=state.kubeconfig).client(timeout=10) as client:
            endpoints = await client.get(core_pb2.Endpoints, "kube-dns", "kube-system")
            for subset in endpoints.subsets:
                del subset.addresses[:]
                subset.addresses.extend(core_pb2.EndpointAddress(ip=n.address) for n in state.master_infos())
            await client.update(endpoints)

    try:
        asyncio.run(update())
    except (ApiError, clientconfig.ConfigError) as err:
        raise RuntimeError(f"cannot update kube-dns's endpoints: {err}") from None
    return True


def add_master(state: ClusterState, progress: Progress, deadline: float) -> NodeInfo:
    _require_ha(state)
    hint = f"logs in {state.folder / 'logs'}"
    progress.phase("addresses")
    info = next_master(state)
    if netns.netns_exists(info.name) or netns.link_exists(info.host_veth) or netns.routed(info.pod_cidr):
        raise ProvisionError(f"cannot add {info.name}: this host already has its namespace, veth or pod route")
    state.add_nodes([info])
    save_state(state)
    link = netns.NodeLink(info.name, info.host_veth, info.address, info.pod_cidr)
    netns.create_node(state.bridge, link, ipaddress.ip_network(state.subnet).prefixlen)
    netns.add_host_pod_routes([link], state.bridge)
    progress.done(f"{info.name} {info.address} (pods {info.pod_cidr}) on {state.bridge}")

    progress.phase("certificates")
    plan = state.components_plan()
    ca, etcd_ca = components.read_ca(state.config_dir), components.read_etcd_ca(state.config_dir)
    if ca is None or etcd_ca is None:
        raise ProvisionError(f'cluster "{state.name}" has no CA or etcd CA in {state.config_dir}')
    components.joining_master_files(plan, ca, etcd_ca, info.plan()).write(state.config_dir)
    progress.done(f"apiserver and etcd certificates naming {len(state.master_infos())} masters; {info.name}'s kubelet")

    progress.phase("etcd")
    tls, port = _etcd_tls(state), _etcd_port(state)
    peer = f"https://{info.address}:{port + 1}"
    others = [u for u in state.etcd_endpoints() if f"//{info.address}:" not in u]
    added: list[etcd_members.Member] = []
    errors: list[str] = []

    def add_member() -> bool:
        # etcd refuses a change while a member is not (yet) active ("unhealthy cluster": one just back from a
        # fault): try again until the deadline; an add whose answer was lost shows in the member list.
        try:
            known = [m for m in asyncio.run(etcd_members.members(others, tls)) if peer in m.peer_urls]
            added.append(known[0] if known else asyncio.run(etcd_members.add(others, tls, peer)))
            return True
        except etcd_members.EtcdUnreachable as err:
            errors.append(str(err))
            return False

    try:
        phases.wait(add_member, f"{info.name}'s etcd member added", min(deadline, time.monotonic() + 60),
                    hint=hint, interval=1.0)
    except phases.WaitTimeout:
        raise ProvisionError(f"cannot add {info.name}'s etcd member (the running members need a healthy quorum): "
                             f"{errors[-1] if errors else 'no answer'}") from None
    progress.done(f"member {added[0].id:x} added at {peer}")

    progress.phase("control plane")
    _rewrite_master_specs(state, added=info)
    url = f"https://{info.address}:{port}"
    phases.wait(lambda: asyncio.run(etcd_members.healthy(url, tls)), f"{info.name}'s etcd member", deadline,
                hint=hint)
    phases.wait_for_port(f"{info.address}:{plan.grpc_port}", f"{info.name}'s apiserver", deadline, hint=hint)
    progress.done(f"etcd member, apiserver, VIP announcer, scheduler, controller manager, DNS on {info.name}")

    progress.phase("node readiness")
    phases.wait_for_nodes_ready(state.kubeconfig, [info.name], deadline, hint=hint)
    only = components.ClusterPlan(**{**plan.__dict__, "nodes": (info.plan(),)})
    phases.wait(lambda: phases.label_node_roles(state.kubeconfig, only), "its role label", deadline, hint=hint)
    phases.wait(lambda: _update_dns_endpoints(state), "kube-dns's endpoints", deadline, hint=hint)
    state.pids = read_pids(state.folder)
    save_state(state)
    progress.done(f"{info.name} Ready, role control-plane; {len(state.master_infos())} masters")
    return info


def remove_master(state: ClusterState, name: str, progress: Progress) -> None:
    _require_ha(state)
    info = next((n for n in state.master_infos() if n.name == name), None)
    if info is None:
        raise ProvisionError(f'cluster "{state.name}" has no master {name} (its masters: '
                             f"{', '.join(n.name for n in state.master_infos())})")
    if len(state.master_infos()) == 1:
        raise ProvisionError(f"{name} is the last master of cluster \"{state.name}\": kctl cluster down removes "
                             "the whole cluster")
    progress.phase("etcd")
    tls = _etcd_tls(state)
    others = [u for u in state.etcd_endpoints() if f"//{info.address}:" not in u]
    try:
        found = asyncio.run(etcd_members.members(others, tls))
        member = next((m for m in found if m.name == name or any(f"//{info.address}:" in u for u in m.peer_urls)),
                      None)
        if member is not None:
            asyncio.run(etcd_members.remove(others, tls, member.id))
    except etcd_members.EtcdUnreachable as err:
        raise ProvisionError(f"cannot remove {name}'s etcd member (the other members need a quorum): {err}") \
            from None
    progress.done(f"member {member.id:x} removed; {len(found) - 1} members" if member else "it had no member")

    progress.phase("node")
    # add-worker's steps for taking a namespace node out (provision/localworkers.py)
    localworkers._stop_node_daemons(state, [name])
    try:
        localworkers._delete_node(state.kubeconfig, name)
    except RuntimeError as err:
        raise ProvisionError(f"{err} (its daemons are stopped; run remove-master again)") from None
    localworkers._clean(state, [info])
    _rewrite_master_specs(state)
    with contextlib.suppress(RuntimeError):  # the next add or a restart fixes it; the master is gone either way
        _update_dns_endpoints(state)
    progress.done(f"{name}'s daemons stopped, Node deleted, namespace {name} and {info.host_veth} removed; "
                  f"{len(state.master_infos())} masters")
