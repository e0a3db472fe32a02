"""The local provider: a whole Flotilla cluster on this machine, made by `kctl cluster up`.

Layout (defaults; subnet, bridge, ports and pod network are options):

    host = master <name>-master ── bridge flt0 192.168.56.1/24 ──┬── veth ── netns <name>-worker-1  192.168.56.101
    etcd on loopback; apiserver (TLS), DNS on .1;                 └── veth ── netns <name>-worker-2  192.168.56.102
    scheduler, controller manager, LB controller;
    containerd + kubelet: Node <name>-master, pods 10.244.0.0/24, tainted control-plane:NoSchedule

The master is the host side of the bridge (.1), not a namespace of its own:
the host must reach every node anyway (pod routes, NodePorts, kctl), and a
node's proxy programs its namespace from the host (`--netns`), so with the
control plane on the host nothing has to cross into a master namespace. It is
a Node too: its own containerd (own root, socket, cgroup prefix and CNI bridge,
like a worker's) and kubelet register `<name>-master` with the control-plane
role and taint, so only pods that tolerate it run there.

Every component speaks TLS with its own identity (provision/components.py
makes the CA, certificates and kubeconfigs into `<cluster>/config/`): the
apiserver serves client certificates on <master>:<api port> and bearer tokens
on the next port, with RBAC; each kubelet's API serves its node's certificate
and takes only the apiserver's. Nothing uses the plaintext loopback port.

Each worker is a network namespace with its own containerd (own root, state,
socket, runc root, CNI dirs, cgroup prefix), started inside the namespace with
nsenter; its kubelet runs in the namespace too (the apiserver dials the kubelet
API at the node's InternalIP) and registers the podCIDR 10.244.<i>.0/24; its
proxy runs on the host and programs the namespace's nftables. Workers join as
kubeadm's do: `up` creates a bootstrap token (TTL 1 h, good for the planned
workers' names only, deleted once they are Ready) through the API, runs
`kctl join`'s discovery for each worker (the CA pinned by its hash) to write
the node's bootstrap kubeconfig, and the worker's kubelet, started once that
file exists, gets its own client certificate by a CertificateSigningRequest
(kept in nodes/<node>/kubelet.conf, which restarts reuse). The master's proxy
runs in the host's namespace with a table of the cluster's own
(`flotilla-proxy-<name>`) and node ports on the master's address only. One
supervisor process per cluster (provision/supervisor.py) starts and restarts
all daemons. Everything lives in `~/.flotilla/clusters/<name>/` (or
$FLOTILLA_HOME/...): state.json, kubeconfig (the admin's), config/ (PKI and
kubeconfigs), logs/, nodes/<node>/.

`kctl cluster add-worker` and `remove-worker` grow and shrink a running
cluster one namespace node at a time (`add_workers`, `remove_worker`:
provision/localworkers.py), through the same plan, daemon specs, join and
teardown as `up` and `down`.

`down` stops the supervisor (which stops the daemons), kills anything left,
tears each node's runtime down (runc state, shims, mounts, cgroups, the
master's CNI bridge), deletes namespaces, veths, bridge, host routes and the
nft tables (the provisioner's and the master proxy's), and removes the folder.

`LocalProvider` is this provider behind the Provider protocol
(provision/provider.py). The plan and state.json are provision/localplan.py,
the supervised daemons' specs provision/localdaemons.py; the phases it shares
with the SSH provider (waits, publishing, joining, readiness, the kubeconfig)
provision/phases.py.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from client import bootstrap, certificates
from client.discovery import DiscoveryError, join_node
from nodeagent.proxy import nft
from nodeagent.proxy.main import netpol_table
from provision import components, localmasters, localworkers, netns, phases
from provision.images import registry as image_registry
from provision.images.base import push_node_images
from provision.localdaemons import SOCKET_ROOT, daemon_specs, is_standby, node, teardown_node
from provision.localplan import (
    DNS_SERVICE_IP,
    ClusterState,
    bootstrap_kubeconfig_path,
    load_state,
    names,
    new_state,
    save_state,
)
from provision.progress import Progress, Quiet
from provision.provider import Cluster, Options, ProvisionError, cluster_dir
from provision.supervisor import alive, read_pids, terminate, write_specs

# A loaded 2-core box took 125-172 s for a 3-master cluster, most of it pushing the base images (IMAGES' Debian
# and Python client images among them): 180 s left no margin.
UP_TIMEOUT = 300.0


class LocalProvider:
    """The Provider (provision/provider.py) of clusters made of network namespaces on this machine."""

    kind = "local"

    def __init__(self, options: Options, *, timeout: float = UP_TIMEOUT) -> None:
        self.options = options
        self.timeout = timeout

    @property
    def name(self) -> str:
        return self.options.name

    @property
    def folder(self) -> Path:
        return cluster_dir(self.options.name)

    def plan(self) -> components.ClusterPlan:
        return new_state(self.options).components_plan()

    def cluster(self, state: ClusterState) -> Cluster:
        return Cluster(state.name, self.kind, state.api_address, Path(state.kubeconfig),
                       state.components_plan().nodes, str(state.folder / "logs"),
                       f"kctl cluster down --name {state.name}")

    def up(self, progress: Progress) -> Cluster:
        """Make the cluster and wait until every Node (master and workers) is Ready (a running cluster is left
        as it is)."""
        opts = self.options
        state = load_state(opts.name)
        if state and state.supervisor_pid and alive(state.supervisor_pid):
            return self.cluster(state)
        if state or self.folder.exists():
            self.down()
        if os.geteuid() != 0:
            raise ProvisionError("the local provider makes network namespaces: run as root")
        if netns.link_exists(opts.bridge):
            raise ProvisionError(f"interface {opts.bridge} already exists: pick another --bridge (or cluster down "
                                 "its owner)")
        state = new_state(opts)
        taken = [cidr for cidr in (opts.subnet, *(n.pod_cidr for n in state.node_infos())) if netns.routed(cidr)]
        if taken:
            raise ProvisionError(f"this host already routes {', '.join(taken)}: pick another --subnet / "
                                 "--pod-network")
        deadline = time.monotonic() + self.timeout
        (self.folder / "logs").mkdir(parents=True, exist_ok=True)
        save_state(state)  # before anything is made: `down` undoes whatever the steps below got to
        try:
            self._make(state, progress, deadline)
        except BaseException:
            self._teardown(state)  # keep the logs: they say why (the next up or down removes them)
            (self.folder / "state.json").unlink(missing_ok=True)  # nothing runs: not a cluster any more
            raise
        state.pids = read_pids(self.folder)
        save_state(state)
        if opts.write_default_config:
            phases.point_kctl_at(Path(state.kubeconfig))
        return self.cluster(state)

    def _make(self, state: ClusterState, progress: Progress, deadline: float) -> None:
        """`up`'s phases, each reported with what it made."""
        folder, hint = self.folder, f"logs in {self.folder / 'logs'}"
        infos = state.node_infos()
        net = ipaddress.ip_network(state.subnet)
        progress.phase("addresses")
        netns.create_bridge(state.bridge, state.master_address, net.prefixlen)
        for link in state.links():
            netns.create_node(state.bridge, link, net.prefixlen)
        # The host's routes to the pods; each node's kubelet keeps its own to the other nodes' pods.
        netns.add_host_pod_routes(state.links(), state.bridge)
        netns.allow_bridge_forwarding(state.nft_table, state.bridge)
        if not state.ha:  # a single master is the host, and its pods live in the host's namespace
            netns.confine_host_pods(state.nft_table, node(state, infos[0]).runtime.bridge,
                                    [state.subnet, state.pod_network])
        masters = (f"masters {', '.join(n.address for n in state.master_infos())} (API VIP {state.api_vip}), host "
                   f"{state.master_address}" if state.ha else f"master {state.master_address}")
        progress.done(f"{masters} on {state.bridge}, workers "
                      + ", ".join(n.address for n in infos if not n.control_plane) + f", pods {state.pod_network}")

        progress.phase("certificates")
        cluster = state.components_plan()
        files = components.bundle(cluster, token_joined=state.worker_names())
        files.write(state.config_dir)
        certificates.write_private(Path(state.kubeconfig),
                                   Path(cluster.kubeconfig_path(components.ADMIN)).read_bytes())
        progress.done(f"CA, {sum(f.endswith('.crt') for f in files.files) - 1} serving/client certificates, "
                      f"{sum(f.endswith('.conf') for f in files.files)} kubeconfigs in {state.config_dir}")

        progress.phase("images")
        every = daemon_specs(state, etcd_port=self.options.etcd_port)
        write_specs(folder, [spec for spec in every if not is_standby(state, spec)])
        with open(folder / "logs" / "supervisor.log", "ab") as log:
            supervisor = subprocess.Popen([sys.executable, "-m", "provision.supervisor", str(folder)],
                                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        state.supervisor_pid = supervisor.pid
        save_state(state)
        ca_file = state.config_dir / image_registry.CA_FILE
        phases.wait(lambda: image_registry.cluster_ready(state.registry, ca_file), "image registry", deadline,
                    hint=hint)
        pushed = push_node_images(state.registry, image_registry.cluster_push_target(state.config_dir,
                                                                                     state.registry),
                                  storage=folder / "registry" / "storage")  # seeded: provision/images/seed.py
        progress.done(", ".join(p.reference.partition("/")[2] for p in pushed) + f" pushed to {state.registry}")

        progress.phase("control plane")
        phases.wait_for_port(state.grpc_server, "apiserver", deadline, hint=hint)
        # kube-public/cluster-info (so that `kctl join` and `kctl token create --print-join-command` work), a
        # bootstrap token for the workers, and kube-dns.
        token = bootstrap.generate_token()
        ca_pem = files.ca().cert_pem
        phases.wait(lambda: phases.publish(state.kubeconfig, cluster, ca_pem, token=token,
                                           nodes=state.worker_names()),
                    "cluster-info, a bootstrap token and kube-dns", deadline, hint=hint)
        dns = ", ".join(f"{a}:53" for a in phases.dns_servers(cluster))
        etcd = f"etcd ({len(state.master_infos())} members)" if state.ha else "etcd"
        progress.done(f"apiserver https://{state.api_address} (tokens :{cluster.token_port}), {etcd}, scheduler, "
                      f"controller manager, DNS {dns} (kube-dns {DNS_SERVICE_IP})")

        progress.phase("join")
        command = phases.JoinCommand.for_plan(cluster, token, ca_pem)
        phases.join_workers(state.worker_names(), self.join, command, deadline, hint=hint)
        progress.done(f"{phases.join_detail(len(state.worker_names()))}, or a namespace node here: "
                      f"kctl cluster add-worker --name {state.name}")

        progress.phase("nodes")
        phases.wait(lambda: (folder / "supervisor.ready").exists(), "every daemon started", deadline, hint=hint)
        progress.done(f"containerd, kubelet and proxy on {len(infos)} nodes")

        progress.phase("node readiness")
        phases.wait_for_nodes_ready(state.kubeconfig, [n.name for n in infos], deadline, hint=hint)
        # Every worker holds its certificate now: the token has done its job, and nothing else may join with it.
        phases.delete_token(state.kubeconfig, token)
        phases.wait(lambda: phases.label_node_roles(state.kubeconfig, cluster), "the nodes' role labels", deadline,
                    hint=hint)
        standbys = [spec.name for spec in every if is_standby(state, spec)]
        if standbys:  # the other masters' copies, standing by for the Leases (localdaemons.is_standby)
            write_specs(folder, every)
            os.kill(supervisor.pid, signal.SIGHUP)
            phases.wait(lambda: set(standbys) <= set(read_pids(folder)), "the standby schedulers and controller "
                        "managers", deadline, hint=hint, interval=0.05)
        progress.done(f"{len(infos)} Nodes Ready" + (f"; {len(standbys)} standby copies of the scheduler and "
                                                      "controller manager started" if standbys else ""))

    def join(self, node: str, command: phases.JoinCommand) -> None:
        """`kctl join`'s discovery for a worker: pin the CA, read cluster-info with the token, write the node's
        bootstrap kubeconfig (its kubelet, waiting for that file, then starts and sends its CSR)."""
        try:
            join_node(command.address, command.token, (command.ca_hash,), bootstrap_kubeconfig_path(self.folder, node))
        except DiscoveryError as err:
            raise RuntimeError(str(err)) from None  # phases.join_workers retries: the token may be new

    def add_workers(self, count: int, progress: Progress) -> Cluster:
        """`count` more workers on the running cluster, joined and Ready (provision/localworkers.py)."""
        with localworkers.changing(localworkers.running_state(self.name)) as state:
            localworkers.add_workers(state, count, progress, time.monotonic() + self.timeout, self.join)
            return self.cluster(state)

    def remove_worker(self, node: str, progress: Progress, drain: localworkers.Drain) -> Cluster:
        """Drain the worker `node`, delete its Node and remove it from this host (never the master)."""
        with localworkers.changing(localworkers.running_state(self.name)) as state:
            localworkers.remove_worker(state, localworkers.worker(state, node), progress, drain)
            return self.cluster(state)

    def add_master(self, progress: Progress) -> Cluster:
        """One more master (etcd member and control plane) on a running cluster of several
        (provision/localmasters.py)."""
        with localworkers.changing(localworkers.running_state(self.name)) as state:
            localmasters.add_master(state, progress, time.monotonic() + self.timeout)
            return self.cluster(state)

    def remove_master(self, node: str, progress: Progress) -> Cluster:
        """Take the master `node` out: its etcd member first, then its daemons, Node and namespace."""
        with localworkers.changing(localworkers.running_state(self.name)) as state:
            localmasters.remove_master(state, node, progress)
            return self.cluster(state)

    def down(self) -> bool:
        """Remove everything the cluster made. False if there is no such cluster."""
        state = load_state(self.options.name)
        if state is None and not self.folder.exists():
            return False
        if state is not None:
            phases.forget_default_config(state.name, Path(state.kubeconfig))
            self._teardown(state)
        shutil.rmtree(self.folder, ignore_errors=True)
        return True

    def _teardown(self, state: ClusterState) -> None:
        """Stop every daemon and undo the host's changes; the folder (logs) stays."""
        if state.supervisor_pid:
            terminate(state.supervisor_pid, timeout=60)  # it stops the daemons in reverse start order
        # If the supervisor had been killed, its daemons are still here.
        for pid in {*read_pids(self.folder).values(), *state.pids.values()}:
            if alive(pid):
                terminate(pid, timeout=10)
        for info in state.node_infos():
            teardown_node(state, info)  # the kubelet is already stopped by now: this unmounts what the node left
        netns.remove_all(state.bridge, state.links(), state.nft_table)
        with contextlib.suppress(nft.NftError):  # the master proxy's rules stay when it stops, on purpose
            nft.apply_sync(nft.cleanup_transaction(state.proxy_table))
            # Its NetworkPolicy table likewise (on the host: the master shares the host's network here).
            nft.apply_sync(nft.cleanup_transaction(netpol_table(state.proxy_table)))
        with contextlib.suppress(OSError):
            SOCKET_ROOT.rmdir()  # only when no other cluster's node still has its socket there

    def status(self) -> dict[str, bool]:
        """Each supervised daemon (and the supervisor): running or not."""
        state = load_state(self.options.name)
        if state is None:
            return {}
        running = read_pids(self.folder)
        specs_file = self.folder / "supervisor.json"
        specs = json.loads(specs_file.read_text()) if specs_file.exists() else []
        result = {"supervisor": bool(state.supervisor_pid) and alive(state.supervisor_pid)}
        for spec in specs:
            pid = running.get(spec["name"])
            result[spec["name"]] = pid is not None and alive(pid)
        return result

    def clusters(self) -> list[str]:
        return names()


def up(name: str = "flotilla", *, progress: Progress | None = None, timeout: float = UP_TIMEOUT,
       **options: Any) -> Cluster:
    """`kctl cluster up`'s local path for library callers (bench/cluster.py): Options' fields as keywords."""
    return LocalProvider(Options(name, **options), timeout=timeout).up(progress or Quiet())


def down(name: str = "flotilla") -> bool:
    return LocalProvider(Options(name)).down()
