"""What each component of a cluster is given: certificates, a kubeconfig and a command line.

Every provider (this machine's network namespaces, Vagrant VMs, SSH hosts) runs
the same daemons with the same credentials; only where the files land and how
the processes start differ. So this module is pure: from a `ClusterPlan` (name,
addresses, networks, ports, the folder the daemons will read their files from)
it makes

- the PKI, as kubeadm lays it out: the cluster CA (reused when the provider
  already has one, so a re-run keeps every issued credential valid); the
  apiserver's serving certificate for every name a client may dial (the master
  address, 127.0.0.1, localhost, the `kubernetes` Service's ClusterIP and
  `kubernetes.default.svc.<domain>`), stored as a chain with the CA after it so a
  client that fetched it can pin the CA; a serving certificate per kubelet (its
  address and name); and the apiserver's client certificate for kubelets;
- one kubeconfig per identity (the CA and a client certificate inline, so a
  file is self-contained and can be copied to another machine as it is):
  the admin (group system:masters), kube-scheduler, kube-controller-manager,
  kube-proxy, the cluster DNS, and each kubelet
  (`system:node:<name>` in `system:nodes`, which node restriction narrows to
  its own Node) except those named in `token_joined`, whose kubelets obtain
  their client certificate themselves with a bootstrap token (kubelet TLS
  bootstrap);
- etcd's own PKI, as kubeadm's: a separate etcd CA (so no certificate the
  cluster CA signs -- a kubelet's, a CSR's -- opens etcd), etcd's serving and
  peer pairs, and the only two client certificates etcd accepts: the
  apiserver's and the backup tool's (`kctl etcd snapshot save`);
- the EncryptionConfiguration that seals Secrets in etcd (a fresh aescbc key,
  kept across re-runs: `keep`), and the image registry's push credentials
  (a password, its bcrypt htpasswd line, the push port's serving certificate);
- each daemon's argv, pointing at those files under `plan.config_dir`.

`bundle()` returns the files as {relative path: bytes}; `Bundle.write()` puts
them under a folder (private keys mode 0600). Nothing here starts a process or
touches the network.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from client import bootstrap, certificates
from client import config as clientconfig
from controlplane.apiserver import encryption
from controlplane.apiserver.serviceaccount import keys as sakeys
from proto.wellknown import TAINT_CONTROL_PLANE
from provision.images import registry as image_registry
from provision.processes import EtcdClientFiles, EtcdMember, EtcdTLS

MASTERS = "system:masters"
NODES = "system:nodes"
CONTROL_PLANE_ROLE = "control-plane"
CONTROL_PLANE_TAINT = f"{TAINT_CONTROL_PLANE}:NoSchedule"
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_DNS_IP = "10.96.0.10"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DEFAULT_KUBELET_PORT = 10250

CA = "pki/ca"
APISERVER = "pki/apiserver"
APISERVER_KUBELET_CLIENT = "pki/apiserver-kubelet-client"
TOKENS = "pki/tokens.csv"
# etcd's PKI (kubeadm's layout): its own CA, and the only client certificates it takes.
ETCD_CA = "pki/etcd/ca"
ETCD_SERVER = "pki/etcd/server"
ETCD_PEER = "pki/etcd/peer"
APISERVER_ETCD_CLIENT = "pki/apiserver-etcd-client"
ETCD_BACKUP_CLIENT = "pki/etcd/backup-client"
ENCRYPTION_CONFIG = "pki/encryption-config.yaml"
# The apiserver's audit log (0600, rotated at AUDIT_LOG_MAX_MIB, AUDIT_LOG_BACKUPS copies kept): every write and
# every read of a Secret, who and what, never an object's body (docs/security.md).
AUDIT_LOG = "audit/audit.log"
AUDIT_LOG_MAX_MIB = 100
AUDIT_LOG_BACKUPS = 5
# Files that are secret without being keys or kubeconfigs (0600, like those).
PRIVATE = frozenset({TOKENS, ENCRYPTION_CONFIG, image_registry.CREDENTIALS_FILE, image_registry.HTPASSWD_FILE})
# Files a re-run must not change: a new encryption key would leave every stored Secret unreadable.
# The service-account signing key (kubeadm's sa.key): a new one would make every pod's token invalid.
SERVICE_ACCOUNT_KEY = "pki/sa.key"
KEEP = (ENCRYPTION_CONFIG, SERVICE_ACCOUNT_KEY)


def is_private(relative: str) -> bool:
    """Whether a bundle file is for its owner only (keys, kubeconfigs, tokens, the encryption key, passwords)."""
    return relative.endswith((".key", ".conf")) or relative in PRIVATE


class PlanError(ValueError):
    """The cluster plan is inconsistent (an address outside its network, a node named twice, ...)."""


@dataclass(frozen=True)
class NodePlan:
    """One node: its name, its address on the cluster network, and its pods' CIDR."""

    name: str
    address: str
    pod_cidr: str
    control_plane: bool = False

    @property
    def role(self) -> str:
        return CONTROL_PLANE_ROLE if self.control_plane else "worker"


