"""`flotilla-lb-controller`: assigns LoadBalancer Services their EXTERNAL-IP from a pool.

    flotilla-lb-controller --server 127.0.0.1:6443 --lb-pool 192.168.56.200-192.168.56.250 [--leader-elect true]

Run one per cluster, on the control plane (see controller.py); the controller
manager runs the same controller as `service-lb` when given --lb-pool.
"""

from __future__ import annotations

import argparse
import logging

from client import Client
from client.component import Command, LeaderElection
from controlplane.loadbalancer.controller import LoadBalancerController
from controlplane.loadbalancer.pool import PoolError, parse_pool

log = logging.getLogger("flotilla.loadbalancer")

DEFAULT_POOL = "192.168.56.200-192.168.56.250"  # on the local cluster's node network (flt0)


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lb-pool", default=DEFAULT_POOL, help="FIRST-LAST or CIDR of addresses to hand out")


# Two copies on two masters must not hand out addresses at once: only the Lease holder assigns.
COMMAND = Command("flotilla-lb-controller", __doc__, flags=add_flags, errors=(PoolError,),
                  leader_election=LeaderElection("flotilla-lb-controller", enabled_by_default=False))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return COMMAND.parse_args(argv)


async def run(opts: argparse.Namespace, client: Client) -> None:
    pool = parse_pool(opts.lb_pool)
    log.info("assigning LoadBalancer addresses from %s (%d)", opts.lb_pool, len(pool))
    await LoadBalancerController(client, pool).run()


def main(argv: list[str] | None = None) -> None:
    COMMAND.main(run, argv)


if __name__ == "__main__":
    main()
