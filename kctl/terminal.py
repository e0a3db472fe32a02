"""`kctl exec -i/-t`: the user's terminal on one end of a live exec stream.

The apiserver forwards an `ExecStream` to the pod's kubelet, which drives
containerd's streaming server (nodeagent/kubelet/streaming.py). This side puts
the local terminal in raw mode (keys, Ctrl-C and Ctrl-D go to the remote
terminal, not to kctl), sends what the user types and the terminal's size
(again on every SIGWINCH), writes what comes back, and returns the command's
exit code. The terminal is restored however the session ends.

Without a terminal (`-i` alone, e.g. input from a pipe) stdin is sent as it
comes, and its end is passed on (`close_stdin`), so `... | kctl exec -i pod --
cat` finishes as it would locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import AsyncIterator, Iterator

from client import Client
from proto import kubelet_pb2

READ_SIZE = 64 * 1024


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The terminal in raw mode for the block; exactly as it was afterwards."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def terminal_size(fd: int) -> kubelet_pb2.TerminalSize:
    rows, columns = termios.tcgetwinsize(fd)
    return kubelet_pb2.TerminalSize(width=columns, height=rows)


async def exec_interactive(client: Client, start: kubelet_pb2.ExecStart) -> kubelet_pb2.ExecExit:
    """Run `start` with this process's stdin/stdout/stderr; returns how the command ended."""
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[kubelet_pb2.ExecStreamRequest] = asyncio.Queue()
    stdin_fd = sys.stdin.fileno()

    async def requests() -> AsyncIterator[kubelet_pb2.ExecStreamRequest]:
        yield kubelet_pb2.ExecStreamRequest(start=start)
        while True:
            yield await inbox.get()

    def send_size() -> None:
        inbox.put_nowait(kubelet_pb2.ExecStreamRequest(resize=terminal_size(stdin_fd)))

    with contextlib.ExitStack() as cleanup:
        if start.stdin:
            _read_stdin(loop, stdin_fd, inbox, cleanup)
        if start.tty:
            send_size()
            loop.add_signal_handler(signal.SIGWINCH, send_size)
            cleanup.callback(loop.remove_signal_handler, signal.SIGWINCH)
            cleanup.enter_context(raw_terminal(stdin_fd))
        async with contextlib.aclosing(client.exec_stream(requests())) as replies:
            async for reply in replies:
                if reply.HasField("exit"):
                    return reply.exit
                for data, stream in ((reply.stdout, sys.stdout), (reply.stderr, sys.stderr)):
                    if data:
                        stream.buffer.write(data)
                        stream.buffer.flush()
    return kubelet_pb2.ExecExit(exit_code=1, message="the exec stream ended without the command's exit")


def _read_stdin(loop: asyncio.AbstractEventLoop, fd: int, inbox: asyncio.Queue[kubelet_pb2.ExecStreamRequest],
                cleanup: contextlib.ExitStack) -> None:
    """Queue stdin as it becomes readable (no thread: a blocked read would keep kctl from exiting)."""
    def readable() -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        if data:
            inbox.put_nowait(kubelet_pb2.ExecStreamRequest(stdin=data))
        else:
            loop.remove_reader(fd)  # end of input: the command's stdin reaches end-of-file too
            inbox.put_nowait(kubelet_pb2.ExecStreamRequest(close_stdin=True))

    try:
        loop.add_reader(fd, readable)
    except PermissionError:
        # A regular file cannot be polled, and never blocks: read it whole.
        with os.fdopen(os.dup(fd), "rb") as f:
            while data := f.read(READ_SIZE):
                inbox.put_nowait(kubelet_pb2.ExecStreamRequest(stdin=data))
        inbox.put_nowait(kubelet_pb2.ExecStreamRequest(close_stdin=True))
        return
    cleanup.callback(loop.remove_reader, fd)
