"""`flotilla-api-vip`: one master at a time answers for the API's virtual IP (kube-vip's ARP mode).

A cluster with several masters gives every client one address for the API:
kubeconfigs, certificates and the nodes name the virtual IP, and one master
holds it on its interface (nodeagent/l2announce.py: a /32 and a gratuitous
ARP). Every master runs this daemon beside its apiserver; each contends for
the Lease kube-system/flotilla-api-vip through its *own* master's apiserver
(`--server` is the master's address, not the VIP), so a master holds the VIP
only while its apiserver answers and its etcd member is in the quorum (the
Lease write needs both). The holder renews every retry period; if its
apiserver dies, its etcd member loses the quorum or the whole master stops,
its renewals stop: it withdraws the address once it has not renewed for the
renew deadline, and another master takes the Lease after the lease duration
and announces the address (sub-second for the neighbours, by the gratuitous
ARP). The timings are short (2.5 s lease, 2 s renew deadline, 0.4 s retry): the API is back at the
VIP a few seconds after its holder is lost, where the scheduler's and
controller manager's 15 s Leases guard against acting twice, not against
downtime.

Without an etcd quorum no master can write the Lease, so none would hold the
VIP and clients would only see timeouts. A master that is not leading holds
it as the *last resort* while its own apiserver answers and none of the other
masters' (`--peer`) does: it is then the only control plane a client can
reach at all, and its apiserver answers every write with a clear 504 ("etcd
has no quorum") instead of silence. It lets go as soon as a peer answers again
(the election decides once more). A master that merely cannot see its peers
while they still form a quorum (a partial partition of the node network)
would contend with their holder for the VIP; on the local provider's single
bridge a master that sees no peer is cut off from the segment altogether.

    flotilla-api-vip --kubeconfig proxy.conf --server 192.168.56.11:6445 \\
        --node-name c-master-1 --node-ip 192.168.56.11 --vip 192.168.56.254

Runs inside the master's network namespace, as root (it changes addresses).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging

from client import Client
from client.component import Command, parse_duration
from client.leaderelection import LeaderElectionConfig, LeaderElector
from nodeagent.l2announce import L2Speaker, interface_of

log = logging.getLogger("flotilla.apivip")


def ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node-name", required=True, help="this master's Node name: its identity in the Lease")
    parser.add_argument("--node-ip", required=True, type=ipv4, help="this master's address: the VIP goes on its "
                        "interface")
    parser.add_argument("--vip", required=True, type=ipv4, help="the API's virtual IP")
    parser.add_argument("--peer", action="append", default=[], type=ipv4, metavar="ADDRESS",
                        help="another master's address (repeatable): the last resort holds the VIP only while "
                        "none of their apiservers answers")
    parser.add_argument("--lease", default="flotilla-api-vip", help="the kube-system Lease the masters contend for")
    parser.add_argument("--lease-duration", type=parse_duration, default=2.5,
                        help="how long a silent holder keeps the VIP before another master takes it")
    parser.add_argument("--renew-deadline", type=parse_duration, default=2.0,
                        help="how long the holder tries to renew before it withdraws the VIP")
    parser.add_argument("--retry-period", type=parse_duration, default=0.4, help="between renewals")


COMMAND = Command("flotilla-api-vip", __doc__, flags=add_flags, errors=(LookupError,))


async def run(opts: argparse.Namespace, client: Client) -> None:
    if not opts.renew_deadline < opts.lease_duration:
        raise SystemExit("flotilla-api-vip: --renew-deadline must be shorter than --lease-duration (the holder "
                         "must let go before another may take over)")
    # A call that hangs (a frozen etcd) must not hold the election loop past its deadline.
    client.timeout = opts.retry_period * 2
    speaker = L2Speaker(interface_of(opts.node_ip))
    # Left by a copy that was killed: not ours until the Lease says so.
    speaker.withdraw(opts.vip)
    elector = LeaderElector(client, LeaderElectionConfig(
        name=opts.lease, identity=opts.node_name, lease_duration=opts.lease_duration,
        renew_deadline=opts.renew_deadline, retry_period=opts.retry_period))

    leading = asyncio.Event()

    async def announce() -> None:
        leading.set()
        try:
            speaker.hold(opts.vip)
            log.info("%s: announcing the API at %s on %s", opts.node_name, opts.vip, speaker.interface)
            while True:
                # The address is the Lease's promise: should anything have taken it off the interface
                # meanwhile, the holder puts it back (a leader without the VIP blocks every other master).
                await asyncio.sleep(opts.retry_period)
                if not speaker.holds(opts.vip):
                    log.warning("%s: %s was gone from %s while leading: announcing it again", opts.node_name,
                                opts.vip, speaker.interface)
                    speaker.hold(opts.vip)
        finally:
            leading.clear()
            speaker.withdraw(opts.vip)
            log.info("%s: withdrew %s", opts.node_name, opts.vip)

    last_resort = asyncio.create_task(hold_as_last_resort(opts, speaker, leading, opts.server),
                                      name="last resort")
    try:
        while True:
            # run() returns once the Lease is lost (the VIP withdrawn): stand by for it again.
            await elector.run(announce)
    finally:
        last_resort.cancel()
        speaker.withdraw(opts.vip)
        with contextlib.suppress(TimeoutError):  # a standby takes over a lease later instead
            await asyncio.wait_for(elector.release(), timeout=opts.renew_deadline)


async def answers(address: str, port: int, timeout: float) -> bool:
    """Whether something accepts a TCP connection at address:port within `timeout`."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def hold_as_last_resort(opts: argparse.Namespace, speaker: L2Speaker, leading: asyncio.Event,
                              server: str) -> None:
    """While not leading: hold the VIP if our apiserver answers and no peer's does; let go otherwise."""
    port = int(server.rpartition(":")[2])
    holding = False
    while True:
        await asyncio.sleep(opts.retry_period)
        if leading.is_set():
            holding = False  # the election's holding now; it withdraws when it steps down
            continue
        probe = opts.retry_period / 2
        alone = opts.peer and await answers(opts.node_ip, port, probe) and not any(
            await asyncio.gather(*(answers(peer, port, probe) for peer in opts.peer)))
        if leading.is_set():
            # Elected while probing: the VIP is the election's now, withdrawing it here would leave the
            # Lease's holder without the address, and no other master may take it while the Lease is renewed.
            holding = False
            continue
        if alone and not holding:
            log.warning("%s: no other master answers and no Lease can be written: holding %s as the last resort",
                        opts.node_name, opts.vip)
            speaker.hold(opts.vip)
        elif holding and not alone:
            log.info("%s: another master answers again: %s back to the election", opts.node_name, opts.vip)
            speaker.withdraw(opts.vip)
        holding = bool(alone)


def main(argv: list[str] | None = None) -> None:
    COMMAND.main(run, argv)


if __name__ == "__main__":
    main()
