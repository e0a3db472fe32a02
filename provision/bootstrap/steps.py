"""The steps that turn a machine into a Flotilla master or worker.

Each step takes a `Host` (provision/bootstrap/host.py) and acts only through
its `run`, so the same code provisions a Vagrant VM and an SSH server (over
fabric.Connection) or a test's temporary root (invoke.Context). Every step is
idempotent: it compares before it writes, and reports what it changed.

    install_flotilla   wheels built on the host -> /opt/flotilla/venv, kctl on PATH
    sync_config        certificates, kubeconfigs, containerd.toml, kubelet.yaml -> /etc/flotilla
    apply_units        systemd units; enable --now; restart only units whose files changed
    needs_join, join   a worker runs the master's `kctl join` (bootstrap token, pinned CA)
    teardown           stop and remove all of the above

File contents and daemon argv come from provision/components.py (the same
ones the local provider uses); this module decides where they go on a node.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex
from pathlib import Path

from nodeagent.kubelet.config import KubeletConfig
from provision import components
from provision.bootstrap.host import Host
from provision.bootstrap.units import UNIT_DIR, Unit
from provision.containerd import NodeRuntime
from provision.images import registry
from provision.localnode import LocalNode
from provision.processes import etcd_argv

FLOTILLA_DIR = "/opt/flotilla"
VENV = f"{FLOTILLA_DIR}/venv"
WHEELS = f"{FLOTILLA_DIR}/wheels"
INSTALLED = f"{FLOTILLA_DIR}/installed.txt"
CONFIG_DIR = "/etc/flotilla"
NODE_DIR = "/var/lib/flotilla/node"
ETCD_DIR = "/var/lib/flotilla/etcd"
ETCD_PORT = 2379
# Members on machines: twice etcd's heartbeat and election timeout (100 ms, 1 s), as etcd's tuning guide
# advises for slow or busy machines: a VM under emulation (1 vCPU, starting Python daemons) may miss a 100 ms
# heartbeat and call a needless election, a moment without writes. A precaution, not yet measured on the
# VMs; a lost leader is still replaced within about 2 s, inside the scheduler's and controller's leases.
ETCD_MEMBER_TIMINGS = ("--heartbeat-interval", "200", "--election-timeout", "2000")
# The API VIP's Lease on machines: Kubernetes' leader-election defaults (15 s, 10 s, 2 s) instead of the
# local provider's 2.5 s / 2 s / 0.4 s. Emulated VMs answered a Lease read in more than the 0.8 s a call
# may take there, so the holder kept stepping down and the VIP flapped during the first Vagrant
# 3-master bootstrap; a lost master's VIP now moves in ~15 s on machines.
API_VIP_TIMINGS = ("--lease-duration", "15s", "--renew-deadline", "10s", "--retry-period", "2s")
KUBELET_CONFIG = f"{CONFIG_DIR}/kubelet.yaml"
# Written by `kctl join` on a worker; the kubelet trades it for its own certificate (a CSR the CA signs).
BOOTSTRAP_KUBECONFIG = f"{CONFIG_DIR}/bootstrap-kubeconfig"
# Debian's docker-registry (baked into the box) with the cluster's config: the image registry on the master.
REGISTRY_BINARY = "/usr/bin/docker-registry"
REGISTRY_CONFIG = f"{CONFIG_DIR}/registry.yml"  # the read-only side nodes pull from
REGISTRY_PUSH_CONFIG = f"{CONFIG_DIR}/registry-push.yml"  # the side pushes go to: credentials, TLS
REGISTRY_STORAGE = "/var/lib/flotilla/registry"
# The master's NFS export behind the `nfs` StorageClass (controlplane/controllers/nfs.py); nfs-kernel-server
# and nfs-common are baked into the box; an ssh master without them just gets no `nfs` class.
NFS_SHARE = "/srv/flotilla/nfs"
NFS_EXPORTS = "/etc/exports.d/flotilla.exports"


class RemoteRuntime(NodeRuntime):
    """A node's containerd whose registry hosts files travel with the node's other files.

    NodeRuntime.config() writes them on *this* machine; here they belong on the node.
    """

    def write_registry_hosts(self) -> None:
        pass


def node_files(plan: components.ClusterPlan, node: components.NodePlan,
               bundle: components.Bundle) -> dict[str, tuple[bytes, int]]:
    """What a node gets of the cluster's files, at their paths on the node.

    The master gets the whole PKI (the apiserver and the controller manager,
    which signs the workers' CSRs, read most of it) and its own kubelet
    credentials; a worker gets the CA certificate, the kubelet API's serving
    certificate and the proxy's kubeconfig. Its kubelet's client certificate
    it obtains itself, through `kctl join` and a CSR (see `join`).
    """
    if node.control_plane:
        wanted = set(bundle.files)
    else:
        wanted = {f"{components.CA}.crt", f"kubeconfigs/{components.PROXY.name}.conf", f"pki/kubelet-{node.name}.crt",
                  f"pki/kubelet-{node.name}.key"}
    files: dict[str, tuple[bytes, int]] = {}
    for relative in sorted(wanted):
        files[f"{plan.config_dir}/{relative}"] = (bundle.files[relative], 0o600 if components.is_private(relative)
                                                  else 0o644)
    local = _local_node(plan, node)
    rt = local.runtime
    files[str(rt.config_path)] = (rt.config().encode(), 0o644)
    for registry_host, text in rt.registry_hosts().items():
        files[f"{rt.registry_hosts_dir}/{registry_host}/hosts.toml"] = (text.encode(), 0o644)
    files[KUBELET_CONFIG] = (local.kubelet_config().to_yaml().encode(), 0o644)
    if node == first_master(plan) and plan.registry:
        # A fixed upload secret (from the CA: stable per cluster) keeps a re-run from rewriting the file.
        secret = hashlib.sha256(bundle.files[f"{components.CA}.crt"]).hexdigest()[:32]
        storage, pki = Path(REGISTRY_STORAGE), plan.config_dir
        files[REGISTRY_CONFIG] = (registry.config_text(storage=storage, address=plan.registry, secret=secret,
                                                       readonly=True).encode(), 0o600)
        files[REGISTRY_PUSH_CONFIG] = (registry.config_text(
            storage=storage, address=registry.push_address(plan.registry), secret=secret,
            htpasswd_file=pki / registry.HTPASSWD_FILE,
            tls=(pki / f"{registry.SERVING_CERT}.crt", pki / f"{registry.SERVING_CERT}.key")).encode(), 0o600)
    return files


def _local_node(plan: components.ClusterPlan, node: components.NodePlan) -> LocalNode:
    """The node's containerd and kubelet settings, laid out as on any other Flotilla node."""
    known = {f.name for f in dataclasses.fields(KubeletConfig)}
    settings = {k: v for k, v in components.kubelet_settings(plan, node).items() if k in known}
    settings["root_dir"] = f"{NODE_DIR}/kubelet"
    local = LocalNode(node.name, Path(NODE_DIR), plan.grpc_server, node.address, node.pod_cidr, settings)
    local.runtime = RemoteRuntime(node.name, Path(NODE_DIR) / "containerd", registry=plan.registry,
                                  offline=plan.offline)
    return local


def first_master(plan: components.ClusterPlan) -> components.NodePlan:
    """The master that also runs the image registry and exports NFS (make_plan lists the masters first)."""
    return next(n for n in plan.nodes if n.control_plane)


def master_units(plan: components.ClusterPlan, node: components.NodePlan) -> list[Unit]:
    """A master's etcd member (TLS only), then its control plane (argv from provision/components.py).

    One master: etcd on loopback, the apiserver on the master's address. Several (`plan.ha`): each master's
    member on its own address and loopback, `--initial-cluster` naming every master; the apiserver on
    every address (its own, and the VIP while it holds it) dialing its own member first; the VIP announcer;
    the scheduler and controller manager leader-elected. The registry runs on the first master only.

    A member's unit is `Type=simple`, so `systemctl enable --now` returns once etcd is forked: the first
    master's start does not wait for a quorum the other masters, provisioned in parallel, bring later.
    `--initial-cluster-state new` stays in the unit: etcd reads it only for an empty data dir, so a
    restart (or a re-run of `up`) rejoins with the member's data, and a member whose data was lost is
    refused by its peers ("already bootstrapped") rather than starting a cluster of its own.
    """
    kubeconfigs = {"scheduler": components.SCHEDULER, "controller-manager": components.CONTROLLER_MANAGER,
                   "dns": components.DNS, "api-vip": components.PROXY}
    tls = components.etcd_tls(plan)
    etcd_reads = () if tls is None else (tls.ca, tls.cert, tls.key, tls.peer_cert, tls.peer_key)
    if plan.ha:
        members = components.etcd_members(plan)
        member = next(m for m in members if m.name == node.name)
        etcd = etcd_argv(Path(ETCD_DIR), ETCD_PORT, ETCD_PORT + 1, tls, member=member, cluster=members) + \
            list(ETCD_MEMBER_TIMINGS)
        argvs = dict(components.master_control_plane_argvs(plan, node, etcd_port=ETCD_PORT))
        argvs["api-vip"] = [*argvs["api-vip"], *API_VIP_TIMINGS]
    else:
        etcd = etcd_argv(Path(ETCD_DIR), ETCD_PORT, ETCD_PORT + 1, tls)
        argvs = dict(components.control_plane_argvs(plan))
    units = [Unit("etcd", etcd, etcd_reads, kill_mode="mixed")]
    if plan.registry and node == first_master(plan):
        pushes = tuple(f"{plan.config_dir}/{p}" for p in (registry.HTPASSWD_FILE, f"{registry.SERVING_CERT}.crt",
                                                           f"{registry.SERVING_CERT}.key"))
        units += [Unit("registry", [REGISTRY_BINARY, "serve", REGISTRY_CONFIG], (REGISTRY_CONFIG,)),
                  Unit("registry-push", [REGISTRY_BINARY, "serve", REGISTRY_PUSH_CONFIG],
                       (REGISTRY_PUSH_CONFIG, *pushes))]
    pki = tuple(f"{plan.config_dir}/{p}" for p in (
        f"{components.APISERVER}.crt", f"{components.APISERVER}.key", f"{components.CA}.crt", components.TOKENS,
        f"{components.ETCD_CA}.crt", f"{components.APISERVER_ETCD_CLIENT}.crt",
        f"{components.APISERVER_ETCD_CLIENT}.key", components.ENCRYPTION_CONFIG))
    for name, argv in argvs.items():
        reads = pki if name == "apiserver" else tuple(plan.kubeconfig_path(i) for i in [kubeconfigs.get(name)] if i)
        units.append(Unit(name, argv, reads, after=("etcd",) if name == "apiserver" else ("apiserver",)))
    return units


def node_units(plan: components.ClusterPlan, node: components.NodePlan) -> list[Unit]:
    """containerd, the kubelet and the proxy: on every node, the master included."""
    local = _local_node(plan, node)
    rt = local.runtime
    identity = components.node_identity(node.name)
    # A worker's kubelet starts from the bootstrap kubeconfig and writes its own kubeconfig (the TLS bootstrap).
    bootstrap = [] if node.control_plane else ["--bootstrap-kubeconfig", BOOTSTRAP_KUBECONFIG]
    return [
        # KillMode=process: the shims (and so the pods) outlive a containerd restart, as Debian's unit does.
        Unit("containerd", ["/usr/bin/containerd", "--config", str(rt.config_path)], (str(rt.config_path),),
             kill_mode="process"),
        Unit("kubelet", components.kubelet_argv(plan, node, config_file=KUBELET_CONFIG,
                                                containerd_socket=str(rt.socket)) + bootstrap,
             (KUBELET_CONFIG, plan.kubeconfig_path(identity), f"{plan.config_dir}/pki/kubelet-{node.name}.crt"),
             after=("containerd",)),
        Unit("proxy", components.proxy_argv(plan, node), (plan.kubeconfig_path(components.PROXY),)),
    ]


def wheel_manifest(wheels: list[Path]) -> str:
    """One line per wheel, `name sha256`: what /opt/flotilla/installed.txt records after an install."""
    return "".join(f"{w.name} {hashlib.sha256(w.read_bytes()).hexdigest()}\n" for w in sorted(wheels))


def install_flotilla(host: Host, wheels: list[Path], *, python: str = "python3") -> bool:
    """Flotilla and its dependencies in /opt/flotilla/venv from wheels built on the host (no index).

    Only wheels not installed before (by name and digest) are (re)installed:
    a second run with the same wheels does nothing.
    """
    manifest = wheel_manifest(wheels)
    before = host.read_text(INSTALLED) or ""
    host.put_local_files({f"{WHEELS}/{w.name}": w for w in wheels})
    if before == manifest and host.run(f"test -x {host.path(VENV)}/bin/kctl && echo yes", check=False).strip():
        return False
    done = set(before.splitlines())
    fresh = [line.split()[0] for line in manifest.splitlines() if line not in done]
    venv = host.path(VENV)
    # pip is the last thing `venv` installs: without it the venv is half-made (an interrupted run).
    host.run(f"{venv}/bin/python -m pip --version >/dev/null 2>&1 || {python} -m venv --clear {venv}",
             timeout=600)
    if fresh:
        # --no-deps: the host resolved the full set already; these are exactly the missing pieces.
        # --no-compile: byte-compiling every module of numpy, grpc... takes minutes under emulation;
        # Python compiles what the daemons import on first use.
        paths = " ".join(shlex.quote(f"{host.path(WHEELS)}/{name}") for name in fresh)
        host.run(f"{venv}/bin/python -m pip install -q --no-index --no-deps --force-reinstall --no-compile "
                 f"--disable-pip-version-check {paths}", timeout=1800)
    host.run(f"mkdir -p {host.path('/usr/local/bin')} && ln -sfn {VENV}/bin/kctl {host.path('/usr/local/bin/kctl')}")
    host.put_text(INSTALLED, manifest)
    return True


def sync_config(host: Host, files: dict[str, tuple[bytes, int]]) -> set[str]:
    """Write the node's configuration files; the set of paths that changed."""
    host.run(f"mkdir -p {host.path(CONFIG_DIR)} && chmod 700 {host.path(CONFIG_DIR)}")
    return host.sync_files(files)


def apply_units(host: Host, units: list[Unit], changed_files: set[str], *, code_changed: bool = False) -> list[str]:
    """Write the units, start them in order; restart exactly those whose unit or files changed.

    `code_changed` (new wheels were installed) restarts every unit: the running daemons hold the old code.
    Returns the services that were (re)started because something changed.
    """
    written = host.sync_files({u.path: (u.text().encode(), 0o644) for u in units})
    if written:
        host.run(f"{host.systemctl} daemon-reload")
    restarted = []
    for unit in units:
        if code_changed or unit.path in written or changed_files.intersection(unit.reads):
            host.run(f"{host.systemctl} enable -q {unit.service} && {host.systemctl} restart {unit.service}")
            restarted.append(unit.service)
        else:
            host.run(f"{host.systemctl} enable -q --now {unit.service}")
    return restarted


def has_etcd_data(host: Host) -> bool:
    """Whether the machine holds an etcd member's data (its WAL and snapshots under ETCD_DIR/member)."""
    return bool(host.run(f"test -d {host.path(ETCD_DIR)}/member && echo yes", check=False).strip())


def needs_join(host: Host, plan: components.ClusterPlan, node: components.NodePlan) -> bool:
    """A worker whose kubelet has no credentials yet (neither its own kubeconfig nor a bootstrap one)."""
    own = plan.kubeconfig_path(components.node_identity(node.name))
    probe = f"test -s {host.path(own)} || test -s {host.path(BOOTSTRAP_KUBECONFIG)} && echo yes"
    return not node.control_plane and not host.run(probe, check=False).strip()


def join(host: Host, join_command: str) -> None:
    """Run the master's `kctl join HOST:PORT --token ... --discovery-token-ca-cert-hash ...` on a worker.

    It pins the CA by its hash, reads cluster-info with the token and writes
    the bootstrap kubeconfig the kubelet then starts from.
    """
    words = shlex.split(join_command)
    if words[:2] != ["kctl", "join"]:
        raise ValueError(f"not a join command: {join_command!r}")
    host.run(shlex.join([f"{VENV}/bin/kctl", *words[1:], "--bootstrap-kubeconfig", host.path(BOOTSTRAP_KUBECONFIG)]),
             timeout=300)


def export_nfs(host: Host, clients: list[str]) -> bool:
    """Export NFS_SHARE read-write to the nodes' addresses (`clients`) from this master; False without an NFS
    server on the machine. no_root_squash: the provisioner (root) makes and removes claim directories."""
    if not host.run("command -v exportfs || true", check=False).strip():
        return False
    line = " ".join([NFS_SHARE, *(f"{c}(rw,sync,no_subtree_check,no_root_squash)" for c in clients)])
    changed = host.sync_files({NFS_EXPORTS: (f"{line}\n".encode(), 0o644)})
    host.run(f"mkdir -p {host.path(NFS_SHARE)}")
    host.run(f"{host.systemctl} enable -q --now nfs-server")
    if changed:
        host.run("exportfs -ra")
    return True


def kctl_config(host: Host, user: str, kubeconfig: bytes) -> None:
    """`kctl` configured for root and the login user (so `vagrant ssh master -c 'kctl get nodes'` works)."""
    host.sync_files({"/root/.kctl/config": (kubeconfig, 0o600)})
    if user and user != "root":
        home = f"/home/{user}"
        if host.sync_files({f"{home}/.kctl/config": (kubeconfig, 0o600)}):
            host.run(f"chown -R {shlex.quote(user)}: {host.path(home + '/.kctl')}")


def teardown(host: Host, user: str = "", *, announced: tuple[str, ...] = ()) -> None:
    """Stop and remove everything the bootstrap installed (the packages baked into the box stay).

    `announced`: addresses a master may hold as a /32 (the API's VIP): an announcer stopped with SIGKILL
    or frozen never withdrew them.
    """
    units = host.run(f"ls {host.path(UNIT_DIR)} 2>/dev/null | grep '^flotilla-.*\\.service$' || true").split()
    for service in units:
        host.run(f"{host.systemctl} disable -q --now {service}", check=False)
    if units:
        host.run("rm -f " + " ".join(shlex.quote(host.path(f"{UNIT_DIR}/{s}")) for s in units))
        host.run(f"{host.systemctl} daemon-reload", check=False)
    if host.root == "/":
        _teardown_machine(host, announced)
    user_config = [f"/home/{user}/.kctl/config"] if user and user != "root" else []
    host.run("rm -rf " + " ".join(shlex.quote(host.path(p)) for p in (
        CONFIG_DIR, "/var/lib/flotilla", FLOTILLA_DIR, "/usr/local/bin/kctl", "/root/.kctl", NFS_EXPORTS,
        *user_config)))


def _teardown_machine(host: Host, announced: tuple[str, ...] = ()) -> None:
    """What a node holds outside its files: shims, mounts, nftables, the CNI bridge, routes.

    Machine-wide, so only on a real node (never against a test's temporary root on someone's machine).
    """
    host.run(f"pkill -f 'containerd-shim.*{NODE_DIR}' ; true", check=False)
    host.run(f"test -x {VENV}/bin/python && {VENV}/bin/python -m nodeagent.proxy.main --cleanup; true",
             check=False)
    host.run(f"grep -o ' {NODE_DIR}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l; true", check=False)
    # The pods' CNI bridge (flt-<node>) and the kubelet's routes to other nodes' pods (route protocol 77).
    host.run("for b in $(ip -o link show type bridge | awk -F': ' '{print $2}' | grep '^flt-'); do "
             "ip link del \"$b\"; done; ip route flush proto 77; true", check=False)
    for address in announced:  # the API's VIP, wherever an announcer that never withdrew it left it
        host.run(f"ip -o -4 addr show | awk '$4 == \"{address}/32\" {{print $2}}' | "
                 f"xargs -r -I{{}} ip addr del {address}/32 dev {{}}; true", check=False)
