"""`flotilla-dns`: the cluster's DNS server (kube-dns), run on the control plane.

    flotilla-dns --server 127.0.0.1:6443 [--listen 127.0.0.1:53] [--upstream IP:PORT] [--domain cluster.local]

Pods reach it at the kube-dns Service's ClusterIP (10.96.0.10 by default); see
resolver.py for what it answers and server.py for how.
"""

from __future__ import annotations

import argparse
import logging

from client import Client
from client.component import Command, until_stopped
from controlplane.dns.server import DnsServer

log = logging.getLogger("flotilla.dns")


def host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", type=host_port, default=("127.0.0.1", 53), help="UDP and TCP address")
    parser.add_argument("--upstream", type=host_port, help="resolver for names outside the cluster domain")
    parser.add_argument("--domain", default="cluster.local")


# OSError: the listen address is taken or needs privileges (port 53).
COMMAND = Command("flotilla-dns", __doc__, flags=add_flags, errors=(OSError,))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return COMMAND.parse_args(argv)


async def run(opts: argparse.Namespace, client: Client) -> None:
    dns = DnsServer(client, domain=opts.domain, upstream=opts.upstream)
    host, port = await dns.start(*opts.listen)
    log.info("serving %s on %s:%d (udp, tcp), upstream %s", opts.domain, host, port, opts.upstream)
    try:
        await until_stopped()  # the server answers in its own tasks
    finally:
        await dns.stop()


def main(argv: list[str] | None = None) -> None:
    COMMAND.main(run, argv)


if __name__ == "__main__":
    main()