@dataclass(frozen=True)
class Identity:
    """A client identity: the kubeconfig's file name, the user (certificate CN) and groups (O)."""

    name: str
    user: str
    groups: tuple[str, ...] = ()


# The control plane's identities, with the user names Kubernetes' default RBAC binds.
ADMIN = Identity("admin", "kubernetes-admin", (MASTERS,))
SCHEDULER = Identity("scheduler", "system:kube-scheduler")
CONTROLLER_MANAGER = Identity("controller-manager", "system:kube-controller-manager")
PROXY = Identity("proxy", "system:kube-proxy")
DNS = Identity("dns", "system:coredns")
COMPONENTS = (ADMIN, SCHEDULER, CONTROLLER_MANAGER, PROXY, DNS)
# kubeadm's apiserver-kubelet-client: the kubelets let system:masters read logs and exec.
KUBELET_CLIENT = Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", (MASTERS,))


def context_name(cluster: str) -> str:
    """`flotilla-<cluster>`: the cluster's entries in a shared kubeconfig (~/.kube/config)."""
    return f"flotilla-{cluster}"


def cluster_of_context(context: str) -> str:
    """The cluster a `flotilla-<cluster>` context names ("" for any other context)."""
    return context.removeprefix("flotilla-") if context.startswith("flotilla-") else ""


def node_identity(node: str) -> Identity:
    return Identity(f"kubelet-{node}", f"system:node:{node}", (NODES,))


