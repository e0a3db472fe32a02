"""`flotilla-scheduler`: the daemon that assigns pending pods to nodes.

    flotilla-scheduler --server 127.0.0.1:6443 [--config scheduler.yaml]

It is an ordinary API client: it lists and watches pods and nodes, and its one
write that matters is the Binding. See scheduler.py for the loop and config.py
for the file's format.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from client import config as clientconfig
from controlplane.scheduler import config as configuration
from controlplane.scheduler.scheduler import Scheduler
from proto.errors import ApiError

log = logging.getLogger("flotilla.scheduler")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flotilla-scheduler", description=__doc__.split("\n")[0])
    parser.add_argument("--server", help="the apiserver's HOST:PORT (plaintext without --kubeconfig)")
    parser.add_argument("--kubeconfig", help="kubeconfig with the CA and this component's credentials (TLS)")
    parser.add_argument("--config", help="KubeSchedulerConfiguration YAML (default: every plugin, LeastAllocated)")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def serve(opts: argparse.Namespace) -> None:
    settings = configuration.load(opts.config)
    client_config = clientconfig.for_component(server=opts.server, kubeconfig=opts.kubeconfig)
    async with client_config.client() as client:
        await client.wait_ready(timeout=30)
        scheduler = Scheduler(client, settings)
        task = asyncio.create_task(scheduler.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        log.info("scheduling for %s against %s", ", ".join(scheduler.profiles), client.server)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("stopped")


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    logging.basicConfig(level=opts.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(opts))
    except (configuration.ConfigError, clientconfig.ConfigError, ApiError) as err:
        raise SystemExit(f"flotilla-scheduler: {err}") from None


if __name__ == "__main__":
    main()
