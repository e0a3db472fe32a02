"""Pod networking: the CNI configuration containerd reads for every sandbox.

containerd's CRI plugin calls the CNI plugins itself when it runs a sandbox; the
kubelet's job is only to say how, by writing a conflist into the CNI config
directory once it knows the node's pod CIDR: a bridge on the node (the pods'
default gateway), host-local IP allocation from the pod CIDR, portmap for
containers' hostPorts, and loopback.
Until the file exists containerd reports NetworkReady=false and sandboxes fail,
which is why the node is NotReady until then.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

CONFLIST_NAME = "10-flotilla.conflist"


def conflist(*, network: str, bridge: str, pod_cidr: str, data_dir: str) -> dict[str, object]:
    """The CNI network config for a node whose pods get addresses from `pod_cidr`."""
    ipaddress.ip_network(pod_cidr)  # refuse garbage before containerd does, with a clearer message
    return {
        "cniVersion": "0.4.0",
        "name": network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                # The bridge holds the gateway address, and pods route everything through it:
                # without isDefaultGateway nothing off the pod subnet reaches them.
                "isGateway": True,
                "isDefaultGateway": True,
                # Pod source addresses must survive across nodes; egress NAT belongs to the proxy.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    # Per node, so nodes sharing a machine do not hand out each other's addresses.
                    "dataDir": data_dir,
                },
            },
            {
                # hostPort: containerd passes the sandbox's PortMappings as runtimeConfig.portMappings
                # to plugins that declare the capability; portmap DNATs <node>:hostPort to the pod
                # (iptables nat chains CNI-HOSTPORT-*, one CNI-DN-* chain per pod, removed on DEL).
                "type": "portmap",
                "capabilities": {"portMappings": True},
                # Masquerade hairpin and localhost-originated connections, so a node reaching
                # its own hostPort (127.0.0.1 included) gets the answer back through the NAT.
                "snat": True,
            },
            {"type": "loopback"},
        ],
    }


def write_conflist(conf_dir: str | Path, config: dict[str, object]) -> bool:
    """Write the conflist atomically if it changed (containerd reloads on change); True if written."""
    path = Path(conf_dir) / CONFLIST_NAME
    text = json.dumps(config, indent=2) + "\n"
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def current_pod_cidr(conf_dir: str | Path) -> str:
    """The pod CIDR the node's conflist was written for, or ""."""
    try:
        config = json.loads((Path(conf_dir) / CONFLIST_NAME).read_text())
        return str(config["plugins"][0]["ipam"]["ranges"][0][0]["subnet"])
    except (OSError, ValueError, LookupError, TypeError):
        return ""