@dataclass(frozen=True)
class ClusterPlan:
    """Everything the components' files and flags depend on.

    `config_dir` is the folder the daemons read from on the machine that runs
    them (which, for a remote provider, is not where this process writes).
    """

    name: str
    master_address: str
    nodes: tuple[NodePlan, ...]
    pod_network: str
    etcd_url: str
    config_dir: Path
    api_port: int = 6443  # the Kubernetes API over HTTPS: kubectl's `server`
    token_port: int = 6444  # gRPC, bearer tokens (joining nodes)
    grpc_port: int = 6445  # gRPC, client certificates (kctl and the daemons)
    service_cidr: str = DEFAULT_SERVICE_CIDR
    dns_ip: str = DEFAULT_DNS_IP
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    lb_pool: str = ""
    registry: str = ""
    # Air-gapped (`kctl cluster up --offline`): docker.io names only from the cluster registry.
    offline: bool = False
    # Several masters, each running etcd and the control plane; `master_address` is then the API's virtual IP.
    ha: bool = False
    kubelet_port: int = DEFAULT_KUBELET_PORT
    python: str = field(default=sys.executable)

    def __post_init__(self) -> None:
        try:
            pods = ipaddress.ip_network(self.pod_network)
            services = ipaddress.ip_network(self.service_cidr)
            ipaddress.ip_address(self.master_address)
            dns = ipaddress.ip_address(self.dns_ip)
        except ValueError as err:
            raise PlanError(f"cluster {self.name}: {err}") from None
        if dns not in services:
            raise PlanError(f"cluster {self.name}: the DNS address {dns} is outside the service CIDR {services}")
        seen: set[str] = set()
        for node in self.nodes:
            if node.name in seen:
                raise PlanError(f"cluster {self.name}: node {node.name} is planned twice")
            seen.add(node.name)
            try:
                ipaddress.ip_address(node.address)
                cidr = ipaddress.ip_network(node.pod_cidr)
            except ValueError as err:
                raise PlanError(f"node {node.name}: {err}") from None
            if not cidr.subnet_of(pods):  # type: ignore[arg-type]
                raise PlanError(f"node {node.name}: pod CIDR {cidr} is outside the pod network {pods}")
        ports = {"API": self.api_port, "token": self.token_port, "gRPC": self.grpc_port}
        if len(set(ports.values())) < len(ports):
            raise PlanError(f"cluster {self.name}: the apiserver's ports must differ, got "
                            + ", ".join(f"{what} {port}" for what, port in ports.items()))

    @property
    def https_url(self) -> str:
        """The Kubernetes API as kubectl dials it (a kubeconfig's `server`)."""
        return f"https://{self.master_address}:{self.api_port}"

    @property
    def grpc_server(self) -> str:
        """HOST:PORT the daemons and kctl dial: gRPC with client certificates."""
        return f"{self.master_address}:{self.grpc_port}"

    @property
    def token_server(self) -> str:
        """HOST:PORT of gRPC with bearer tokens (where `kctl join` goes)."""
        return f"{self.master_address}:{self.token_port}"

    @property
    def grpc_endpoints(self) -> clientconfig.GrpcEndpoints:
        """kctl's addresses, as every kubeconfig of the cluster carries them (client/config.py)."""
        return clientconfig.GrpcEndpoints(self.grpc_server, self.token_server)

    @property
    def context(self) -> str:
        """The name of the cluster's cluster, user and context entries in a kubeconfig, as kind's `kind-<name>`."""
        return context_name(self.name)

    @property
    def kubernetes_service_ip(self) -> str:
        """The `kubernetes` Service's ClusterIP: the first address of the service CIDR."""
        return str(ipaddress.ip_network(self.service_cidr)[1])

    def path(self, relative: str) -> str:
        return str(self.config_dir / relative)

    def kubeconfig_path(self, identity: Identity) -> str:
        return self.path(f"kubeconfigs/{identity.name}.conf")

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise PlanError(f"cluster {self.name} has no node {name}")


@dataclass
class Bundle:
    """A cluster's files: {path relative to the config folder: content}."""

    files: dict[str, bytes]

    def write(self, root: Path) -> None:
        for relative, content in self.files.items():
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            # Private keys, and kubeconfigs (which carry their identity's key inline), for the owner only.
            if is_private(relative):
                target.touch(mode=0o600)
                target.chmod(0o600)
            target.write_bytes(content)

    def ca(self) -> certificates.KeyPair:
        return certificates.KeyPair(self.files[f"{CA}.crt"], self.files[f"{CA}.key"])


def read_kept(root: Path) -> dict[str, bytes]:
    """The files of an earlier bundle under `root` that `bundle(keep=...)` must carry over (KEEP)."""
    return {relative: (root / relative).read_bytes() for relative in KEEP if (root / relative).exists()}


def read_ca(root: Path) -> certificates.KeyPair | None:
    """The CA a provider made on an earlier run, if its folder still has it."""
    cert, key = root / f"{CA}.crt", root / f"{CA}.key"
    if cert.exists() and key.exists():
        return certificates.KeyPair(cert.read_bytes(), key.read_bytes())
    return None


