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
ARP). The timings are short (3 s lease, 0.5 s retry): the API is back at the
VIP a few seconds after its holder is lost, where the scheduler's and
controller manager's 15 s Leases guard against acting twice, not against
downtime.

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
    parser.add_argument("--lease", default="flotilla-api-vip", help="the kube-system Lease the masters contend for")
    parser.add_argument("--lease-duration", type=parse_duration, default=3.0,
                        help="how long a silent holder keeps the VIP before another master takes it")
    parser.add_argument("--renew-deadline", type=parse_duration, default=2.0,
                        help="how long the holder tries to renew before it withdraws the VIP")
    parser.add_argument("--retry-period", type=parse_duration, default=0.5, help="between renewals")


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

    async def announce() -> None:
        try:
            speaker.hold(opts.vip)
            log.info("%s: announcing the API at %s on %s", opts.node_name, opts.vip, speaker.interface)
            await asyncio.Event().wait()
        finally:
            speaker.withdraw(opts.vip)
            log.info("%s: withdrew %s", opts.node_name, opts.vip)

    try:
        while True:
            # run() returns once the Lease is lost (the VIP withdrawn): stand by for it again.
            await elector.run(announce)
    finally:
        speaker.withdraw(opts.vip)
        with contextlib.suppress(TimeoutError):  # a standby takes over a lease later instead
            await asyncio.wait_for(elector.release(), timeout=opts.renew_deadline)


def main(argv: list[str] | None = None) -> None:
    COMMAND.main(run, argv)


if __name__ == "__main__":
    main()
