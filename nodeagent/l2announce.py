"""Layer-2 address announcing: put an address on this node's interface and tell the segment at once.

What a node does to answer for an address that can move between nodes (a
LoadBalancer Service's, nodeagent/proxy/announcer.py, or the API's virtual IP,
nodeagent/apivip): it holds the address as a /32 on the interface of its
InternalIP, so its kernel answers ARP for it, and sends a gratuitous ARP
(`arping -U`), so neighbours replace a cached MAC at once rather than after the
~45 s their cache would keep the previous holder's. Withdrawing removes the /32.
Which node holds an address is decided elsewhere (a Lease); this module only
does the holding.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess

log = logging.getLogger(__name__)


def ip(args: list[str], netns: str | None = None) -> subprocess.CompletedProcess[str]:
    """`ip [-n NETNS] ARGS`, never raising: callers read the return code when they care."""
    return subprocess.run(["ip", *(["-n", netns] if netns else []), *args], capture_output=True, text=True,
                          check=False)


def interface_of(address: str, *, netns: str | None = None) -> str:
    """The interface holding `address` (the node's InternalIP): where announced addresses go."""
    out = ip(["-o", "-4", "addr", "show"], netns).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3].split("/")[0] == address:
            return fields[1]
    raise LookupError(f"no interface holds {address}")


class L2Speaker:
    """Holds addresses on one interface (of one network namespace) and announces them."""

    def __init__(self, interface: str, *, netns: str | None = None) -> None:
        self.interface = interface
        self.netns = netns
        self._arping = shutil.which("arping")
        self._background: set[asyncio.Task[None]] = set()

    def hold(self, address: str) -> None:
        """The /32 on the interface (kept if there already), then a gratuitous ARP in the background."""
        done = ip(["addr", "replace", f"{address}/32", "dev", self.interface], self.netns)
        if done.returncode != 0:
            log.error("could not put %s on %s: %s", address, self.interface, done.stderr.strip())
        self._gratuitous_arp(address)

    def withdraw(self, address: str) -> None:
        ip(["addr", "del", f"{address}/32", "dev", self.interface], self.netns)

    def holds(self, address: str) -> bool:
        return f" {address}/32 " in ip(["-o", "-4", "addr", "show", "dev", self.interface], self.netns).stdout

    def _gratuitous_arp(self, address: str) -> None:
        if self._arping is None:
            log.warning("arping not installed (iputils-arping): neighbours learn %s only when their cache expires",
                        address)
            return
        argv = [*(["ip", "netns", "exec", self.netns] if self.netns else []),
                self._arping, "-U", "-c", "1", "-I", self.interface, address]

        async def send() -> None:
            # arping blocks about a second: in the background, never in the caller's way.
            proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await proc.wait()

        task = asyncio.get_running_loop().create_task(send())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