def apiserver_names(plan: ClusterPlan) -> list[str]:
    """Every name and address a client may use for the apiserver (its certificate's SANs)."""
    domain = plan.cluster_domain
    names = [plan.master_address, "127.0.0.1", "localhost", plan.kubernetes_service_ip,
             "kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{domain}",
             f"{plan.name}-master"]
    # Each master's own address too: its VIP announcer and `kctl` (when the VIP moves) may dial it directly.
    return list(dict.fromkeys([*names, *master_names(plan)]))


def master_names(plan: ClusterPlan) -> list[str]:
    """Every control-plane node's address and name."""
    return [name for n in plan.nodes if n.control_plane for name in (n.address, n.name)]


def bundle(plan: ClusterPlan, ca: certificates.KeyPair | None = None, *, token_joined: Collection[str] = (),
           keep: Mapping[str, bytes] | None = None, etcd_ca: certificates.KeyPair | None = None) -> Bundle:
    """The PKI and every kubeconfig of the cluster (a new CA unless one is given).

    Nodes in `token_joined` get no kubelet client kubeconfig: they join with a bootstrap token.
    `keep`: files of an earlier bundle to carry over as they are (`read_kept`: the encryption key).
    `etcd_ca`: etcd's CA to keep (`read_etcd_ca`; else a new one).
    """
    unknown = set(token_joined) - {n.name for n in plan.nodes}
    if unknown:
        raise PlanError(f"cluster {plan.name} has no node {', '.join(sorted(unknown))} to join with a token")
    ca = ca or certificates.create_ca(f"{plan.name}-ca")
    files: dict[str, bytes] = {f"{CA}.crt": ca.cert_pem, f"{CA}.key": ca.key_pem}

    def put(name: str, pair: certificates.KeyPair, *, chain: bool = False) -> None:
        files[f"{name}.crt"] = pair.cert_pem + (ca.cert_pem if chain else b"")
        files[f"{name}.key"] = pair.key_pem

    put(APISERVER, certificates.create_serving_cert(ca, "kube-apiserver", apiserver_names(plan)), chain=True)
    put(APISERVER_KUBELET_CLIENT, certificates.create_client_cert(ca, KUBELET_CLIENT.user, KUBELET_CLIENT.groups))
    # The token port needs a token file; static tokens are not handed out, so it starts empty.
    files[TOKENS] = b"# token,user,uid,\"group1,group2\" (none: components use client certificates)\n"
    for identity in (*COMPONENTS, *(node_identity(n.name) for n in plan.nodes if n.name not in token_joined)):
        credentials = certificates.create_client_cert(ca, identity.user, identity.groups)
        doc = clientconfig.kubeconfig(plan.context, plan.https_url, ca.cert_pem, plan.grpc_endpoints,
                                      client_certificate=credentials.cert_pem, client_key=credentials.key_pem)
        files[f"kubeconfigs/{identity.name}.conf"] = clientconfig.dump(doc).encode()
    for node in plan.nodes:
        put(f"pki/kubelet-{node.name}", certificates.create_serving_cert(ca, node.name, [node.address, node.name]))
    files.update(_etcd_pki(plan, etcd_ca))
    files[ENCRYPTION_CONFIG] = encryption.new_config().encode()
    if plan.registry:
        push = image_registry.new_credentials()
        files[image_registry.CREDENTIALS_FILE] = push.to_yaml(image_registry.push_address(plan.registry))
        files[image_registry.HTPASSWD_FILE] = image_registry.htpasswd(push)
        put(image_registry.SERVING_CERT, certificates.create_serving_cert(
            ca, "flotilla-registry", [plan.registry.rpartition(":")[0], f"{plan.name}-master"]))
    files[SERVICE_ACCOUNT_KEY] = sakeys.new_signing_key_pem()
    files.update({k: v for k, v in (keep or {}).items() if k in KEEP})
    return Bundle(files)


