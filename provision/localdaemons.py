"""What the local provider's supervisor runs: one DaemonSpec per daemon of the cluster, in start order.

The registry first (`up` pushes the base images to it while the rest starts:
its push side, with credentials, then the read-only side nodes pull from),
then etcd (TLS only) and the control plane on the host, then per node its containerd,
kubelet and proxy (`node_specs`: also what `kctl cluster add-worker` hands a
running supervisor). A worker's containerd and kubelet run inside its network
namespace (`nsenter --net`: the apiserver dials its kubelet at the node's
InternalIP); its proxy programs the namespace from the host. The master is the
host: its daemons run in the host's namespace, its proxy with a table of the
cluster's own and node ports on the master's address only.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from provision import components
from provision.containerd import NodeRuntime
from provision.images import registry as image_registry
from provision.localnode import LocalNode
from provision.localplan import ClusterState, NodeInfo, bootstrap_kubeconfig_path, kubelet_kubeconfig_path
from provision.processes import etcd_argv
from provision.supervisor import DaemonSpec

SOCKET_ROOT = Path("/run/flotilla")


class ClusterRuntime(NodeRuntime):
    """A node's containerd, pulling over plain HTTP from the cluster registry (docker.io names included)."""

    @property
    def socket(self) -> Path:
        # Unix socket paths are limited to 108 bytes (containerd's ttrpc check: 104); the cluster folder may be deep.
        return SOCKET_ROOT / self.node_name / "containerd.sock"

    def config(self) -> str:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        return super().config()


def node(state: ClusterState, info: NodeInfo) -> LocalNode:
    """The node's kubelet settings and containerd (its files under <cluster>/nodes/<node>/)."""
    folder = state.folder
    settings = components.kubelet_settings(state.components_plan(), info.plan())
    # Any free port for the kubelet API: the master's kubelet shares the host with whatever else runs here.
    settings["port"] = 0
    if not info.host_veth:
        # The master's kubelet runs in the host's namespace, whose routes to the pods the provisioner owns
        # (netns.add_host_pod_routes): another cluster's master on this host must not sweep them either.
        settings["node_routes"] = False
    elif not info.control_plane:  # masters of several (namespaces too) have their kubeconfig from `up`
        settings["bootstrap_kubeconfig"] = str(bootstrap_kubeconfig_path(folder, info.name))
        settings["kubeconfig"] = str(kubelet_kubeconfig_path(folder, info.name))
    made = LocalNode(info.name, folder / "nodes" / info.name, state.grpc_server, info.address, info.pod_cidr,
                     settings)
    made.runtime = ClusterRuntime(info.name, made.base / "containerd", registry=state.registry,
                                  offline=state.offline)
    return made


def daemon_specs(state: ClusterState, *, etcd_port: int) -> list[DaemonSpec]:
    """Every daemon of the cluster, in the order the supervisor starts them (writing their config files)."""
    folder = state.folder
    logs = folder / "logs"
    cluster = state.components_plan()
    master_api = f"tcp:{state.grpc_server}"  # the daemons' port: what they wait for
    # The registry first: `up` pushes the base images to it while the rest starts. Two processes over one
    # storage: the push side (credentials, TLS) and the read-only pull side the nodes use.
    pki = state.config_dir
    pull_config, push_config = image_registry.write_cluster_configs(
        folder / "registry", state.registry, htpasswd_file=pki / image_registry.HTPASSWD_FILE,
        tls=(pki / f"{image_registry.SERVING_CERT}.crt", pki / f"{image_registry.SERVING_CERT}.key"))
    specs = [DaemonSpec("registry-push", image_registry.argv(push_config), str(logs / "registry-push.log"),
                        f"tcp:{image_registry.push_address(state.registry)}"),
             DaemonSpec("registry", image_registry.argv(pull_config), str(logs / "registry.log"),
                        f"tcp:{state.registry}"),
             DaemonSpec("etcd", etcd_argv(folder / "etcd", etcd_port, etcd_port + 1, components.etcd_tls(cluster)),
                        str(logs / "etcd.log"), f"tcp:127.0.0.1:{etcd_port}")]
    nodes = [spec for info in state.node_infos() for spec in node_specs(state, info)]
    # Every node's containerd first, none waited for: containerd needs nothing of the cluster, and waiting for
    # each socket in turn, after the control plane, cost ~0.4 s a node. Each kubelet waits for its own socket.
    runtimes = [dataclasses.replace(spec, ready="") for spec in nodes if spec.name.startswith("containerd/")]
    nodes = [spec for spec in nodes if not spec.name.startswith("containerd/")]
    if state.ha:
        return specs[:2] + runtimes + master_specs(state, etcd_port=etcd_port) + nodes
    specs[2:2] = runtimes
    for daemon, argv in components.control_plane_argvs(cluster).items():
        specs.append(DaemonSpec(daemon, argv, str(logs / f"{daemon}.log"), master_api if daemon == "apiserver" else ""))
    return specs + nodes


