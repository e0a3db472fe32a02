"""The apiserver on a node's loopback: a TCP forwarder from a node namespace to the host's apiserver.

The apiserver of a local cluster serves plaintext on the host's loopback only
(it refuses anything else without TLS), yet each kubelet runs inside its node's
network namespace, because the apiserver dials the kubelet API at the node's
InternalIP. This forwarder bridges the two: its listening socket is created
inside the node's namespace on 127.0.0.1:PORT, and every connection accepted
there is relayed to 127.0.0.1:PORT in the host's namespace. A socket belongs to
the namespace its thread was in when it was made, so one process serves both
sides. Nothing beyond the node's loopback can reach it.

    python -m provision.apiforward NODE_NETNS PORT READY_FILE
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import sys
from pathlib import Path

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def listen_in(netns: str, port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:port inside network namespace `netns`; the caller stays in its own."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(128)
            sock.setblocking(False)
        finally:
            _setns(home)
    finally:
        os.close(home)
        os.close(target)
    return sock


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


async def serve(netns: str, port: int, ready: Path) -> None:
    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            client_w.close()  # the apiserver is restarting: the client retries
            return
        await asyncio.gather(_pump(client_r, server_w), _pump(server_r, client_w))

    server = await asyncio.start_server(relay, sock=listen_in(netns, port))
    await asyncio.to_thread(ready.write_text, str(os.getpid()))
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args[0], int(args[1]), Path(args[2])))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
