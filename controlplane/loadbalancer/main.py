"""`flotilla-lb-controller`: assigns LoadBalancer Services their EXTERNAL-IP from a pool.

    flotilla-lb-controller --server 127.0.0.1:6443 --lb-pool 192.168.56.200-192.168.56.250

Run one per cluster, on the control plane (see controller.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from client import config as clientconfig
from controlplane.loadbalancer.controller import LoadBalancerController
from controlplane.loadbalancer.pool import PoolError, parse_pool
from proto.errors import ApiError

log = logging.getLogger("flotilla.loadbalancer")

DEFAULT_POOL = "192.168.56.200-192.168.56.250"  # on the local cluster's node network (flt0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flotilla-lb-controller", description=__doc__.split("\n")[0])
    parser.add_argument("--server", help="the apiserver's HOST:PORT (plaintext without --kubeconfig)")
    parser.add_argument("--kubeconfig", help="kubeconfig with the CA and this component's credentials (TLS)")
    parser.add_argument("--lb-pool", default=DEFAULT_POOL, help="FIRST-LAST or CIDR of addresses to hand out")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def serve(opts: argparse.Namespace) -> None:
    pool = parse_pool(opts.lb_pool)
    client_config = clientconfig.for_component(server=opts.server, kubeconfig=opts.kubeconfig)
    async with client_config.client() as client:
        await client.wait_ready(timeout=30)
        task = asyncio.create_task(LoadBalancerController(client, pool).run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        log.info("assigning LoadBalancer addresses from %s (%d)", opts.lb_pool, len(pool))
        with contextlib.suppress(asyncio.CancelledError):
            await task


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    logging.basicConfig(level=opts.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(opts))
    except (PoolError, clientconfig.ConfigError, ApiError) as err:
        raise SystemExit(f"flotilla-lb-controller: {err}") from None


if __name__ == "__main__":
    main()