def _etcd_pki(plan: ClusterPlan, etcd_ca: certificates.KeyPair | None = None) -> dict[str, bytes]:
    """etcd's CA (new unless given), serving and peer pairs (loopback and the masters' addresses), and its
    two clients."""
    etcd_ca = etcd_ca or certificates.create_ca(f"{plan.name}-etcd-ca")
    # Every member's address and name: one serving and one peer pair serve them all.
    names = list(dict.fromkeys(["127.0.0.1", "localhost", plan.master_address, f"{plan.name}-master",
                                *master_names(plan)]))
    pairs = {ETCD_SERVER: certificates.create_serving_cert(etcd_ca, "kube-etcd", names),
             ETCD_PEER: certificates.create_peer_cert(etcd_ca, "kube-etcd-peer", names),
             APISERVER_ETCD_CLIENT: certificates.create_client_cert(etcd_ca, "kube-apiserver-etcd-client"),
             ETCD_BACKUP_CLIENT: certificates.create_client_cert(etcd_ca, "flotilla-etcd-backup")}
    files = {f"{ETCD_CA}.crt": etcd_ca.cert_pem, f"{ETCD_CA}.key": etcd_ca.key_pem}
    for name, pair in pairs.items():
        files[f"{name}.crt"], files[f"{name}.key"] = pair.cert_pem, pair.key_pem
    return files


def etcd_tls(plan: ClusterPlan) -> EtcdTLS | None:
    """etcd's certificates for its command line (None: a plaintext etcd URL, which only tests use)."""
    if not plan.etcd_url.startswith("https://"):
        return None
    return EtcdTLS(plan.path(f"{ETCD_CA}.crt"), plan.path(f"{ETCD_SERVER}.crt"), plan.path(f"{ETCD_SERVER}.key"),
                   plan.path(f"{ETCD_PEER}.crt"), plan.path(f"{ETCD_PEER}.key"))


def etcd_backup_tls(config_dir: Path) -> EtcdClientFiles:
    """What `kctl etcd snapshot save` dials etcd with, from a cluster's config folder."""
    root = str(config_dir)
    return EtcdClientFiles(f"{root}/{ETCD_CA}.crt", f"{root}/{ETCD_BACKUP_CLIENT}.crt",
                         f"{root}/{ETCD_BACKUP_CLIENT}.key")


def cluster_info_manifest(plan: ClusterPlan, ca_pem: bytes) -> dict[str, Any]:
    """kube-public/cluster-info, as `kubeadm init` publishes it: what `kctl join` trusts and where it goes next."""
    info = bootstrap.cluster_info(f"https://{plan.grpc_server}", ca_pem, plan.token_server)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": info.metadata.name, "namespace": info.metadata.namespace}, "data": dict(info.data)}


# ---------------------------------------------------------------- command lines

def _module(plan: ClusterPlan, module: str) -> list[str]:
    return [plan.python, "-m", module]


