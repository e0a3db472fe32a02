"""Logs, exec, attach and port-forward over the HTTP API: given running pods, real clients reach them.

Real etcd, apiserver (its `--http-listen` HTTP API, `http_url`), containerd, runc
and kubelet (tests/kubelet_support.py). The streams are driven the way their
clients drive them: WebSocket `v5.channel.k8s.io` / `v4.channel.k8s.io`
channels, SPDY/3.1 inside a WebSocket for port-forward, the `kubernetes`
package's exec and portforward, and real kubectl 1.32 (exec exit codes and
stdin, cp, logs, port-forward).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import re
import subprocess
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from client import Client, spdy
from proto import core_pb2
from provision.localnode import LocalNode
from tests.kubelet_support import busybox, make_pod, node, wait_pod
from tests.test_kubelet_exec import _read_until

__all__ = ["node"]  # the module-scoped fixture, imported so pytest finds it here

V5, V4 = "v5.channel.k8s.io", "v4.channel.k8s.io"
KUBECTL = "/usr/bin/kubectl"
PAGE = "hello-from-the-pod"


async def run_pod(client: Client, namespace: str, local: LocalNode, name: str, *command: str,
                  **fields: Any) -> None:
    await client.create(make_pod(name, local, busybox(name, *command, **fields), grace=1), namespace=namespace)
    await wait_pod(client, name, namespace, lambda p: p.status.phase == "Running", what=f"{name} Running")


@dataclass
class Session:
    stdout: bytes = b""
    stderr: bytes = b""
    status: dict[str, Any] = field(default_factory=dict)
    protocol: str = ""


async def channel_session(url: str, protocol: str, *frames: bytes, pause: float = 0.3) -> Session:
    """A WebSocket channel session as kubectl drives it: send `frames`, read until the server closes."""
    got = Session()
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=(protocol,)) as ws:
        got.protocol = ws.protocol or ""
        for frame in frames:
            await asyncio.sleep(pause)
            await ws.send_bytes(frame)
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                continue
            channel, data = message.data[0], message.data[1:]
            if channel == 1:
                got.stdout += data
            elif channel == 2:
                got.stderr += data
            elif channel == 3:
                got.status = json.loads(data)
    return got


def exec_url(base: str, namespace: str, pod: str, *command: str, **flags: str) -> str:
    query = "&".join([f"command={aiohttp.helpers.quote(c, safe='')}" for c in command]
                     + [f"{k}={v}" for k, v in flags.items()])
    return f"{base.replace('http', 'ws', 1)}/api/v1/namespaces/{namespace}/pods/{pod}/exec?{query}"


# ---------------------------------------------------------------------------------------------- exec


async def test_exec_over_v5_reports_output_and_the_exit_code(client: Client, namespace: str, node: LocalNode,
                                                             http_url: str) -> None:
    await run_pod(client, namespace, node, "shell", "sleep", "3600")
    url = exec_url(http_url, namespace, "shell", "sh", "-c", "echo out; echo err >&2; exit 3",
                   stdout="true", stderr="true")
    got = await asyncio.wait_for(channel_session(url, V5), 20)
    assert got.protocol == V5
    assert (got.stdout, got.stderr) == (b"out\n", b"err\n")
    assert got.status["status"] == "Failure" and got.status["reason"] == "NonZeroExitCode"
    assert got.status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


async def test_exec_success_and_stdin_over_v4(client: Client, namespace: str, node: LocalNode,
                                              http_url: str) -> None:
    await run_pod(client, namespace, node, "shell", "sleep", "3600")
    url = exec_url(http_url, namespace, "shell", "sh", "-c", "read line; echo got $line",
                   stdin="true", stdout="true", stderr="true")
    got = await asyncio.wait_for(channel_session(url, V4, b"\x00abc\n"), 20)
    assert (got.protocol, got.stdout, got.status) == (V4, b"got abc\n", {"metadata": {}, "status": "Success"})


async def test_exec_with_the_python_client(client: Client, namespace: str, node: LocalNode, http_url: str) -> None:
    from kubernetes import client as k8s
    from kubernetes.stream import stream

    await run_pod(client, namespace, node, "shell", "sleep", "3600")

    def run() -> tuple[str, str, int | None]:
        api = k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=http_url)))
        session = stream(api.connect_get_namespaced_pod_exec, "shell", namespace,
                         command=["sh", "-c", "echo to-out; echo to-err >&2; exit 7"],
                         stdout=True, stderr=True, stdin=False, tty=False, _preload_content=False)
        session.run_forever(timeout=15)
        return session.read_stdout(), session.read_stderr(), session.returncode

    assert await asyncio.wait_for(asyncio.to_thread(run), 30) == ("to-out\n", "to-err\n", 7)


async def test_exec_on_a_terminal_follows_its_size(client: Client, namespace: str, node: LocalNode,
                                                   http_url: str) -> None:
    await run_pod(client, namespace, node, "shell", "sleep", "3600")
    url = exec_url(http_url, namespace, "shell", "sh", "-c", "sleep 1; stty size", stdin="true", stdout="true",
                   tty="true")
    got = await asyncio.wait_for(channel_session(url, V5, b'\x04{"Width":101,"Height":41}'), 20)
    assert b"41 101" in got.stdout
    assert got.status["status"] == "Success"


async def test_exec_stdin_end_of_file_over_v5(client: Client, namespace: str, node: LocalNode,
                                              http_url: str) -> None:
    # kubectl sends [255, 0] when its input ends: `cat` must see end-of-file and exit.
    await run_pod(client, namespace, node, "shell", "sleep", "3600")
    url = exec_url(http_url, namespace, "shell", "cat", stdin="true", stdout="true", stderr="true")
    got = await asyncio.wait_for(channel_session(url, V5, b"\x00hello-stdin\n", b"\xff\x00"), 20)
    assert (got.stdout, got.status["status"]) == (b"hello-stdin\n", "Success")


async def test_exec_errors_are_statuses_before_the_upgrade(client: Client, namespace: str, node: LocalNode,
                                                           http_url: str) -> None:
    await run_pod(client, namespace, node, "shell", "sleep", "3600")
    base = f"{http_url}/api/v1/namespaces/{namespace}/pods"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/nope/exec?command=ls&stdout=true",
                            headers={"Upgrade": "websocket", "Connection": "Upgrade"}) as missing:
            assert missing.status == 404
            assert (await missing.json())["reason"] == "NotFound"
        async with http.get(f"{base}/shell/exec?command=ls&stdout=true&container=other") as wrong:
            assert wrong.status == 400
            assert "container other is not valid for pod shell" in (await wrong.json())["message"]
        async with http.get(f"{base}/shell/exec?stdout=true") as no_command:
            assert no_command.status == 400
        # kubectl's fallback after a failed WebSocket attempt: SPDY over plain HTTP.
        async with http.post(f"{base}/shell/exec?command=ls&stdout=true",
                             headers={"Upgrade": "SPDY/3.1", "Connection": "Upgrade",
                                      "X-Stream-Protocol-Version": V5}) as spdy_attempt:
            assert spdy_attempt.status == 400
            assert "WebSocket" in (await spdy_attempt.json())["message"]


async def test_attach_joins_the_containers_output(client: Client, namespace: str, node: LocalNode,
                                                  http_url: str) -> None:
    await run_pod(client, namespace, node, "talker", "sh", "-c",
                  "while true; do echo tick; sleep 0.2; done")
    base = http_url.replace("http", "ws", 1)
    url = f"{base}/api/v1/namespaces/{namespace}/pods/talker/attach?stdout=true&stderr=true"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=(V5,)) as ws:
        seen = b""
        while b"tick\ntick\n" not in seen:
            message = await asyncio.wait_for(ws.receive(), 10)
            assert message.type == WSMsgType.BINARY, message
            if message.data[0] == 1:
                seen += message.data[1:]
    assert b"tick\n" in seen


# ---------------------------------------------------------------------------------------------- logs


async def test_logs_tail_limit_follow_and_bad_options(client: Client, namespace: str, node: LocalNode,
                                                      http_url: str) -> None:
    await run_pod(client, namespace, node, "logger", "sh", "-c",
                  "for i in 1 2 3 4 5; do echo line $i; done; sleep 2; echo late; sleep 3600")
    base = f"{http_url}/api/v1/namespaces/{namespace}/pods/logger/log"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}?tailLines=2") as tail:
            assert tail.status == 200 and tail.headers["Content-Type"].startswith("text/plain")
            assert await tail.text() in ("line 4\nline 5\n", "line 5\nlate\n")
        async with http.get(f"{base}?limitBytes=9") as limited:
            assert await limited.read() == b"line 1\nli"
        async with http.get(f"{base}?follow=true&tailLines=1&timestamps=true") as follow:
            seen = b""
            while b"late\n" not in seen:
                seen += await asyncio.wait_for(follow.content.readany(), 10)
            assert seen.split(b" ", 1)[0].endswith(b"Z")  # an RFC 3339 time before each line
        async with http.get(f"{base}?sinceSeconds=0") as invalid:
            assert invalid.status == 422
            assert (await invalid.json())["reason"] == "Invalid"
        async with http.get(f"{base}?tailLines=x") as unparsable:
            assert unparsable.status == 400
        async with http.get(f"{base}?container=nope") as wrong:
            assert wrong.status == 400


# ---------------------------------------------------------------------------------------------- port-forward


async def web_pod(client: Client, namespace: str, local: LocalNode) -> None:
    await run_pod(client, namespace, local, "web", "sh", "-c",
                  f"mkdir -p /www && echo {PAGE} > /www/index.html && exec httpd -f -p 127.0.0.1:80 -h /www")


class SpdyTunnel:
    """kubectl's side of port-forward: SPDY/3.1 frames inside WebSocket binary messages."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.writer, self.reader = spdy.FrameWriter(), spdy.FrameReader()
        self.next_id = 1

    async def send(self, frame: spdy.Frame) -> None:
        await self.ws.send_bytes(self.writer.encode(frame))

    async def request(self, port: int, request_id: int, payload: bytes) -> tuple[bytes, bytes]:
        """One forwarded connection: error and data http_url, the request with FIN, the answer until FIN."""
        error_id, data_id = self.next_id, self.next_id + 2
        self.next_id += 4
        headers = {"port": [str(port)], "requestid": [str(request_id)]}
        await self.send(spdy.SynStream(error_id, {"streamtype": ["error"], **headers}, flags=spdy.FLAG_FIN))
        await self.send(spdy.SynStream(data_id, {"streamtype": ["data"], **headers}))
        await self.send(spdy.DataFrame(data_id, payload, spdy.FLAG_FIN))
        data, error, open_streams, replied = b"", b"", {error_id, data_id}, set()
        while open_streams:
            message = await asyncio.wait_for(self.ws.receive(), 15)
            assert message.type == WSMsgType.BINARY, message
            for frame in self.reader.feed(message.data):
                if isinstance(frame, spdy.SynReply):
                    replied.add(frame.stream_id)
                elif isinstance(frame, spdy.DataFrame):
                    if frame.stream_id == data_id:
                        data += frame.data
                    elif frame.stream_id == error_id:
                        error += frame.data
                    if frame.fin:
                        open_streams.discard(frame.stream_id)
        assert replied == {error_id, data_id}
        return data, error


