"""The Provider protocol: one contract for every way Flotilla makes a cluster.

As kind has one `Provider` interface for docker and podman, and Cluster API one
contract per infrastructure, every provider here answers the same five verbs:

    plan    what the cluster will be (a components.ClusterPlan), touching nothing
    up      make it: machines or namespaces, certificates, control plane, the
            workers' join, until every Node is Ready; report each phase as it goes
    join    one worker joins with a bootstrap token (`kubeadm join`); up calls it
            through phases.join_workers, which retries it and runs the workers at once
    down    remove what up made; False when there was no such cluster
    status  each component (daemon or systemd unit): running or not

Providers that can change a running cluster's workers also answer `Workers`
(add_workers, remove_worker: `kctl cluster add-worker|remove-worker`); `workers()`
returns that side of a provider, or says why it has none.

    local    network namespaces on a bridge of this machine (provision/local.py)
    ssh      existing machines from an inventory file (provision/ssh.py)
    vagrant  the SSH provider with its inventory read from `vagrant ssh-config`

What every provider does the same way — waiting with a deadline, publishing
cluster-info and a bootstrap token, joining, reading Node readiness from the
API, placing the kubeconfig — is written once in provision/phases.py; the
report a person reads (phases, summary) in provision/progress.py. `kctl
cluster` holds no provider-specific code: it looks the provider up here by name.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from provision import components

if TYPE_CHECKING:
    from collections.abc import Callable

    from provision.phases import JoinCommand
    from provision.progress import Progress


class ProvisionError(RuntimeError):
    """A cluster could not be made, joined or removed (the message says where and why)."""


def offline_default() -> bool:
    """Whether clusters are air-gapped unless told otherwise: $FLOTILLA_OFFLINE=1 (the test suite sets it, so
    no test cluster ever pulls from a public registry); online otherwise."""
    return os.environ.get("FLOTILLA_OFFLINE", "") not in ("", "0", "false", "no")


@dataclass(frozen=True)
class Options:
    """What `kctl cluster` was told; each provider reads the fields that concern it."""

    name: str = "flotilla"
    # local: the nodes' network on this machine (the master is the bridge's .1, workers .101, .102, ...)
    workers: int = 2
    # local: control-plane nodes; more than one makes each a network namespace with an etcd member, its own
    # apiserver and the rest, behind one API virtual IP (provision/localha.py)
    masters: int = 1
    api_vip: str = ""  # local, --masters > 1: the API's address ("": the subnet's last usable one)
    subnet: str = "192.168.56.0/24"
    bridge: str = "flt0"
    pod_network: str = "10.244.0.0/16"
    api_port: int = 6443  # client certificates; bearer tokens on the next port
    etcd_port: int = 12379  # not 2379: a distribution's own etcd may already hold that
    # ssh: the inventory file; vagrant: the folder holding the Vagrantfile
    inventory: str = ""
    vagrant_root: str = "."
    write_default_config: bool = True
    # Air-gapped: nodes pull only from the cluster registry (docker.io names included), never from Docker Hub.
    offline: bool = field(default_factory=offline_default)


def home() -> Path:
    """Where this machine keeps what it knows of clusters ($FLOTILLA_HOME, else ~/.flotilla)."""
    return Path(os.environ.get("FLOTILLA_HOME", Path.home() / ".flotilla"))


def cluster_dir(name: str) -> Path:
    """One cluster's folder here: its kubeconfig and logs (local), its PKI bundle (ssh, vagrant)."""
    return home() / "clusters" / name


@dataclass(frozen=True)
class Cluster:
    """What `up` made: enough to use it, and to tell the user how (progress.summary)."""

    name: str
    provider: str
    api_server: str  # HOST:PORT of the Kubernetes API (HTTPS, kubectl's); kctl's gRPC ports are in the kubeconfig
    kubeconfig: Path  # the admin's
    nodes: tuple[components.NodePlan, ...]
    logs: str  # where the daemons' logs are
    down_command: str  # what removes it again
    timings: dict[str, float] = field(default_factory=dict)


class Provider(Protocol):
    """One way of making clusters, for one cluster (its name and options given when it is made)."""

    kind: str  # "local", "ssh", "vagrant": the name `kctl cluster --provider` takes

    @property
    def name(self) -> str:
        """The cluster's name (an SSH provider's comes from its inventory)."""
        ...

    def plan(self) -> components.ClusterPlan:
        """The cluster `up` would make; no side effects (an SSH provider may read its inventory)."""
        ...

    def up(self, progress: Progress) -> Cluster:
        """Make the cluster (or leave a running one as it is) and return once every Node is Ready.

        On failure the provider undoes what it can and raises ProvisionError (or the error that stopped it).
        """
        ...

    def join(self, node: str, command: JoinCommand) -> None:
        """Join the worker `node` with `command`'s bootstrap token; raising means "not yet" (retried)."""
        ...

    def down(self) -> bool:
        """Remove everything `up` made; False if there was nothing to remove."""
        ...

    def status(self) -> dict[str, bool]:
        """Each component, running or not; empty when there is no such cluster."""
        ...

    def clusters(self) -> list[str]:
        """The names of this provider's clusters known on this machine."""
        ...


@runtime_checkable
class Workers(Protocol):
    """A provider that adds workers to its running cluster and takes them out again (the local one: its nodes are
    namespaces it makes; machines of an inventory are the user's to bring)."""

    def add_workers(self, count: int, progress: Progress) -> Cluster:
        """`count` new workers joined with a fresh bootstrap token, returned once they are Ready."""
        ...

    def remove_worker(self, node: str, progress: Progress, drain: Callable[[Path, str], None]) -> Cluster:
        """Take the worker `node` out: `drain(admin kubeconfig, node)` first (cordon and evict, which may wait on
        PodDisruptionBudgets), then its Node deleted and its machine cleaned. Refuses the control plane."""
        ...


# What to do instead, for the providers without `Workers`.
WORKERS_BY_HAND = {
    "add": "put the machine in the inventory and run `kctl cluster up` with it again (machines that joined "
           "before are left as they are)",
    "remove": "kctl drain NODE --ignore-daemonsets --delete-emptydir-data --force, kctl delete node NODE, then "
              "stop its flotilla-* units on the machine",
}


def workers(chosen: Provider, verb: str) -> Workers:
    """`chosen` as a provider of worker changes; ProvisionError saying what to do instead when it is not one."""
    if isinstance(chosen, Workers):
        return chosen
    raise ProvisionError(f"{verb}-worker is not supported by the {chosen.kind} provider (only by local): "
                         f"{WORKERS_BY_HAND[verb]}")


# Module and class of each provider, imported on first use: the SSH providers pull in Fabric and paramiko,
# which `kctl cluster up` on the local provider never needs.
PROVIDERS: dict[str, tuple[str, str]] = {
    "local": ("provision.local", "LocalProvider"),
    "ssh": ("provision.ssh", "SSHProvider"),
    "vagrant": ("provision.vagrant", "VagrantProvider"),
}


def provider(kind: str, options: Options) -> Provider:
    """The provider named `kind`, for the cluster `options` describe."""
    try:
        module, cls = PROVIDERS[kind]
    except KeyError:
        raise ProvisionError(f"no provider {kind!r} (one of {', '.join(PROVIDERS)})") from None
    made: Provider = getattr(importlib.import_module(module), cls)(options)
    return made
