"""`flotilla-proxy`: the per-node daemon that makes Services reachable (kube-proxy).

    flotilla-proxy --server 127.0.0.1:6443 --node-name node-1 [--node-ip 192.168.56.101]
    flotilla-proxy --cleanup [--table NAME]   # remove every rule the proxy made, then exit

On a local cluster whose nodes are network namespaces, `--netns NODE` keeps the
proxy in the host's namespace (where the apiserver listens on loopback) and
programs the node's namespace (`ip netns exec NODE nft ...`). A proxy that
shares its namespace with other networks (a local cluster's master is the host
itself) takes `--table NAME`, so each cluster has a table of its own, and
`--nodeport-addresses CIDR` (as kube-proxy's), so node ports open on the node's
address only and not on every interface of the machine.

The same process enforces NetworkPolicies for the node's pods (nodeagent/netpol/,
a table of its own, named after --table: `flotilla-netpol`, or
`flotilla-netpol-<name>` beside `flotilla-proxy-<name>`); `--no-network-policy`
leaves that to another agent.

Runs as root on each node (it programs the node's nftables); see proxier.py for
the loop and rules.py for the ruleset. On a node given --node-ip it also runs
the ingress agent (nodeagent/ingress): haproxy on that address, ports 80 and
443, serving the Ingresses of the flotilla.dev/ingress-haproxy class.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
from pathlib import Path

from client import Client
from client.component import Command
from nodeagent.ingress.agent import IngressAgent
from nodeagent.ingress.config import Settings
from nodeagent.ingress.haproxy import HaproxyError
from nodeagent.netpol import compiler as netpol
from nodeagent.netpol.controller import NetworkPolicyController
from nodeagent.proxy import nft, rules
from nodeagent.proxy.announcer import Announcer, interface_of
from nodeagent.proxy.proxier import Proxier

log = logging.getLogger("flotilla.proxy")
INGRESS_STATE_ROOT = "/run/flotilla/ingress"


def table_name(text: str) -> str:
    # nft identifiers: a letter, then letters, digits, - _ . (a name is spliced into nft scripts as is).
    if not text or not text[0].isalpha() or not all(c.isalnum() or c in "-_." for c in text) or len(text) > 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not an nftables table name (a letter, then letters, "
                                         "digits, '-', '_' or '.'; at most 64)")
    return text


def ipv4_cidr(text: str) -> str:
    try:
        return str(ipaddress.IPv4Network(text, strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 CIDR (like 192.168.56.1/32)") from None


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node-name", help="this node's name (required unless --cleanup)")
    # Node ports answer on every local address (fib daddr type local); the IP finds the LB interface.
    parser.add_argument("--node-ip", help="this node's InternalIP: LoadBalancer addresses go on its interface")
    parser.add_argument("--lb-interface", help="interface to announce LoadBalancer addresses on "
                        "(default: the one holding --node-ip; neither: no announcing)")
    parser.add_argument("--netns", help="program this named network namespace instead of our own (local nodes)")
    parser.add_argument("--table", default=rules.TABLE, type=table_name,
                        help=f"the nftables table (family {rules.FAMILY}) to own (default: %(default)s)")
    parser.add_argument("--nodeport-addresses", action="append", default=[], type=ipv4_cidr, metavar="CIDR",
                        help="answer node ports only on local addresses in CIDR (repeatable; default: every "
                        "local address but loopback)")
    parser.add_argument("--no-network-policy", dest="network_policy", action="store_false",
                        help="do not enforce NetworkPolicies (another agent does)")
    # The ingress agent (nodeagent/ingress) runs beside the proxy on nodes that have an address to serve on.
    parser.add_argument("--ingress", action=argparse.BooleanOptionalAction, default=True,
                        help="run the ingress agent (haproxy on --node-ip ports 80/443) when --node-ip is given")
    parser.add_argument("--ingress-http-port", type=int, default=80, help="the ingress's plain HTTP port")
    parser.add_argument("--ingress-https-port", type=int, default=443, help="the ingress's TLS port")
    parser.add_argument("--ingress-state-dir", default=INGRESS_STATE_ROOT,
                        help="haproxy's files live in DIR/<node-name> (default: %(default)s)")
    parser.add_argument("--cleanup", action="store_true", help="delete the proxy's nftables tables and exit")


# LookupError: --node-ip is on no interface of the node.
COMMAND = Command("flotilla-proxy", __doc__, flags=add_flags, errors=(nft.NftError, LookupError, HaproxyError))


def netpol_table(proxy_table: str) -> str:
    """The NetworkPolicy table beside proxy table `proxy_table`: flotilla-proxy[-x] -> flotilla-netpol[-x]."""
    if proxy_table.startswith(rules.TABLE):
        return netpol.TABLE + proxy_table[len(rules.TABLE):]
    return f"{proxy_table}-netpol"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return COMMAND.parse_args(argv)


async def run(opts: argparse.Namespace, client: Client) -> None:
    proxier = Proxier(client, node_name=opts.node_name, netns=opts.netns, table=opts.table,
                      nodeport_addresses=opts.nodeport_addresses)
    interface = opts.lb_interface or (interface_of(opts.node_ip, netns=opts.netns) if opts.node_ip else None)
    log.info("proxying for node %s (%s) against %s", opts.node_name, opts.node_ip or "?", client.server)
    # On SIGTERM the rules stay on purpose: a restarting proxy must not cut live Service traffic.
    async with asyncio.TaskGroup() as group:
        group.create_task(proxier.run())
        if opts.network_policy:
            policies = NetworkPolicyController(client, node_name=opts.node_name, netns=opts.netns,
                                               table=netpol_table(opts.table))
            group.create_task(policies.run())
        if interface:
            announcer = Announcer(client, node_name=opts.node_name, interface=interface, netns=opts.netns)
            group.create_task(announcer.run())
            log.info("announcing LoadBalancer addresses on %s", interface)
        if opts.ingress and opts.node_ip:
            settings = Settings(Path(opts.ingress_state_dir) / opts.node_name, opts.node_ip,
                                opts.ingress_http_port, opts.ingress_https_port)
            group.create_task(IngressAgent(client, settings, node_name=opts.node_name, netns=opts.netns).run())
            log.info("serving Ingresses on %s:%d/%d", opts.node_ip, opts.ingress_http_port, opts.ingress_https_port)


async def cleanup(opts: argparse.Namespace) -> None:
    """`--cleanup`: delete the table, needing no apiserver (as kube-proxy's --cleanup)."""
    await nft.apply(nft.cleanup_transaction(opts.table), netns=opts.netns)
    await nft.apply(netpol.delete_table(table=netpol_table(opts.table)), netns=opts.netns)


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    if opts.cleanup:
        COMMAND.run_standalone(cleanup, opts)
    elif not opts.node_name:
        raise SystemExit("flotilla-proxy: --node-name is required")
    else:
        COMMAND.run(run, opts)


if __name__ == "__main__":
    main()
