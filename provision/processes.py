"""Start the control plane's processes on this machine: etcd and the apiserver.

Used by the test fixtures and the benchmarks; the local provider
(`kctl cluster up`) and the SSH/Vagrant bootstrap run the same etcd command
line (`etcd_argv`). Each process gets a log file and waits until it answers
before the call returns.

etcd has two modes. With `EtcdTLS` (every cluster a provider makes) it speaks
only TLS, on its client and its peer URL, and takes only clients whose
certificate its own CA signed (`--client-cert-auth`): the apiserver's and the
backup tool's (provision/components.py makes them), so a local user or a pod
that reaches its port gets nowhere. Without it (the test fixtures, the
benchmarks) it listens in plaintext on loopback, for throwaway data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def etcd_binary() -> str:
    found = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if not found:
        raise RuntimeError("etcd is not installed: apt-get install etcd-server")
    return found


# Where daemons keep their bytecode when the caller said not to write it beside the sources.
PYCACHE = Path("/var/cache/flotilla/pycache")


def daemon_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a daemon starts with: this process's, plus `extra`.

    With PYTHONDONTWRITEBYTECODE set (no .pyc files beside the sources), every Python daemon would compile
    each module it imports at every start: a quarter of the start's CPU, paid by some thirty daemons at
    once in a `cluster up --masters 3`. The daemons keep their bytecode under PYCACHE instead
    (PYTHONPYCACHEPREFIX), which writes nothing beside the sources either.
    """
    env = {**os.environ, **(extra or {})}
    if env.get("PYTHONDONTWRITEBYTECODE") and not env.get("PYTHONPYCACHEPREFIX"):
        with contextlib.suppress(OSError):  # not root: compile as before
            PYCACHE.mkdir(parents=True, exist_ok=True)
            if os.access(PYCACHE, os.W_OK):
                del env["PYTHONDONTWRITEBYTECODE"]
                env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


@dataclass
class Process:
    """A child process with its log, stoppable politely or with SIGKILL."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=daemon_env(self.env), start_new_session=True)
        log.close()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_until(check: object, what: str, proc: Process, timeout: float = 20.0) -> None:
    """Wait for `check()` to pass; a process that never gets there is killed, not leaked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited while starting:\n{proc.tail()}")
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s:\n{proc.tail()}")


@dataclass(frozen=True)
class EtcdTLS:
    """etcd's certificates (paths as etcd reads them): its CA, which must have signed every client's and
    peer's certificate, its serving pair for the client URL and its pair for the peer URL."""

    ca: str
    cert: str
    key: str
    peer_cert: str
    peer_key: str


@dataclass(frozen=True)
class EtcdClientFiles:
    """How a client proves itself to a TLS etcd: the etcd CA and a client pair it signed (paths)."""

    ca: str
    cert: str
    key: str


@dataclass
class Etcd:
    data_dir: Path
    client_port: int
    peer_port: int
    process: Process
    client_tls: EtcdClientFiles | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.client_tls else 'http'}://127.0.0.1:{self.client_port}"

    def healthy(self) -> bool:
        context = None
        if self.client_tls is not None:
            context = ssl.create_default_context(cafile=self.client_tls.ca)
            context.load_cert_chain(self.client_tls.cert, self.client_tls.key)
        with urllib.request.urlopen(f"{self.url}/health", timeout=1, context=context) as reply:
            return b'"true"' in reply.read()


@dataclass(frozen=True)
class EtcdMember:
    """One member of a several-member etcd: its name (its node's) and address (client and peer URLs on it)."""

    name: str
    address: str


