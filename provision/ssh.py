"""The SSH provider: `kctl cluster up --provider ssh --inventory hosts.yaml` on existing machines.

The inventory names each machine, how to reach it and what it becomes:

    name: lab                       # cluster name (default: flotilla)
    pod_network: 10.244.0.0/16      # optional
    lb_pool: 192.168.60.200-192.168.60.250   # optional: LoadBalancer addresses
    offline: true                   # optional: air-gapped (as --offline): images only from the cluster registry
    api_vip: 192.168.60.10          # several masters: the API's virtual IP (a free address of their /24)
    hosts:
      - name: m1-k8s                # the Node's name
        address: 192.168.60.11      # its InternalIP (and where SSH goes unless ssh_host is set)
        user: debian
        key_file: ~/.ssh/id_ed25519
        role: master                # 1, 3, 5 or 7 masters; the others are workers
      - {name: m2-k8s, address: 192.168.60.12, user: debian, key_file: ~/.ssh/id_ed25519, role: master}
      - {name: m3-k8s, address: 192.168.60.13, user: debian, key_file: ~/.ssh/id_ed25519, role: master}
      - {name: w1-k8s, address: 192.168.60.101, user: debian, key_file: ~/.ssh/id_ed25519, role: worker}

With one master there is no `api_vip`: the API is at the master's address.
With several, each master runs an etcd member and the whole control plane,
and one at a time holds `api_vip` (docs/provisioning.md, "Several masters on
SSH and Vagrant machines"); the first master listed also runs the image
registry and the NFS export.

Each machine gets one fabric.Connection and the bootstrap of
provision/bootstrap/ (commands run with `sudo -n` unless the user is root).
`SSHProvider` is the Provider (provision/provider.py) over it: `up` bootstraps
the machines, `join` runs `kctl join` on a worker, `down` removes what `up`
installed, `status` asks each machine's systemd. The Vagrant provider is this
provider with the inventory read from `vagrant ssh-config` (provision/vagrant.py).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from provision import components, phases
from provision.bootstrap import cluster
from provision.bootstrap.host import BootstrapError, Host
from provision.progress import Progress
from provision.provider import Cluster, Options, ProvisionError, home

ROLES = ("master", "worker")


class InventoryError(ProvisionError, ValueError):
    """The inventory file is malformed (the message names the host and the field)."""


@dataclass(frozen=True)
class InventoryHost:
    name: str
    address: str
    user: str
    key_file: str
    role: str
    ssh_host: str = ""
    port: int = 22

    def connection(self) -> Any:
        from fabric import Connection

        # Vagrant boxes and fresh machines have unknown host keys; the inventory is the trust decision.
        return Connection(self.ssh_host or self.address, user=self.user, port=self.port,
                          connect_kwargs={"key_filename": [str(Path(self.key_file).expanduser())],
                                          "look_for_keys": False, "allow_agent": False, "banner_timeout": 60},
                          connect_timeout=60)


@dataclass(frozen=True)
class Inventory:
    name: str
    hosts: tuple[InventoryHost, ...]
    pod_network: str = cluster.DEFAULT_POD_NETWORK
    lb_pool: str = ""
    offline: bool = False
    api_vip: str = ""  # several masters: the API's virtual IP

    def check(self, source: str = "inventory") -> Inventory:
        """This inventory, if its masters and API address make a cluster (else InventoryError from `source`)."""
        try:
            cluster.check_masters([h.address for h in self.hosts if h.role == "master"], self.api_vip,
                                  [h.address for h in self.hosts])
        except BootstrapError as err:
            raise InventoryError(f"{source}: {err}") from None
        pool = self.lb_pool or default_lb_pool(self)
        if self.api_vip and _in_range(self.api_vip, pool):
            raise InventoryError(f"{source}: api_vip {self.api_vip} is in the LoadBalancer pool {pool}: Services "
                                 "would be handed the API's address")
        return self


def _in_range(address: str, pool: str) -> bool:
    """Whether `address` is in a FIRST-LAST address range (an unparsable pool is the controller's to refuse)."""
    first, _, last = pool.partition("-")
    try:
        return ipaddress.IPv4Address(first) <= ipaddress.IPv4Address(address) <= ipaddress.IPv4Address(last)
    except ValueError:
        return False


def parse_inventory(data: Any, *, source: str = "inventory") -> Inventory:
    if not isinstance(data, dict) or not isinstance(data.get("hosts"), list) or not data["hosts"]:
        raise InventoryError(f"{source}: needs a non-empty `hosts:` list")
    hosts = []
    for i, entry in enumerate(data["hosts"]):
        where = f"{source}: hosts[{i}]"
        if not isinstance(entry, dict):
            raise InventoryError(f"{where}: must be a mapping")
        missing = [k for k in ("name", "address", "user", "key_file", "role") if not entry.get(k)]
        if missing:
            raise InventoryError(f"{where} ({entry.get('name', '?')}): missing {', '.join(missing)}")
        if entry["role"] not in ROLES:
            raise InventoryError(f"{where} ({entry['name']}): role must be master or worker, not {entry['role']!r}")
        try:
            ipaddress.ip_address(entry["address"])
        except ValueError:
            raise InventoryError(f"{where} ({entry['name']}): address {entry['address']!r} is not an IP "
                                 "address (it becomes the Node's InternalIP)") from None
        unknown = set(entry) - {"name", "address", "user", "key_file", "role", "ssh_host", "port"}
        if unknown:
            raise InventoryError(f"{where} ({entry['name']}): unknown field(s) {', '.join(sorted(unknown))}")
        hosts.append(InventoryHost(str(entry["name"]), str(entry["address"]), str(entry["user"]),
                                   str(entry["key_file"]), str(entry["role"]), str(entry.get("ssh_host", "")),
                                   int(entry.get("port", 22))))
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise InventoryError(f"{source}: host names must be unique")
    unknown = set(data) - {"name", "pod_network", "lb_pool", "offline", "api_vip", "hosts"}
    if unknown:
        raise InventoryError(f"{source}: unknown field(s) {', '.join(sorted(unknown))}")
    return Inventory(str(data.get("name", "flotilla")), tuple(hosts),
                     str(data.get("pod_network", cluster.DEFAULT_POD_NETWORK)), str(data.get("lb_pool", "")),
                     bool(data.get("offline", False)), str(data.get("api_vip") or "")).check(source)


def load_inventory(path: str | Path) -> Inventory:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise InventoryError(f"inventory {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise InventoryError(f"inventory {path}: not YAML: {err}") from None
    return parse_inventory(data, source=str(path))


def machines(inventory: Inventory) -> list[cluster.Machine]:
    return [cluster.Machine(Host(h.name, h.connection(), sudo=h.user != "root"), h.name, h.address, h.role)
            for h in inventory.hosts]


def default_lb_pool(inventory: Inventory) -> str:
    """.200-.250 of the master's /24: LoadBalancer addresses the nodes' network already reaches."""
    master = next(h for h in inventory.hosts if h.role == "master")
    prefix = master.address.rsplit(".", 1)[0]
    return f"{prefix}.200-{prefix}.250"


class SSHProvider:
    """The Provider of clusters on existing machines, reached over SSH as an inventory file says."""

    kind = "ssh"

    def __init__(self, options: Options) -> None:
        self.options = options
        self._inventory: Inventory | None = None
        self._machines: list[cluster.Machine] | None = None

    @property
    def name(self) -> str:
        return self.inventory().name

    def inventory(self) -> Inventory:
        if self._inventory is None:
            if not self.options.inventory:
                raise ProvisionError("--provider ssh needs --inventory hosts.yaml")
            self._inventory = load_inventory(self.options.inventory)
        return self._inventory

    def machines(self) -> list[cluster.Machine]:
        """One per inventory host; Fabric connects on the first command, not here."""
        if self._machines is None:
            self._machines = machines(self.inventory())
        return self._machines

    def down_command(self) -> str:
        return f"kctl cluster down --provider ssh --inventory {self.options.inventory}"

    def plan(self) -> components.ClusterPlan:
        inv = self.inventory()
        return cluster.make_plan(inv.name, self.machines(), pod_network=inv.pod_network,
                                 lb_pool=inv.lb_pool or default_lb_pool(inv), offline=self.offline,
                                 api_vip=inv.api_vip)

    @property
    def offline(self) -> bool:
        """Air-gapped when `--offline` (or $FLOTILLA_OFFLINE) or the inventory's `offline: true` says so."""
        return self.options.offline or self.inventory().offline

    def up(self, progress: Progress) -> Cluster:
        inv = self.inventory()
        return cluster.up(inv.name, self.machines(), pod_network=inv.pod_network,
                          lb_pool=inv.lb_pool or default_lb_pool(inv), progress=progress, kind=self.kind,
                          down_command=self.down_command(), write_default_config=self.options.write_default_config,
                          offline=self.offline, api_vip=inv.api_vip)

    def join(self, node: str, command: phases.JoinCommand) -> None:
        cluster.join(next(m for m in self.machines() if m.node == node), command)

    def down(self) -> bool:
        cluster.down(self.inventory().name, self.machines(), api_vip=self.inventory().api_vip)
        return True

    def status(self) -> dict[str, bool]:
        return cluster.status(self.plan(), self.machines())

    def clusters(self) -> list[str]:
        """Clusters bootstrapped from this machine: those whose PKI bundle is kept here."""
        root = home() / "clusters"
        return sorted(p.name for p in root.iterdir() if (p / "bundle").is_dir()) if root.exists() else []