def apiserver_argv(plan: ClusterPlan, *, listen_host: str = "", etcd_servers: str = "") -> list[str]:
    """The Kubernetes API over HTTPS on the API port (client certificates or bearer tokens), gRPC with client
    certificates and gRPC with bearer tokens on their own ports, all under the one serving certificate; RBAC."""
    host = listen_host or plan.master_address
    return [*_module(plan, "controlplane.apiserver.main"), "--etcd-servers", etcd_servers or plan.etcd_url,
            "--https-listen", f"{host}:{plan.api_port}",
            "--secure-listen", f"{host}:{plan.grpc_port}", "--token-listen", f"{host}:{plan.token_port}",
            "--tls-cert-file", plan.path(f"{APISERVER}.crt"), "--tls-private-key-file", plan.path(f"{APISERVER}.key"),
            "--client-ca-file", plan.path(f"{CA}.crt"), "--token-auth-file", plan.path(TOKENS),
            # Bootstrap tokens (kube-system Secrets) on the token port: how `kctl join` nodes get credentials.
            "--enable-bootstrap-token-auth", "--authorization-mode", "RBAC",
            "--kubelet-client-certificate", plan.path(f"{APISERVER_KUBELET_CLIENT}.crt"),
            "--kubelet-client-key", plan.path(f"{APISERVER_KUBELET_CLIENT}.key"),
            "--kubelet-certificate-authority", plan.path(f"{CA}.crt"),
            *_etcd_client_flags(plan),
            # Secrets are sealed in etcd (its WAL, its db, its snapshots) with the cluster's own key.
            "--encryption-provider-config", plan.path(ENCRYPTION_CONFIG),
            # Pods' service-account tokens: signed and checked with the cluster's one key, whichever apiserver.
            "--service-account-signing-key-file", plan.path(SERVICE_ACCOUNT_KEY),
            "--service-account-key-file", plan.path(SERVICE_ACCOUNT_KEY),
            # No pod may take a host port this cluster's control plane listens on (ReservedHostPorts admission).
            "--reserved-host-ports", ",".join(str(p) for p in reserved_host_ports(plan)),
            "--audit-log-path", plan.path(AUDIT_LOG), "--audit-log-maxsize", str(AUDIT_LOG_MAX_MIB),
            "--audit-log-maxbackup", str(AUDIT_LOG_BACKUPS)]


def _etcd_client_flags(plan: ClusterPlan) -> list[str]:
    """Kubernetes' flags for the apiserver's etcd client certificate (none for a plaintext test etcd)."""
    if not plan.etcd_url.startswith("https://"):
        return []
    return ["--etcd-cafile", plan.path(f"{ETCD_CA}.crt"), "--etcd-certfile", plan.path(f"{APISERVER_ETCD_CLIENT}.crt"),
            "--etcd-keyfile", plan.path(f"{APISERVER_ETCD_CLIENT}.key")]


def reserved_host_ports(plan: ClusterPlan) -> list[int]:
    """The ports the plan's daemons listen on: etcd (client, and peer one above), the apiserver's three,
    the kubelet's and the image registry's."""
    etcd = urlsplit(plan.etcd_url).port or 2379
    registry = int(plan.registry.rpartition(":")[2]) if plan.registry.rpartition(":")[2].isdigit() else 5000
    # The registry's push side listens on the port after its pull side (provision/images/registry.py).
    return sorted({etcd, etcd + 1, plan.api_port, plan.token_port, plan.grpc_port, plan.kubelet_port, registry,
                   registry + 1})


def scheduler_argv(plan: ClusterPlan) -> list[str]:
    return [*_module(plan, "controlplane.scheduler.main"), "--kubeconfig", plan.kubeconfig_path(SCHEDULER)]


def controller_manager_argv(plan: ClusterPlan) -> list[str]:
    # --server too: the controller manager's --server has a loopback default that would win over the kubeconfig.
    # The cluster CA signs approved CertificateSigningRequests (kubelets joining with a bootstrap token).
    argv = [*_module(plan, "controlplane.controllers.main"), "--kubeconfig", plan.kubeconfig_path(CONTROLLER_MANAGER),
            "--server", plan.grpc_server, "--cluster-cidr", plan.pod_network,
            "--cluster-signing-cert-file", plan.path(f"{CA}.crt"), "--cluster-signing-key-file", plan.path(f"{CA}.key"),
            "--root-ca-file", plan.path(f"{CA}.crt")]  # kube-root-ca.crt in every namespace
    # LoadBalancer addresses: the service-lb controller in this process, not a daemon of its own (~40 MiB less).
    return argv + (["--lb-pool", plan.lb_pool] if plan.lb_pool else [])


def dns_argv(plan: ClusterPlan, listen: str = "") -> list[str]:
    # No --upstream: names outside the cluster domain get REFUSED rather than leaving the cluster.
    return [*_module(plan, "controlplane.dns.main"), "--kubeconfig", plan.kubeconfig_path(DNS),
            "--listen", f"{listen or plan.master_address}:53", "--domain", plan.cluster_domain]


