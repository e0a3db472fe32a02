"""Port-forward on the node: one TCP connection to a port on a pod's own loopback.

`kubectl port-forward pod/x 8080:80` reaches the pod's port 80 as `127.0.0.1:80`
*inside the pod*: a server that listens only on the pod's loopback answers too,
and no Service or route to the pod's IP is needed. Only the node can do that,
because only the node can enter the pod's network namespace.

Each connection the user makes becomes one `PortForward` stream of the kubelet
API (proto/kubelet.proto), proxied by the apiserver. The kubelet finds the pod's
sandbox, reads its process ID from the runtime's verbose sandbox status, and
opens the socket from a short-lived thread that first joins the sandbox's
network namespace (`setns(2)` on `/proc/<pid>/ns/net`). A socket belongs to the
namespace it was made in for its whole life, so once connected it is handed to
the event loop and the thread ends, its namespace with it; the kubelet's own
threads never leave the host's network namespace. (containerd's CRI
PortForward does the same inside its streaming server; doing it here keeps
half-close and errors in our hands.)
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import socket
import threading
from collections.abc import AsyncGenerator, AsyncIterator

from nodeagent.kubelet.runtime import Runtime
from proto import kubelet_pb2

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
CONNECT_TIMEOUT = 10.0
READ_SIZE = 64 * 1024

_libc = ctypes.CDLL(None, use_errno=True)


class PortForwardError(Exception):
    """The pod's port could not be reached (no sandbox, no namespace, connection refused)."""


async def sandbox_netns(runtime: Runtime, sandbox_id: str) -> str:
    """The path of the sandbox's network namespace, from its process in the verbose CRI status."""
    info = await runtime.pod_sandbox_info(sandbox_id)
    try:
        pid = int(json.loads(info.get("info", "{}")).get("pid") or 0)
    except ValueError:
        pid = 0
    if pid <= 0:
        raise PortForwardError(f"the runtime reports no process for sandbox {sandbox_id[:12]}")
    return f"/proc/{pid}/ns/net"


def _connect_in(netns: str, port: int) -> socket.socket:
    """Join `netns` (this thread only) and connect to the port on its loopback, IPv4 then IPv6."""
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)
    last: OSError | None = None
    for family, address in ((socket.AF_INET, ("127.0.0.1", port)), (socket.AF_INET6, ("::1", port))):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(address)
        except OSError as err:
            sock.close()
            last = err
            continue
        sock.setblocking(False)
        return sock
    assert last is not None
    raise last


async def connect(netns: str, port: int) -> socket.socket:
    """A socket connected to `port` inside `netns`, made by a thread that ends right after."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[socket.socket] = loop.create_future()

    def run() -> None:
        # A thread of its own, never a pool thread: it leaves the host's namespace for good.
        try:
            sock = _connect_in(netns, port)
        except OSError as err:
            loop.call_soon_threadsafe(_settle, done, None, err)
        else:
            loop.call_soon_threadsafe(_settle, done, sock, None)

    threading.Thread(target=run, name=f"portforward-{port}", daemon=True).start()
    try:
        return await done
    except OSError as err:
        raise PortForwardError(f"error forwarding port {port} to pod: {err.strerror or err}") from None


def _settle(done: asyncio.Future[socket.socket], sock: socket.socket | None, err: OSError | None) -> None:
    if done.cancelled():  # the caller went away while we dialled
        if sock is not None:
            sock.close()
    elif err is not None:
        done.set_exception(err)
    else:
        assert sock is not None
        done.set_result(sock)


async def relay(sock: socket.socket, requests: AsyncIterator[kubelet_pb2.PortForwardRequest]
                ) -> AsyncGenerator[kubelet_pb2.PortForwardReply, None]:
    """Caller's bytes into the socket, the pod's bytes out, until the pod closes or the caller goes."""
    reader, writer = await asyncio.open_connection(sock=sock)

    async def upstream() -> None:
        try:
            async for request in requests:
                if request.HasField("data"):
                    writer.write(request.data)
                    await writer.drain()
                elif request.HasField("close_write"):
                    break
            if writer.can_write_eof():
                writer.write_eof()  # the pod's server sees end-of-request, and may still answer
        except (ConnectionError, OSError):
            pass  # the pod closed first: the read side reports it
        except Exception as err:  # the caller's stream broke: the read side ends with the session
            log.debug("port-forward input stopped: %s", err)

    pump = asyncio.create_task(upstream())
    try:
        while True:
            try:
                data = await reader.read(READ_SIZE)
            except (ConnectionError, OSError) as err:
                yield kubelet_pb2.PortForwardReply(error=f"connection to the pod's port broke: {err}")
                return
            if not data:
                return
            yield kubelet_pb2.PortForwardReply(data=data)
    finally:
        pump.cancel()
        writer.close()
