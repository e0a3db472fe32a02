"""`flotilla-dns`: the cluster's DNS server (kube-dns), run on the control plane.

    flotilla-dns --server 127.0.0.1:6443 [--listen 127.0.0.1:53] [--upstream IP:PORT] [--domain cluster.local]

Pods reach it at the kube-dns Service's ClusterIP (10.96.0.10 by default); see
resolver.py for what it answers and server.py for how.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from client import config as clientconfig
from controlplane.dns.server import DnsServer
from proto.errors import ApiError

log = logging.getLogger("flotilla.dns")


def host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flotilla-dns", description=__doc__.split("\n")[0])
    parser.add_argument("--server", help="the apiserver's HOST:PORT (plaintext without --kubeconfig)")
    parser.add_argument("--kubeconfig", help="kubeconfig with the CA and this component's credentials (TLS)")
    parser.add_argument("--listen", type=host_port, default=("127.0.0.1", 53), help="UDP and TCP address")
    parser.add_argument("--upstream", type=host_port, help="resolver for names outside the cluster domain")
    parser.add_argument("--domain", default="cluster.local")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def serve(opts: argparse.Namespace) -> None:
    client_config = clientconfig.for_component(server=opts.server, kubeconfig=opts.kubeconfig)
    async with client_config.client() as client:
        await client.wait_ready(timeout=30)
        dns = DnsServer(client, domain=opts.domain, upstream=opts.upstream)
        host, port = await dns.start(*opts.listen)
        log.info("serving %s on %s:%d (udp, tcp), upstream %s", opts.domain, host, port, opts.upstream)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(asyncio.CancelledError):
            await stop.wait()
        await dns.stop()


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    logging.basicConfig(level=opts.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(opts))
    except (clientconfig.ConfigError, ApiError, OSError) as err:
        raise SystemExit(f"flotilla-dns: {err}") from None


if __name__ == "__main__":
    main()
