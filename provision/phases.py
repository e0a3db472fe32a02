"""The phases every provider goes through the same way, written once.

`kubeadm init` and `join` have phases; so does `kctl cluster up`, whatever
makes the machines. Once a provider has the control plane starting, the rest
is the same everywhere and lives here:

    wait                 poll a check until a deadline, keeping the last error for the message
    wait_for_port        the apiserver's port answers (cheap to poll while it starts)
    publish              kube-public/cluster-info, kube-dns, StorageClass standard and a join token, as the admin
    join_workers         each worker joins with that token (the provider's `join`), retried, all at once
    create_join_token    a short-lived token for named nodes only (`kctl cluster add-worker`'s join)
    registered_nodes     the Nodes the API knows (what add-worker plans around: names, addresses, podCIDRs)
    node_statuses        each Node Ready or not, by its Ready condition read through the API
    wait_for_nodes_ready every planned Node Ready
    label_node_roles     node-role.kubernetes.io/<role> on each Node (a kubelet may not label its own role)
    delete_token         the workers' token deleted once they hold certificates (`up` prints no live token)
    point_kctl_at        the admin's context merged into the user's kubeconfig (and taken out at down)

Everything here talks to the apiserver in-process through client/ (never by
running kctl and parsing its table): `up` polls several times a second while
the daemons start, and a kctl process per poll costs the CPU they need.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import subprocess
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from client import bootstrap, certificates
from client import config as clientconfig
from controlplane.controllers.localpath import default_storage_class
from proto import core_pb2, manifest, wellknown
from proto.errors import AlreadyExists, ApiError, Invalid, NotFound
from provision import components
from provision.provider import ProvisionError

# The token `up` makes lives only as long as its workers' joining may take: `up` deletes it once they hold
# their certificates, and this bounds it should `up` stop half-way. (kubeadm's default, for tokens a person
# makes with `kctl token create`, stays 24 h.)
JOIN_TOKEN_TTL = dt.timedelta(hours=1)
# What `up` prints for adding a node later: the command that makes a fresh token, never a live one.
ADD_NODE_COMMAND = "kctl token create --print-join-command --node <name>"


class WaitTimeout(ProvisionError):
    """Something `up` waits for did not happen before the deadline (the message says what, and the last error)."""


# ---------------------------------------------------------------- waiting

def wait(check: Callable[[], object], what: str, deadline: float, *, hint: str = "", interval: float = 0.2) -> None:
    """Call `check` until it returns something true; an error counts as "not yet" and is kept for the message.

    `hint` ends the timeout's message: where to look (the logs) when it comes.
    """
    last = ""
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as err:
            last = f" (last error: {err})"
        time.sleep(interval)
    raise WaitTimeout(f"{what} not ready in time{last}" + (f"; {hint}" if hint else ""))


def port_answers(address: str) -> bool:
    """HOST:PORT accepts a TCP connection."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=0.5):
        return True


def wait_for_port(address: str, what: str, deadline: float, *, hint: str = "") -> None:
    """The port first, before any request: the apiserver opens it once RBAC is loaded, and a refused
    connection is cheaper to poll than an API call that times out."""
    wait(lambda: port_answers(address), what, deadline, hint=hint)


# ---------------------------------------------------------------- what a new cluster serves

def dns_manifest(master_address: str | Sequence[str], dns_ip: str = components.DEFAULT_DNS_IP) -> str:
    """kube-dns: a Service at the DNS address whose Endpoints (no selector) name the masters' DNS servers."""
    servers = [master_address] if isinstance(master_address, str) else list(master_address)
    ports = [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
    meta = {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}}
    return yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"clusterIP": dns_ip, "ports": [{**p, "targetPort": 53} for p in ports]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta,
         "subsets": [{"addresses": [{"ip": ip} for ip in servers], "ports": ports}]},
    ], sort_keys=False)


def dns_servers(plan: components.ClusterPlan) -> list[str]:
    """Where the cluster DNS answers: the master's address, or each master's when there are several (the
    virtual IP is the API's alone)."""
    return [n.address for n in plan.nodes if n.control_plane] if plan.ha else [plan.master_address]