def etcd_argv(data_dir: Path, client_port: int, peer_port: int, tls: EtcdTLS | None = None, *,
              member: EtcdMember | None = None, cluster: tuple[EtcdMember, ...] = (),
              initial_state: str = "new") -> list[str]:
    """One etcd member on loopback (shared by start_etcd, the local provider's supervisor and the units).

    With `tls`, both URLs are https and both require a certificate the etcd CA signed: there is no plaintext
    listener at all, not even on loopback. Without it, plaintext (test fixtures only).

    With `member`, one of the several members `cluster` lists (kubeadm's stacked etcd): client URLs on its
    address and loopback, peer URL on its address, `--initial-cluster` naming every member, and
    `initial_state` "existing" for a member added to a running cluster (`etcdctl member add` first).
    """
    scheme = "https" if tls else "http"
    host = member.address if member else "127.0.0.1"
    client, peer = f"{scheme}://{host}:{client_port}", f"{scheme}://{host}:{peer_port}"
    # A member on a node's address also answers on the node's loopback (its apiserver's and etcdctl's way in).
    on_loopback = member is not None and not member.address.startswith("127.")
    listen_client = client + (f",{scheme}://127.0.0.1:{client_port}" if on_loopback else "")
    initial = ",".join(f"{m.name}={scheme}://{m.address}:{peer_port}" for m in cluster) if member else \
        f"flotilla={peer}"
    argv = [
        etcd_binary(), "--name", member.name if member else "flotilla", "--data-dir", str(data_dir),
        "--listen-client-urls", listen_client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", initial, "--initial-cluster-state", initial_state,
        # The apiserver's objects are small but lists are large; 3.4 default quota is 2 GiB.
        "--quota-backend-bytes", str(4 * 1024**3), "--log-level", "warn", "--logger", "zap",
    ]
    if tls is not None:
        argv += ["--cert-file", tls.cert, "--key-file", tls.key, "--client-cert-auth", "--trusted-ca-file", tls.ca,
                 "--peer-cert-file", tls.peer_cert, "--peer-key-file", tls.peer_key, "--peer-client-cert-auth",
                 "--peer-trusted-ca-file", tls.ca]
    return argv


def start_etcd(data_dir: Path, *, client_port: int = 0, peer_port: int = 0, log_dir: Path | None = None,
               tls: EtcdTLS | None = None, client_tls: EtcdClientFiles | None = None) -> Etcd:
    """One etcd member on loopback, its data in `data_dir` (with `tls`, `client_tls` checks it is up)."""
    if (tls is None) != (client_tls is None):
        raise ValueError("a TLS etcd needs both its own certificates and a client's to check it")
    data_dir.mkdir(parents=True, exist_ok=True)
    client_port = client_port or free_port()
    peer_port = peer_port or free_port()
    proc = Process("etcd", etcd_argv(data_dir, client_port, peer_port, tls), (log_dir or data_dir.parent) / "etcd.log",
                   env={"ETCD_UNSUPPORTED_ARCH": os.environ.get("ETCD_UNSUPPORTED_ARCH", "")})
    proc.start()
    etcd = Etcd(data_dir, client_port, peer_port, proc, client_tls)
    wait_until(etcd.healthy, "etcd", proc, timeout=60)
    return etcd


@dataclass
class ApiServer:
    address: str
    process: Process

    def answers(self) -> bool:
        host, _, port = self.address.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True


def start_apiserver(etcd_url: str, log_dir: Path, *, port: int = 0, extra: list[str] | None = None) -> ApiServer:
    """The apiserver in its own process (so tests can SIGKILL it), on loopback."""
    address = f"127.0.0.1:{port or free_port()}"
    argv = [sys.executable, "-m", "controlplane.apiserver.main", "--etcd-servers", etcd_url,
            "--listen", address, *(extra or [])]
    proc = Process("apiserver", argv, log_dir / "apiserver.log")
    proc.start()
    server = ApiServer(address, proc)
    wait_until(server.answers, "apiserver", proc, timeout=60)
    return server


@dataclass
class ControlPlane:
    """A throwaway etcd + apiserver in a temporary folder (benchmarks)."""

    base: Path
    etcd: Etcd
    apiserver: ApiServer


@contextlib.contextmanager
def throwaway_control_plane(prefix: str = "flotilla-bench-") -> Iterator[ControlPlane]:
    """Start etcd and a quiet apiserver in a temporary folder; stop both and remove it on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp, contextlib.ExitStack() as stop:
        base = Path(tmp)
        etcd = start_etcd(base / "etcd", log_dir=base)
        stop.callback(etcd.process.stop)
        apiserver = start_apiserver(etcd.url, base, extra=["--log-level", "WARNING"])
        stop.callback(apiserver.process.stop)
        yield ControlPlane(base, etcd, apiserver)
