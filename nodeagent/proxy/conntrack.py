"""Conntrack clean-up: forget the UDP flows of endpoints that went away (kube-proxy's conntrack.go).

The nat chains see only a connection's first packet; after that the kernel's
connection tracking sends every packet of the flow to the endpoint picked
then. For TCP that ends when the endpoint dies (resets, timeouts, the client
reconnects). UDP has no end: a client that keeps sending from the same port —
a resolver talking to cluster DNS, say — keeps hitting the dead endpoint's
address for as long as the entry is refreshed, i.e. forever. So when a UDP
Service port loses an endpoint, its flows to that endpoint are deleted
(`conntrack -D`), and the client's next datagram is DNATed afresh.

`stale_flows` is the pure decision (old and new ServicePorts in, filters out);
`delete` runs the `conntrack` tool (Debian `conntrack`), in the node's network
namespace when the proxy programs one.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from nodeagent.proxy.rules import ServicePort

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StaleFlow:
    """UDP flows a client sent to `address`:`port` (any local address when `address` is "": a NodePort)
    that were DNATed to `endpoint_ip`."""

    endpoint_ip: str
    address: str
    port: int

    def argv(self) -> list[str]:
        where = ["--orig-dst", self.address] if self.address else []
        return ["conntrack", "-D", "-p", "udp", *where, "--orig-port-dst", str(self.port),
                "--dst-nat", self.endpoint_ip]


def stale_flows(old: Iterable[ServicePort], new: Iterable[ServicePort]) -> list[StaleFlow]:
    """The flows to forget when a Service's ports go from `old` to `new` (removed UDP endpoints only)."""
    current = {sp.id: {ep.ip for ep in sp.endpoints} for sp in new}
    flows: list[StaleFlow] = []
    for sp in old:
        if sp.protocol != "udp":
            continue  # TCP and SCTP flows end by themselves when the endpoint goes
        for ip in sorted({ep.ip for ep in sp.endpoints} - current.get(sp.id, set())):
            flows += [StaleFlow(ip, address, sp.port) for address in (sp.cluster_ip, *sp.external_ips)]
            if sp.node_port:
                flows.append(StaleFlow(ip, "", sp.node_port))
    return flows


class ConntrackCleaner:
    def __init__(self, *, netns: str | None = None) -> None:
        self.netns = netns
        self.available = shutil.which("conntrack") is not None
        self._warned = False

    async def delete(self, flows: Iterable[StaleFlow]) -> int:
        """Delete each flow's entries; the number of `conntrack -D` runs that failed (0: all done)."""
        flows = list(flows)
        if not flows:
            return 0
        if not self.available:
            if not self._warned:
                self._warned = True
                log.warning("conntrack is not installed: UDP clients of a removed endpoint keep sending to it "
                            "until their flow times out (apt-get install conntrack)")
            return len(flows)
        failed = 0
        for flow in flows:
            argv = [*(["ip", "netns", "exec", self.netns] if self.netns else []), *flow.argv()]
            proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, err = await proc.communicate()
            # Exit 1 with "0 flow entries have been deleted" is the common case: no client had a flow.
            if proc.returncode not in (0, 1) or (proc.returncode == 1 and b"0 flow entries" not in err):
                failed += 1
                log.warning("%s: %s", " ".join(flow.argv()), err.decode(errors="replace").strip())
        return failed