def kubelet_settings(plan: ClusterPlan, node: NodePlan) -> dict[str, Any]:
    """The kubelet's configuration file keys (nodeagent/kubelet/config.py) that the cluster decides."""
    settings: dict[str, Any] = {
        "server": plan.grpc_server, "node_name": node.name, "node_ip": node.address, "pod_cidr": node.pod_cidr,
        "kubeconfig": plan.kubeconfig_path(node_identity(node.name)),
        "tls_cert_file": plan.path(f"pki/kubelet-{node.name}.crt"),
        "tls_private_key_file": plan.path(f"pki/kubelet-{node.name}.key"),
        "client_ca_file": plan.path(f"{CA}.crt"),
        "port": plan.kubelet_port, "node_role": node.role,
        "register_with_taints": [CONTROL_PLANE_TAINT] if node.control_plane else [],
        "cluster_dns": [plan.dns_ip], "cluster_domain": plan.cluster_domain,
    }
    if plan.registry:
        settings["cluster_registry"] = plan.registry
    if plan.offline:
        settings["registry_offline"] = True
    return settings


def kubelet_argv(plan: ClusterPlan, node: NodePlan, *, config_file: str, containerd_socket: str) -> list[str]:
    """The kubelet's flags; credentials and the rest of `kubelet_settings` are in `config_file`."""
    return [*_module(plan, "nodeagent.kubelet.main"), "--node-name", node.name, "--node-ip", node.address,
            "--containerd-socket", containerd_socket, "--config", config_file]


def proxy_argv(plan: ClusterPlan, node: NodePlan, *, netns: str = "", table: str = "",
               nodeport_addresses: Iterable[str] = (), announce: bool = True) -> list[str]:
    """The proxy's flags. `table` and `nodeport_addresses` for a proxy sharing its namespace with others
    (its own nftables table; node ports on its own address only); `announce=False` keeps the node out of
    LoadBalancer announcing (the proxy finds the interface to announce on from --node-ip)."""
    argv = [*_module(plan, "nodeagent.proxy.main"), "--kubeconfig", plan.kubeconfig_path(PROXY),
            "--node-name", node.name]
    argv += ["--node-ip", node.address] if announce else []
    argv += ["--table", table] if table else []
    for cidr in nodeport_addresses:
        argv += ["--nodeport-addresses", cidr]
    return argv + (["--netns", netns] if netns else [])


def control_plane_argvs(plan: ClusterPlan) -> Mapping[str, list[str]]:
    """The master's daemons after etcd, in start order (each needs the apiserver)."""
    return {"apiserver": apiserver_argv(plan), "scheduler": scheduler_argv(plan),
            "controller-manager": controller_manager_argv(plan), "dns": dns_argv(plan)}


# ---------------------------------------------------------------- several masters (kubeadm's stacked etcd)

API_VIP_LEASE = "flotilla-api-vip"  # kube-system Lease whose holder announces the API's virtual IP
# The scheduler's and controller manager's Leases with several masters: a standby takes over 10 s after its
# leader's master is lost (Kubernetes' 15 s, plus the VIP's own fail-over, came to ~22 s on a loaded box).
LEADER_TIMINGS = ("--leader-elect-lease-duration", "10s", "--leader-elect-renew-deadline", "8s",
                  "--leader-elect-retry-period", "1s")


def etcd_members(plan: ClusterPlan) -> tuple[EtcdMember, ...]:
    """Each master's etcd member, named after its node."""
    return tuple(EtcdMember(n.name, n.address) for n in plan.nodes if n.control_plane)