async def test_port_forward_through_spdy_in_a_websocket(client: Client, namespace: str, node: LocalNode,
                                                        http_url: str) -> None:
    await web_pod(client, namespace, node)
    url = f"{http_url.replace('http', 'ws', 1)}/api/v1/namespaces/{namespace}/pods/web/portforward"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=("SPDY/3.1+portforward.k8s.io",)) as ws:
        assert ws.protocol == "SPDY/3.1+portforward.k8s.io"
        tunnel = SpdyTunnel(ws)
        for request_id in range(2):  # two connections over one session, one after the other
            data, error = await tunnel.request(80, request_id, b"GET / HTTP/1.0\r\n\r\n")
            assert error == b""
            assert data.startswith(b"HTTP/1.") and PAGE.encode() in data
        data, error = await tunnel.request(81, 9, b"GET / HTTP/1.0\r\n\r\n")  # nothing listens there
        assert data == b"" and b"error forwarding port 81 to pod web" in error


async def test_port_forward_with_the_python_client(client: Client, namespace: str, node: LocalNode,
                                                   http_url: str) -> None:
    from kubernetes import client as k8s
    from kubernetes.stream import portforward

    await web_pod(client, namespace, node)

    def fetch() -> bytes:
        config = k8s.Configuration(host=http_url)
        api = k8s.CoreV1Api(k8s.ApiClient(config))
        forward = portforward(api.connect_get_namespaced_pod_portforward, "web", namespace, ports="80")
        sock = forward.socket(80)
        sock.settimeout(15)
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        sock.close()
        return answer

    answer = await asyncio.wait_for(asyncio.to_thread(fetch), 30)
    assert answer.startswith(b"HTTP/1.") and PAGE.encode() in answer