def publish(kubeconfig: str | Path, plan: components.ClusterPlan, ca_pem: bytes, *,
            token: bootstrap.Token | None = None, nodes: Sequence[str] = (),
            ttl: dt.timedelta = JOIN_TOKEN_TTL) -> bool:
    """What a new cluster serves: kube-public/cluster-info (what `kctl join` trusts and reads), kube-dns and,
    given one, a bootstrap token (what `kctl token create` makes) for the worker `nodes` only (the CSR
    approver approves no other node's identity with it), created in-process as the admin.

    Idempotent, so callers retry it (phases.wait) while the apiserver warms up.
    """
    info = bootstrap.cluster_info(f"https://{plan.grpc_server}", ca_pem, plan.token_server)
    objects = [info, *(manifest.from_dict(doc) for doc in yaml.safe_load_all(dns_manifest(dns_servers(plan),
                                                                                           plan.dns_ip))),
               default_storage_class()]  # `standard`: local-path, the default (docs/storage.md)
    if token is not None:
        objects.append(bootstrap.token_secret(token, ttl=ttl, node_names=tuple(nodes),
                                              description=f"kctl cluster up: joins the nodes of {plan.name}"))

    async def create() -> None:
        async with clientconfig.load(kubeconfig=str(kubeconfig)).client(timeout=10) as client:
            for namespace in (bootstrap.CLUSTER_INFO_NAMESPACE, bootstrap.TOKEN_NAMESPACE):
                ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
                ns.metadata.name = namespace
                with contextlib.suppress(AlreadyExists):
                    await client.create(ns)
            for obj in objects:
                try:
                    await client.create(obj)
                except AlreadyExists:
                    continue  # there from an earlier `up`
                except Invalid:
                    # An earlier try that timed out here may still have been stored: kube-dns's ClusterIP is
                    # then taken, which the apiserver checks before the name (as Kubernetes' allocator does).
                    meta = obj.metadata  # type: ignore[attr-defined]
                    with contextlib.suppress(NotFound):
                        await client.get(type(obj), meta.name, meta.namespace)
                        continue  # stored by the earlier try
                    raise

    try:
        asyncio.run(create())
    except (ApiError, clientconfig.ConfigError) as err:
        what = "cluster-info, a bootstrap token and kube-dns" if token else "cluster-info and kube-dns"
        raise RuntimeError(f"cannot publish {what}: {err}") from None
    return True


# ---------------------------------------------------------------- joining

@dataclass(frozen=True)
class JoinCommand:
    """`kctl join`'s arguments for a new node: where discovery goes, the bootstrap token, the CA's pin."""

    address: str  # the apiserver's token port, HOST:PORT
    token: str
    ca_hash: str  # sha256:<hex> of the cluster CA's public key

    @classmethod
    def for_plan(cls, plan: components.ClusterPlan, token: bootstrap.Token, ca_pem: bytes) -> JoinCommand:
        return cls(plan.token_server, str(token), certificates.ca_cert_hash(ca_pem))

    def __str__(self) -> str:
        return f"kctl join {self.address} --token {self.token} --discovery-token-ca-cert-hash {self.ca_hash}"


def join_workers(workers: Sequence[str], join: Callable[[str, JoinCommand], None], command: JoinCommand,
                 deadline: float, *, hint: str = "") -> None:
    """kubeadm's join for each worker at once, through the provider's `join`.

    Each is retried until the deadline: right after its Secret is created the apiserver may not know the token
    yet (its authenticator learns tokens from a watch), so the first discovery may be refused.
    """
    def one(node: str) -> None:
        def joined() -> bool:
            join(node, command)
            return True

        wait(joined, f"{node} joining with a bootstrap token", deadline, hint=hint)

    with ThreadPoolExecutor(max_workers=max(1, len(workers))) as pool:
        for future in [pool.submit(one, node) for node in workers]:
            future.result()


def create_join_token(kubeconfig: str | Path, token: bootstrap.Token, nodes: Sequence[str], *, ttl: dt.timedelta,
                      description: str) -> bool:
    """A bootstrap token good for the worker `nodes` only and for `ttl` (`kctl token create --ttl`), created as
    the admin: how a node joins a running cluster. Idempotent, for phases.wait."""
    secret = bootstrap.token_secret(token, ttl=ttl, node_names=tuple(nodes), description=description)

    async def create() -> None:
        async with clientconfig.load(kubeconfig=str(kubeconfig)).client(timeout=10) as client:
            with contextlib.suppress(AlreadyExists):
                await client.create(secret)

    try:
        asyncio.run(create())
    except (ApiError, clientconfig.ConfigError) as err:
        raise RuntimeError(f"cannot create a bootstrap token: {err}") from None
    return True


def join_detail(joined: int) -> str:
    """The join phase's report: how many joined, and how to add another node (never the token itself:
    `up`'s output lands in terminals, logs and CI transcripts, and the token is deleted once used)."""
    return f"{joined} workers joined with a bootstrap token; to add a node: {ADD_NODE_COMMAND}"


def delete_token(kubeconfig: str | Path, token: bootstrap.Token) -> None:
    """Delete `up`'s join token once its workers hold their certificates: nothing may join with it any more."""
    async def delete() -> None:
        async with clientconfig.load(kubeconfig=str(kubeconfig)).client(timeout=10) as client:
            with contextlib.suppress(NotFound):
                await client.delete(core_pb2.Secret, token.secret_name, bootstrap.TOKEN_NAMESPACE)

    try:
        asyncio.run(delete())
    except (ApiError, clientconfig.ConfigError) as err:
        raise RuntimeError(f"cannot delete the join token {token.id}: {err}") from None