def master_control_plane_argvs(plan: ClusterPlan, node: NodePlan, *, etcd_port: int) -> Mapping[str, list[str]]:
    """One master's daemons after its etcd member, in start order, when there are several.

    Its apiserver listens on every address of the master's namespace (its own, and the virtual IP while
    this master announces it) and dials its own etcd member first; the VIP announcer holds the address
    while this master's apiserver can renew the Lease API_VIP_LEASE (nodeagent/apivip); scheduler and
    controller manager stand by for their Leases like every copy; DNS answers on the master's address.
    """
    scheme = urlsplit(plan.etcd_url).scheme or "https"
    members = [m for m in etcd_members(plan) if m.name == node.name] + \
              [m for m in etcd_members(plan) if m.name != node.name]
    servers = ",".join(f"{scheme}://{m.address}:{etcd_port}" for m in members)
    vip = [*_module(plan, "nodeagent.apivip.main"), "--kubeconfig", plan.kubeconfig_path(PROXY),
           "--server", f"{node.address}:{plan.grpc_port}", "--node-name", node.name, "--node-ip", node.address,
           "--vip", plan.master_address, "--lease", API_VIP_LEASE,
           *(a for m in etcd_members(plan) if m.name != node.name for a in ("--peer", m.address))]
    # Its own address in the kubernetes Service's endpoints (controlplane/apiserver/kubernetesservice.py).
    apiserver = [*apiserver_argv(plan, listen_host="0.0.0.0", etcd_servers=servers), "--advertise-address",
                 node.address]
    return {"apiserver": apiserver, "api-vip": vip,
            # kube-scheduler's default is to elect; Flotilla's single scheduler does not, several must.
            "scheduler": [*scheduler_argv(plan), "--leader-elect", "true", *LEADER_TIMINGS],
            "controller-manager": [*controller_manager_argv(plan), *LEADER_TIMINGS],
            "dns": dns_argv(plan, node.address)}


def joining_master_files(plan: ClusterPlan, ca: certificates.KeyPair, etcd_ca: certificates.KeyPair,
                         node: NodePlan) -> Bundle:
    """What `kctl cluster add-master` writes for a new master of `plan` (which already lists it): the
    apiserver's and etcd's serving and peer pairs again, naming every master now (the running daemons keep
    theirs until they restart; the same CAs sign both), and the new node's kubelet pairs and kubeconfig."""
    files: dict[str, bytes] = {}
    apiserver = certificates.create_serving_cert(ca, "kube-apiserver", apiserver_names(plan))
    files[f"{APISERVER}.crt"], files[f"{APISERVER}.key"] = apiserver.cert_pem + ca.cert_pem, apiserver.key_pem
    names = list(dict.fromkeys(["127.0.0.1", "localhost", plan.master_address, f"{plan.name}-master",
                                *master_names(plan)]))
    for name, pair in ((ETCD_SERVER, certificates.create_serving_cert(etcd_ca, "kube-etcd", names)),
                       (ETCD_PEER, certificates.create_peer_cert(etcd_ca, "kube-etcd-peer", names)),
                       (f"pki/kubelet-{node.name}", certificates.create_serving_cert(ca, node.name,
                                                                                    [node.address, node.name]))):
        files[f"{name}.crt"], files[f"{name}.key"] = pair.cert_pem, pair.key_pem
    identity = node_identity(node.name)
    credentials = certificates.create_client_cert(ca, identity.user, identity.groups)
    doc = clientconfig.kubeconfig(plan.context, plan.https_url, ca.cert_pem, plan.grpc_endpoints,
                                  client_certificate=credentials.cert_pem, client_key=credentials.key_pem)
    files[f"kubeconfigs/{identity.name}.conf"] = clientconfig.dump(doc).encode()
    return Bundle(files)


def read_etcd_ca(root: Path) -> certificates.KeyPair | None:
    cert, key = root / f"{ETCD_CA}.crt", root / f"{ETCD_CA}.key"
    if cert.exists() and key.exists():
        return certificates.KeyPair(cert.read_bytes(), key.read_bytes())
    return None