async def test_port_forward_needs_a_websocket(client: Client, namespace: str, node: LocalNode,
                                              http_url: str) -> None:
    await web_pod(client, namespace, node)
    url = f"{http_url}/api/v1/namespaces/{namespace}/pods/web/portforward"
    async with aiohttp.ClientSession() as http, http.post(
            url, headers={"Upgrade": "SPDY/3.1", "Connection": "Upgrade",
                          "X-Stream-Protocol-Version": "portforward.k8s.io"}) as answer:
        assert answer.status == 400
        assert "WebSocket" in (await answer.json())["message"]
    pod = await client.get(core_pb2.Pod, "web", namespace)
    assert pod.status.phase == "Running"  # the refused request touched nothing


# ---------------------------------------------------------------------------------------------- kubectl 1.32


def kubectl_argv(server: str, namespace: str, tmp: Path, *args: str) -> list[str]:
    config = tmp / "kubeconfig"  # empty: everything comes from the flags
    config.write_text("apiVersion: v1\nkind: Config\n")
    return [KUBECTL, f"--kubeconfig={config}", f"--cache-dir={tmp / 'cache'}", "--server", server,
            "-n", namespace, *args]


def kubectl(server: str, namespace: str, tmp: Path, *args: str, stdin: bytes | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(kubectl_argv(server, namespace, tmp, *args), input=stdin, capture_output=True,
                          timeout=timeout, check=False)


needs_kubectl = pytest.mark.skipif(not Path(KUBECTL).exists(), reason="kubectl is not installed")


@needs_kubectl
async def test_kubectl_exec_exits_with_the_commands_code_and_ends_stdin(
        client: Client, namespace: str, node: LocalNode, http_url: str, tmp_path: Path) -> None:
    await run_pod(client, namespace, node, "shell", "sleep", "3600")
    failed = await asyncio.to_thread(kubectl, http_url, namespace, tmp_path, "exec", "shell", "--",
                                     "sh", "-c", "echo out; exit 3")
    assert failed.returncode == 3, failed.stderr
    assert failed.stdout == b"out\n"
    piped = await asyncio.to_thread(kubectl, http_url, namespace, tmp_path, "exec", "-i", "shell", "--", "cat",
                                    stdin=b"hello through stdin\n")
    assert (piped.returncode, piped.stdout) == (0, b"hello through stdin\n"), piped.stderr
    missing = await asyncio.to_thread(kubectl, http_url, namespace, tmp_path, "exec", "nope", "--", "true")
    assert missing.returncode == 1 and b'pods "nope" not found' in missing.stderr
    # kubectl cp is `tar xf -` fed through stdin: it finishes only if stdin's end reaches tar.
    (tmp_path / "notes.txt").write_text("copied in\n")
    copied = await asyncio.to_thread(kubectl, http_url, namespace, tmp_path, "cp", str(tmp_path / "notes.txt"),
                                     "shell:/tmp/notes.txt")
    assert copied.returncode == 0, copied.stderr
    back = await asyncio.to_thread(kubectl, http_url, namespace, tmp_path, "exec", "shell", "--",
                                   "cat", "/tmp/notes.txt")
    assert back.stdout == b"copied in\n"


@needs_kubectl
async def test_kubectl_logs_tail_and_follow(client: Client, namespace: str, node: LocalNode, http_url: str,
                                            tmp_path: Path) -> None:
    await run_pod(client, namespace, node, "logger", "sh", "-c",
                  "for i in 1 2 3; do echo line $i; done; sleep 2; echo late; sleep 3600")
    tail = await asyncio.to_thread(kubectl, http_url, namespace, tmp_path, "logs", "logger", "--tail=1")
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout in (b"line 3\n", b"late\n")
    follow = await asyncio.create_subprocess_exec(*kubectl_argv(http_url, namespace, tmp_path, "logs", "-f",
                                                                "logger"), stdout=asyncio.subprocess.PIPE)
    try:
        assert follow.stdout is not None
        seen = b""
        while b"late\n" not in seen:
            seen += await asyncio.wait_for(follow.stdout.readline(), 15)
        assert seen.startswith(b"line 1\n")
        assert follow.returncode is None  # still following
    finally:
        follow.kill()
        await follow.wait()


@needs_kubectl
async def test_kubectl_port_forward_serves_the_pods_page(client: Client, namespace: str, node: LocalNode,
                                                         http_url: str, tmp_path: Path) -> None:
    await web_pod(client, namespace, node)
    forward = await asyncio.create_subprocess_exec(
        *kubectl_argv(http_url, namespace, tmp_path, "port-forward", "pod/web", ":80"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert forward.stdout is not None
        line = await asyncio.wait_for(forward.stdout.readline(), 20)
        match = re.search(rb"Forwarding from 127\.0\.0\.1:(\d+) -> 80", line)
        assert match, line
        for _ in range(2):  # two connections through the same session
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{int(match[1])}/") as page:
                assert page.status == 200
                assert (await page.text()).strip() == PAGE
        assert forward.returncode is None
    finally:
        forward.terminate()
        await forward.wait()


@needs_kubectl
async def test_kubectl_attach_follows_the_containers_output(client: Client, namespace: str, node: LocalNode,
                                                            http_url: str, tmp_path: Path) -> None:
    await run_pod(client, namespace, node, "talker", "sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; "
                  "sleep 0.2; done")
    attach = await asyncio.create_subprocess_exec(*kubectl_argv(http_url, namespace, tmp_path, "attach", "talker"),
                                                  stdout=asyncio.subprocess.PIPE)
    try:
        assert attach.stdout is not None
        first = await asyncio.wait_for(attach.stdout.readline(), 15)
        second = await asyncio.wait_for(attach.stdout.readline(), 5)
        assert first.startswith(b"tick ") and second.startswith(b"tick ")
        assert int(second.split()[1]) == int(first.split()[1]) + 1  # live, in order
    finally:
        attach.kill()
        await attach.wait()


def _kubectl_on_a_terminal(argv: list[str]) -> tuple[int, bytes]:
    """`kubectl exec -it shell -- sh` on a pseudo-terminal 30x90: ask its size, resize to 50x120, exit 4."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: kubectl on the terminal, as a user starts it
        os.execv(argv[0], argv)
    try:
        termios.tcsetwinsize(fd, (30, 90))
        out = _read_until(fd, b"# ", 20)  # busybox's prompt: the session is live
        os.write(fd, b"stty size\r")
        out += _read_until(fd, b"30 90", 10)
        termios.tcsetwinsize(fd, (50, 120))  # the kernel sends kubectl SIGWINCH
        time.sleep(0.5)
        os.write(fd, b"stty size\r")
        out += _read_until(fd, b"50 120", 10)
        os.write(fd, b"exit 4\r")
        with contextlib.suppress(AssertionError):
            out += _read_until(fd, b"exit code 4", 10)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out


@needs_kubectl
async def test_kubectl_exec_it_is_a_terminal_that_follows_resizes(client: Client, namespace: str,
                                                                  node: LocalNode, http_url: str,
                                                                  tmp_path: Path) -> None:
    await run_pod(client, namespace, node, "shell", "sleep", "3600")
    argv = kubectl_argv(http_url, namespace, tmp_path, "exec", "-it", "shell", "--", "sh")
    code, out = await asyncio.to_thread(_kubectl_on_a_terminal, argv)
    assert code == 4, out
    assert b"command terminated with exit code 4" in out
