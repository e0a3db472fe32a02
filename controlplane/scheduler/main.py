"""`flotilla-scheduler`: the daemon that assigns pending pods to nodes.

    flotilla-scheduler --server 127.0.0.1:6443 [--config scheduler.yaml] [--leader-elect true]

It is an ordinary API client: it lists and watches pods and nodes, and its one
write that matters is the Binding. See scheduler.py for the loop and config.py
for the file's format; client/component.py does the rest of a daemon's life
(flags, connection, leader election, SIGTERM).
"""

from __future__ import annotations

import argparse
import logging

from client import Client
from client.component import Command, LeaderElection
from controlplane.scheduler import config as configuration
from controlplane.scheduler.scheduler import Scheduler

log = logging.getLogger("flotilla.scheduler")


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="KubeSchedulerConfiguration YAML (default: every plugin, LeastAllocated)")


# Leader election is off unless asked for: a second scheduler is usually a second profile, not a standby.
COMMAND = Command("flotilla-scheduler", __doc__, flags=add_flags, errors=(configuration.ConfigError,),
                  leader_election=LeaderElection("flotilla-scheduler", enabled_by_default=False))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return COMMAND.parse_args(argv)


async def run(opts: argparse.Namespace, client: Client) -> None:
    scheduler = Scheduler(client, configuration.load(opts.config))
    log.info("scheduling for %s against %s", ", ".join(scheduler.profiles), client.server)
    await scheduler.run()


def main(argv: list[str] | None = None) -> None:
    COMMAND.main(run, argv)


if __name__ == "__main__":
    main()
