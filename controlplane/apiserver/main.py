"""`flotilla-apiserver`: the only component that talks to etcd.

    flotilla-apiserver --etcd-servers http://127.0.0.1:2379 --listen 127.0.0.1:6443

Connects to etcd, makes sure the system namespaces exist, starts the history
compactor and the namespace cache, then serves the gRPC API until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys

import grpc

from controlplane.apiserver.registry import Registry
from controlplane.apiserver.server import ApiService
from controlplane.apiserver.storage import Storage
from proto import apiserver_pb2_grpc
from proto.client.api import SERVER_OPTIONS

log = logging.getLogger("flotilla.apiserver")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flotilla-apiserver", description=__doc__.split("\n")[0])
    parser.add_argument("--etcd-servers", default="http://127.0.0.1:2379",
                        help="etcd client URL (only the first of a comma-separated list is used)")
    parser.add_argument("--listen", default="127.0.0.1:6443", help="HOST:PORT to serve gRPC on")
    parser.add_argument("--compaction-interval", type=float, default=300.0,
                        help="seconds of etcd history to keep; 0 disables compaction")
    parser.add_argument("--bookmark-interval", type=float, default=30.0,
                        help="seconds of quiet before a watch gets a BOOKMARK")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def require_loopback(listen: str) -> None:
    """Without TLS and authentication, nothing but this host may reach the API."""
    host = listen.rpartition(":")[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"flotilla-apiserver: refusing to listen on {listen} without TLS: "
                         "use a loopback address (127.0.0.1:PORT)")


async def serve(opts: argparse.Namespace) -> None:
    storage = Storage(opts.etcd_servers.split(",")[0])
    await storage.connect()
    registry = Registry(storage)
    await registry.ensure_system_namespaces()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    apiserver_pb2_grpc.add_ApiServerServicer_to_server(
        ApiService(registry, bookmark_interval=opts.bookmark_interval), server)
    if server.add_insecure_port(opts.listen) == 0:
        raise SystemExit(f"flotilla-apiserver: cannot listen on {opts.listen}")
    await server.start()
    background = [asyncio.create_task(registry.watch_namespaces())]
    if opts.compaction_interval > 0:
        background.append(asyncio.create_task(registry.compact_forever(opts.compaction_interval)))
    log.info("serving on %s, etcd %s", opts.listen, storage.url)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop(grace=2)
    for task in background:
        task.cancel()
    await storage.close()


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    logging.basicConfig(level=opts.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    require_loopback(opts.listen)
    asyncio.run(serve(opts))


if __name__ == "__main__":
    main()