def node_specs(state: ClusterState, info: NodeInfo) -> list[DaemonSpec]:
    """One node's containerd, kubelet and proxy (writing their config files): what `up` starts on every node,
    and what `kctl cluster add-worker` adds to a running supervisor."""
    folder = state.folder
    logs = folder / "logs"
    cluster = state.components_plan()
    containerd = shutil.which("containerd") or "/usr/bin/containerd"
    made = node(state, info)
    rt = made.runtime
    for d in (rt.base, rt.runc_root, rt.cni_conf_dir, rt.cni_data_dir):
        d.mkdir(parents=True, exist_ok=True)
    rt.config_path.write_text(rt.config())
    # A worker's daemons run inside its namespace (the apiserver dials its kubelet at the node's InternalIP);
    # nsenter, not `ip netns exec`, which remounts /sys and hides the cgroup mounts. The master is the host.
    enter = ["nsenter", f"--net=/run/netns/{info.name}"] if info.host_veth else []
    # The kubelet starts once its containerd listens and, on a worker, once the node is joined (its bootstrap
    # kubeconfig written), as kubeadm's kubelet waits for `kubeadm join`; exiting instead would cost the
    # supervisor's restart back-off.
    # A master's kubelet has its kubeconfig already: its second wait is for the socket again.
    joined = str(rt.socket) if info.control_plane else str(bootstrap_kubeconfig_path(folder, info.name))
    kubelet = ["sh", "-c", 'until [ -S "$0" ] && [ -e "$1" ]; do sleep 0.1; done; shift; exec "$@"',
               str(rt.socket), joined, *made.kubelet_argv()]
    specs = [
        DaemonSpec(f"containerd/{info.name}", [*enter, containerd, "--config", str(rt.config_path)],
                   str(logs / f"containerd-{info.name}.log"), f"path:{rt.socket}"),
        DaemonSpec(f"kubelet/{info.name}", [*enter, *kubelet], str(logs / f"kubelet-{info.name}.log")),
    ]
    if not info.host_veth:
        # In the host's namespace: a table of this cluster's own, node ports on the master's address only
        # (not on the machine's other interfaces), and no LoadBalancer announcing -- the master is the
        # host, and an announced /32 would land on the host's bridge; like kubeadm's control-plane nodes
        # (node.kubernetes.io/exclude-from-external-load-balancers) it stays out of the LB pool.
        argv = components.proxy_argv(cluster, info.plan(), table=state.proxy_table,
                                     nodeport_addresses=[f"{info.address}/32"], announce=False)
    else:
        # The proxy programs the node's namespace from the host.
        argv = components.proxy_argv(cluster, info.plan(), netns=info.name)
    specs.append(DaemonSpec(f"proxy/{info.name}", argv, str(logs / f"proxy-{info.name}.log")))
    return specs


def master_specs(state: ClusterState, *, etcd_port: int, masters: list[NodeInfo] | None = None,
                 initial_state: str = "new") -> list[DaemonSpec]:
    """With several masters: every etcd member first (none is ready before a quorum of them runs), then each
    master's control plane, all inside the master's namespace (`masters`: only these, joining a running
    cluster's etcd as `initial_state` "existing")."""
    logs = state.folder / "logs"
    cluster = state.components_plan()
    members = components.etcd_members(cluster)
    chosen = masters if masters is not None else state.master_infos()
    specs = []
    for info in chosen:
        member = next(m for m in members if m.name == info.name)
        argv = etcd_argv(state.folder / "nodes" / info.name / "etcd", etcd_port, etcd_port + 1,
                         components.etcd_tls(cluster), member=member, cluster=members, initial_state=initial_state)
        specs.append(DaemonSpec(f"etcd/{info.name}", [*_enter(info), *argv], str(logs / f"etcd-{info.name}.log"),
                                f"tcp:{info.address}:{etcd_port}"))
    # Daemon by daemon across the masters (every apiserver, then every announcer, ...), each started without
    # waiting for the one before but the last apiserver: the three start in parallel, and everything after
    # them finds an API. (One master after the other took 12 s of `up`.)
    argvs = {info.name: components.master_control_plane_argvs(cluster, info.plan(), etcd_port=etcd_port)
             for info in chosen}
    for daemon in argvs[chosen[0].name] if chosen else ():
        for info in chosen:
            argv = argvs[info.name][daemon]
            ready = ""
            if daemon == "apiserver":  # one audit log per apiserver: three writers would rotate one file apart
                argv = [a.replace(components.AUDIT_LOG, f"audit/audit-{info.name}.log") for a in argv]
                ready = f"tcp:{info.address}:{cluster.grpc_port}" if info is chosen[-1] else ""
            specs.append(DaemonSpec(f"{daemon}/{info.name}", [*_enter(info), *argv],
                                    str(logs / f"{daemon}-{info.name}.log"), ready))
    return specs


def _enter(info: NodeInfo) -> list[str]:
    """A namespace node's daemons run inside it: nsenter, not `ip netns exec`, which remounts /sys and hides
    the cgroup mounts."""
    return ["nsenter", f"--net=/run/netns/{info.name}"] if info.host_veth else []


STANDBY_DAEMONS = ("scheduler", "controller-manager")


def is_standby(state: ClusterState, spec: DaemonSpec) -> bool:
    """A copy of the scheduler or controller manager on a master other than the first, which only waits for
    its Lease: `up` starts these once the Nodes are Ready (as kubeadm joins more control-plane nodes once the
    first is up), so their start takes no CPU from the first copies, the kubelets and the joining workers."""
    daemon, _, node_name = spec.name.partition("/")
    masters = state.master_infos()
    return state.ha and daemon in STANDBY_DAEMONS and bool(masters) and node_name != masters[0].name


def is_node_spec(spec: DaemonSpec, node_name: str) -> bool:
    """Whether `spec` is one of `node_specs`' daemons for the node `node_name`."""
    return spec.name.partition("/")[2] == node_name


def teardown_node(state: ClusterState, info: NodeInfo) -> None:
    """What a node left on the host once its daemons are stopped: runc state, shims, mounts (containerd's and
    the kubelet's volumes), cgroups, CNI results, the master's CNI bridge, its containerd socket folder.
    `down` runs it for every node, `kctl cluster remove-worker` for one."""
    made = node(state, info)
    made.cleanup()
    shutil.rmtree(made.runtime.socket.parent, ignore_errors=True)
