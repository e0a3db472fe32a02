"""The Vagrant provider: the SSH provider with its inventory read from Vagrant.

`vagrant up` ends by running `python -m provision vagrant bootstrap` on the
host (a trigger in the Vagrantfile). It calls `vagrant ssh-config` once
through python-vagrant (every python-vagrant call runs the vagrant CLI, ~3 s),
opens one Fabric connection per machine, asks each machine its hostname (the
Node's name) and its private-network address (the Node's InternalIP — never
eth0's NAT 10.0.2.15, which every VM has), and hands the machines to the same
bootstrap as the SSH provider. The Vagrantfile stays the one place where names
and addresses are decided.

Roles follow the machines' names: `master` (FLOTILLA_MASTERS=1, the book's
layout) or `master1`..`masterN` (several) are masters, the rest workers. With
several masters the API's virtual IP is the Vagrantfile's convention, read
here rather than passed along: host .10 of the masters' network (where the
single master sits otherwise, so the book's master address stays the API's),
the masters at .11, .12, ... (`api_vip`). `status` and `down`, which run
without the Vagrantfile's environment, find the same address.

libvirt brings the machines up in parallel and the trigger fires when the last
one is up, so the bootstrap first waits until every machine answers on SSH.
`VagrantProvider` is the SSH provider with that inventory (so `kctl cluster up
--provider vagrant` works too); the trigger's `bootstrap` reports with plain
lines (its output is piped) and ends with the same summary as kctl's.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import time
from pathlib import Path

from paramiko import SSHConfig, SSHException
from rich.console import Console

from provision import phases, ssh
from provision.bootstrap.host import BootstrapError, Host
from provision.progress import LineProgress, show, summary
from provision.provider import Cluster, Options, ProvisionError

PRIVATE_INTERFACE = "eth1"  # eth0 is Vagrant's management (NAT) network
API_VIP_HOST = 10  # several masters: the API's virtual IP is .10 of their network (the Vagrantfile's convention)
MASTER_MACHINE = re.compile(r"master\d*")
SSH_TIMEOUT = 1200.0
CLUSTER_NAME = "vagrant"

console = Console(stderr=True)


def ssh_settings(root: str, timeout: float = SSH_TIMEOUT) -> dict[str, dict[str, str]]:
    """`vagrant ssh-config` for every machine, parsed (waits while some machine is not up yet)."""
    import vagrant

    v = vagrant.Vagrant(root, quiet_stderr=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = v.ssh_config()
            break
        except subprocess.CalledProcessError as err:  # some machine is not created or not running yet
            if time.monotonic() > deadline:
                raise ProvisionError(f"vagrant ssh-config failed for {timeout:.0f}s: {err}") from err
            time.sleep(5)
    config = SSHConfig.from_text(text)
    names = sorted(h for h in config.get_hostnames() if h != "*")
    if not names:
        raise ProvisionError(f"vagrant ssh-config in {root} lists no machine: is the Vagrantfile there?")
    return {name: dict(config.lookup(name)) for name in names}


def inventory(root: str) -> ssh.Inventory:
    """Each Vagrant machine as an inventory host: its SSH settings, hostname and private address."""
    hosts = []
    for machine, settings in ssh_settings(root).items():
        key = settings.get("identityfile", [""])
        key_file = key[0] if isinstance(key, list) else str(key)
        entry = ssh.InventoryHost(machine, "", settings["user"], key_file, "worker", settings["hostname"],
                                  int(settings.get("port", 22)))
        conn = entry.connection()
        host = Host(machine, conn, sudo=True)
        deadline = time.monotonic() + SSH_TIMEOUT
        while True:
            try:
                out = host.run(f"hostname; ip -4 -o addr show dev {PRIVATE_INTERFACE}")
                lines = out.split("\n")
                words = " ".join(lines[1:]).split()
                if "inet" in words:
                    break
                # Up, but Vagrant has not configured its private network yet: the machines come up in
                # parallel, and the trigger fires when the last *defined* one is up, not the last to finish.
                err: Exception = BootstrapError(f"{PRIVATE_INTERFACE} has no IPv4 address yet (private_network "
                                                "in the Vagrantfile?)")
            except (OSError, SSHException, BootstrapError) as failed:  # SSH not up yet, or eth1 not there yet
                err = failed
            if time.monotonic() > deadline:
                raise ProvisionError(f"{machine}: no SSH or no {PRIVATE_INTERFACE} address: {err}") from err
            time.sleep(5)
        hostname = lines[0].strip()
        address = words[words.index("inet") + 1].split("/")[0]
        hosts.append(ssh.InventoryHost(hostname, address, entry.user, key_file, role(machine), entry.ssh_host,
                                       entry.port))
        conn.close()
    return ssh.Inventory(CLUSTER_NAME, tuple(hosts), api_vip=api_vip(hosts)).check(f"Vagrantfile in {root}")


def role(machine: str) -> str:
    """A Vagrant machine's role by its name: `master` or `master<N>` is a master, anything else a worker."""
    return "master" if MASTER_MACHINE.fullmatch(machine) else "worker"


def api_vip(hosts: list[ssh.InventoryHost]) -> str:
    """The API's virtual IP for these machines: none for one master, else .10 of the masters' /24."""
    masters = [h.address for h in hosts if h.role == "master"]
    if len(masters) < 2:
        return ""
    return str(ipaddress.IPv4Network(f"{masters[0]}/24", strict=False)[API_VIP_HOST])


def ssh_hint(inventory: ssh.Inventory) -> str:
    """How to reach kctl on a master: `vagrant ssh master`, or `master1` when there are several."""
    machine = "master1" if inventory.api_vip else "master"
    return f"vagrant ssh {machine} -c 'kctl get nodes'"


class VagrantProvider(ssh.SSHProvider):
    """The SSH provider, its inventory read from the Vagrantfile's machines (Options.vagrant_root)."""

    kind = "vagrant"

    def inventory(self) -> ssh.Inventory:
        if self._inventory is None:
            self._inventory = inventory(str(Path(self.options.vagrant_root).resolve()))
        return self._inventory

    def down_command(self) -> str:
        # Vagrant knows master1..N only while FLOTILLA_MASTERS says so: without it `destroy` would leave them.
        masters = sum(h.role == "master" for h in self.inventory().hosts)
        env = f"FLOTILLA_MASTERS={masters} " if masters > 1 else ""
        return f"{env}python -m provision vagrant down; {env}vagrant destroy -f"

    def clusters(self) -> list[str]:
        return [name for name in super().clusters() if name == CLUSTER_NAME]


def bootstrap(root: str) -> Cluster:
    """What `vagrant up`'s trigger runs: every VM answers on SSH, then the SSH provider's `up`."""
    started = time.monotonic()
    provider = VagrantProvider(Options(CLUSTER_NAME, vagrant_root=root))
    progress = LineProgress()
    try:
        inv = provider.inventory()
        console.print(f"vagrant: {len(inv.hosts)} machines answer on SSH "
                      f"({time.monotonic() - started:.0f}s): "
                      + ", ".join(f"{h.name} {h.address}" for h in inv.hosts))
        made = provider.up(progress)
    except BaseException:
        progress.failed()
        raise
    show(console, summary(made, phases.node_statuses(made.kubeconfig), time.monotonic() - started))
    console.print(f"  {ssh_hint(inv)}")
    return made


def teardown(root: str) -> None:
    VagrantProvider(Options(CLUSTER_NAME, vagrant_root=root)).down()