def label_node_roles(kubeconfig: str | Path, plan: components.ClusterPlan) -> bool:
    """`node-role.kubernetes.io/<role>` on each planned Node that lacks it, as the admin (kubeadm's
    mark-control-plane): node restriction refuses a kubelet labelling its own role, since the control
    plane's pods select on it. Idempotent, for phases.wait."""
    async def label() -> None:
        async with clientconfig.load(kubeconfig=str(kubeconfig)).client(timeout=10) as client:
            for planned in plan.nodes:
                key = wellknown.LABEL_NODE_ROLE_PREFIX + planned.role
                node = await client.get(core_pb2.Node, planned.name)
                if key not in node.metadata.labels:
                    node.metadata.labels[key] = ""
                    await client.update(node)

    try:
        asyncio.run(label())
    except (ApiError, clientconfig.ConfigError) as err:
        raise RuntimeError(f"cannot label the nodes' roles: {err}") from None
    return True


# ---------------------------------------------------------------- readiness

def registered_nodes(kubeconfig: str | Path) -> list[core_pb2.Node]:
    """Every Node the apiserver knows (read as the admin, over TLS)."""
    async def read() -> list[core_pb2.Node]:
        async with clientconfig.load(kubeconfig=str(kubeconfig)).client(timeout=5) as client:
            return list((await client.list(core_pb2.Node)).items)

    try:
        return asyncio.run(read())
    except (ApiError, clientconfig.ConfigError) as err:
        raise RuntimeError(f"cannot list Nodes: {err}") from None


def node_statuses(kubeconfig: str | Path) -> dict[str, str]:
    """Each registered Node: Ready or NotReady, by its Ready condition."""
    return {node.metadata.name: "Ready" if any(c.type == "Ready" and c.status == "True"
                                               for c in node.status.conditions) else "NotReady"
            for node in registered_nodes(kubeconfig)}


def ready_nodes(kubeconfig: str | Path) -> set[str]:
    return {node for node, status in node_statuses(kubeconfig).items() if status == "Ready"}


def wait_for_nodes_ready(kubeconfig: str | Path, nodes: Collection[str], deadline: float, *, hint: str = "",
                         report: Callable[[str], None] | None = None, interval: float = 0.2) -> None:
    """Until every Node in `nodes` is Ready; `report` hears the count each time it is read."""
    def all_ready() -> bool:
        ready = ready_nodes(kubeconfig) & set(nodes)
        if report is not None:
            report(f"{len(ready)}/{len(nodes)} Nodes Ready")
        return len(ready) == len(set(nodes))

    wait(all_ready, "Nodes Ready", deadline, hint=hint, interval=interval)


# ---------------------------------------------------------------- the admin's kubeconfig

def default_kubeconfig() -> Path:
    """The user's kubeconfig, where `up` merges the cluster's context: `$KCTL_CONFIG`, else `$KUBECONFIG`'s
    first file (as kind), else ~/.kube/config; kubectl and kctl both read it."""
    return clientconfig.write_path()


def point_kctl_at(kubeconfig: Path) -> Path:
    """Merge the cluster's admin kubeconfig (its cluster, user and context, all `flotilla-<name>`) into the
    user's kubeconfig and make its context current, as `kind create cluster` does; the file's other clusters,
    contexts and preferences stay, and it stays 0600 (it holds a private key). Returns the file."""
    default = default_kubeconfig()
    if default.exists() and default.samefile(kubeconfig):  # $KCTL_CONFIG may name the cluster's own copy
        return default
    clientconfig.merge(default, clientconfig.read(kubeconfig))
    return default


def forget_default_config(cluster: str, kubeconfig: Path) -> None:
    """Take the cluster's entries out of the user's kubeconfig, and unset current-context if it was this
    cluster's (as `kind delete cluster`): left behind, every later kctl or kubectl call would dial a cluster
    that is gone. A legacy ~/.kctl/config that is still this cluster's copy goes too."""
    default = default_kubeconfig()
    ours = kubeconfig.exists() and default.exists() and default.samefile(kubeconfig)
    # A kubeconfig down cannot parse is the user's to mend: down's job is the cluster, not to stop half-way.
    with contextlib.suppress(OSError, clientconfig.ConfigError):
        if not ours:
            clientconfig.remove(default, components.context_name(cluster))
    legacy = clientconfig.legacy_path()
    with contextlib.suppress(OSError):
        if legacy.read_bytes() == kubeconfig.read_bytes():
            legacy.unlink()
