"""Interactive exec: given a running pod, when a user opens a shell on it, then they talk to it live.

kctl (or the client library) → apiserver ExecStream → the pod's kubelet →
CRI Exec → containerd's streaming server over SPDY (nodeagent/kubelet/streaming.py).
Real etcd, apiserver, containerd, runc and kubelet; the kctl story runs the
real CLI on a pseudo-terminal, as a user at a terminal does.
"""

from __future__ import annotations

import asyncio
import os
import pty
import select
import sys
import termios
import time
from collections.abc import AsyncIterator

import pytest

from client import Client
from proto import kubelet_pb2
from proto.errors import NotFound
from provision.localnode import LocalNode
from tests.kubelet_support import busybox, make_pod, node, wait_pod

__all__ = ["node"]  # the module-scoped fixture, imported so pytest finds it here


async def start_shell(client: Client, namespace: str, local: LocalNode) -> None:
    await client.create(make_pod("shell", local, busybox("sh", "sleep", "3600"), grace=1), namespace=namespace)
    await wait_pod(client, "shell", namespace, lambda p: p.status.phase == "Running", what="shell Running")


async def session(client: Client, start: kubelet_pb2.ExecStart, *inputs: kubelet_pb2.ExecStreamRequest,
                  pause: float = 0.3) -> tuple[bytes, bytes, kubelet_pb2.ExecExit]:
    """Run one exec stream: send `inputs` a moment apart, collect everything until the exit."""
    async def requests() -> AsyncIterator[kubelet_pb2.ExecStreamRequest]:
        yield kubelet_pb2.ExecStreamRequest(start=start)
        for request in inputs:
            await asyncio.sleep(pause)  # the shell reads line by line, as it would from a person
            yield request
        await asyncio.sleep(3600)  # keep the stream open: the command's exit ends the session
    stdout, stderr = b"", b""
    async for reply in client.exec_stream(requests()):
        if reply.HasField("exit"):
            return stdout, stderr, reply.exit
        stdout += reply.stdout
        stderr += reply.stderr
    raise AssertionError("the stream ended without an exit")


async def test_a_terminal_session_gets_its_size_input_and_exit_code(client: Client, namespace: str,
                                                                     node: LocalNode) -> None:
    await start_shell(client, namespace, node)
    start = kubelet_pb2.ExecStart(namespace=namespace, pod="shell", command=["sh"], stdin=True, tty=True)
    stdout, stderr, exit = await asyncio.wait_for(session(
        client, start,
        kubelet_pb2.ExecStreamRequest(resize=kubelet_pb2.TerminalSize(width=100, height=40)),
        kubelet_pb2.ExecStreamRequest(stdin=b"stty size; echo hello $((6*7)); tty\n"),
        kubelet_pb2.ExecStreamRequest(stdin=b"exit 3\n")), 20)
    text = stdout.decode()
    assert "40 100\r\n" in text  # the resize reached the terminal
    assert "hello 42\r\n" in text  # the terminal echoes and answers with CR LF
    assert "/dev/pts/" in text
    assert stderr == b""  # one stream on a terminal
    assert (exit.exit_code, exit.message) == (3, "")


async def test_without_a_terminal_stdout_and_stderr_stay_apart(client: Client, namespace: str,
                                                               node: LocalNode) -> None:
    await start_shell(client, namespace, node)
    start = kubelet_pb2.ExecStart(namespace=namespace, pod="shell", stdin=True,
                                  command=["sh", "-c", "read line; echo got $line; echo oops >&2"])
    stdout, stderr, exit = await asyncio.wait_for(
        session(client, start, kubelet_pb2.ExecStreamRequest(stdin=b"abc\n")), 20)
    assert (stdout, stderr, exit.exit_code) == (b"got abc\n", b"oops\n", 0)


async def test_a_missing_container_is_not_found(client: Client, namespace: str, node: LocalNode) -> None:
    await start_shell(client, namespace, node)
    start = kubelet_pb2.ExecStart(namespace=namespace, pod="shell", container="nope", command=["sh"])
    with pytest.raises(NotFound, match="nope"):
        await asyncio.wait_for(session(client, start), 20)


def _read_until(fd: int, wanted: bytes, timeout: float) -> bytes:
    """Read the pseudo-terminal until `wanted` shows up (or fail with what came)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {wanted!r}; got {seen[-500:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


def _kctl_on_a_terminal(server: str, namespace: str) -> tuple[int, bytes]:
    """`kctl exec -it shell -- sh` on a pseudo-terminal 30x90: type, resize to 50x120, exit 5."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: kctl on the terminal, as a user starts it
        os.environ["KCTL_CONFIG"] = "/nonexistent"
        kctl = os.path.join(os.path.dirname(sys.executable), "kctl")
        os.execv(kctl, [kctl, "-s", server, "-n", namespace, "exec", "-it", "shell", "--", "sh"])
    try:
        termios.tcsetwinsize(fd, (30, 90))
        out = _read_until(fd, b"# ", 20)  # busybox's prompt: the session is live
        os.write(fd, b"stty size\r")
        out += _read_until(fd, b"30 90", 10)
        termios.tcsetwinsize(fd, (50, 120))  # the kernel sends kctl SIGWINCH
        time.sleep(0.5)
        os.write(fd, b"stty size\r")
        out += _read_until(fd, b"50 120", 10)
        os.write(fd, b"exit 5\r")
        out += _read_until(fd, b"exit code 5", 10)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out


async def test_kctl_exec_it_is_a_live_terminal_that_follows_resizes(client: Client, namespace: str,
                                                                    node: LocalNode) -> None:
    await start_shell(client, namespace, node)
    code, out = await asyncio.to_thread(_kctl_on_a_terminal, client.server, namespace)
    assert code == 5, out
    assert b"command terminated with exit code 5" in out


async def test_kctl_exec_i_passes_on_the_end_of_piped_input(client: Client, namespace: str, node: LocalNode) -> None:
    # `... | kctl exec -i shell -- cat` must finish: the end of kctl's stdin is the end of cat's.
    await start_shell(client, namespace, node)
    kctl = os.path.join(os.path.dirname(sys.executable), "kctl")
    proc = await asyncio.create_subprocess_exec(
        kctl, "-s", client.server, "-n", namespace, "exec", "-i", "shell", "--", "cat",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "KCTL_CONFIG": "/nonexistent"})
    out, err = await asyncio.wait_for(proc.communicate(b"piped line\n"), 20)
    assert proc.returncode == 0, err
    assert out == b"piped line\n"
