"""This node's haproxy: starting it, reloading it without dropping connections, and setting its slots.

haproxy runs in master-worker mode (`-W`) as a child of the agent, inside the
node's network namespace on a local cluster (`ip netns exec NODE haproxy`).
Changing the configuration is `apply`: write the files, check them with
`haproxy -c` (a broken file never reaches the running proxy), then SIGUSR2 to
the master, which starts new workers on the same listening sockets (handed
over through the admin socket, `expose-fd listeners`) while the old workers
finish the connections they hold: established connections are not dropped.

When only endpoints changed (same `shape`), nothing is reloaded:
`set_slots` rewrites the changed server slots through the runtime API
(`set server B/sN addr IP port P`, then `state ready`, or `state maint` for a
slot emptied), and the new configuration is written for the next start or
reload to begin from.

haproxy is bound to the agent's life (PR_SET_PDEATHSIG): if the agent dies,
haproxy gets SIGUSR1, its soft stop — listeners close, open connections
finish — so a restarted agent can bind the ports again.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime
import logging
import os
import shutil
import signal
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nodeagent.ingress.config import SERVER_PREFIX, Rendered, Settings, Slots

log = logging.getLogger(__name__)

HAPROXY = "/usr/sbin/haproxy"
_PR_SET_PDEATHSIG = 1
START_TIMEOUT = 10.0  # seconds for a new haproxy's worker to be up


class HaproxyError(Exception):
    """haproxy refused a configuration, or would not start."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: soft-stop haproxy when the agent goes.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGUSR1, 0, 0, 0)


def self_signed_certificate(common_name: str = "flotilla-ingress-default") -> bytes:
    """A PEM certificate + key for names no Ingress has a certificate for (haproxy needs one to bind TLS)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class Haproxy:
    """One haproxy master process and the files it reads."""

    def __init__(self, settings: Settings, *, netns: str | None = None, binary: str = HAPROXY) -> None:
        self.settings = settings
        self.netns = netns
        self.binary = binary
        self.process: asyncio.subprocess.Process | None = None
        self.config_path = settings.state_dir / "haproxy.cfg"
        self._log = settings.state_dir / "haproxy.log"

    def _enter(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def prepare(self) -> None:
        """The state directory and the default certificate (made once, kept across restarts)."""
        (self.settings.state_dir / "certs").mkdir(parents=True, exist_ok=True)
        os.chmod(self.settings.state_dir, 0o700)
        if not self.running:
            # A socket left by an haproxy of an earlier run would be taken for a live one's.
            self.settings.admin_socket.unlink(missing_ok=True)
        if not self.settings.default_certificate.exists():
            _write(self.settings.default_certificate, self_signed_certificate())

    def write(self, rendered: Rendered, certificates: dict[str, bytes], path: Path | None = None) -> Path:
        """Write the certificates, the crt-list and the configuration (to `path`, default haproxy.cfg)."""
        for name, pem in certificates.items():
            target = self.settings.certificate(name)
            if not target.exists() or target.read_bytes() != pem:
                _write(target, pem)
        _write(self.settings.crt_list, rendered.crt_list.encode())
        target = path or self.config_path
        _write(target, rendered.config.encode())
        return target

    async def check(self, path: Path) -> None:
        """`haproxy -c`: refuse a configuration haproxy would not load."""
        proc = await asyncio.create_subprocess_exec(self.binary, "-c", "-q", "-f", str(path),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise HaproxyError(f"haproxy refused the configuration: {out.decode(errors='replace').strip()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        """Start the master (with haproxy.cfg as written)."""
        out = os.open(self._log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self._enter(), self.binary, "-W", "-f", str(self.config_path), stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=out, preexec_fn=_die_with_parent)
        finally:
            os.close(out)
        # Ready once its worker answers on the admin socket (its listeners are bound by then); a
        # master that cannot bind its ports exits instead: say so now rather than at the next reload.
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while self.running and asyncio.get_running_loop().time() < deadline:
            try:
                await self.runtime("show info")
            except OSError:
                await asyncio.sleep(0.05)
                continue
            log.info("haproxy started (pid %d), listening on %s:%d and :%d", self.process.pid,
                     self.settings.bind_address, self.settings.http_port, self.settings.https_port)
            return
        if self.running:
            said = self._log.read_bytes()[-500:].decode(errors="replace").strip()
            await self.stop()  # which removes the state directory, the log with it
            raise HaproxyError(f"haproxy did not answer on its admin socket within {START_TIMEOUT:.0f} s: {said}")
        raise HaproxyError(f"haproxy exited with {self.process.returncode} at start; see {self._log}")

    async def apply(self, rendered: Rendered, certificates: dict[str, bytes]) -> None:
        """Check, write and load a new configuration: start haproxy, or reload it gracefully."""
        self.prepare()
        candidate = self.write(rendered, certificates, self.settings.state_dir / "haproxy.cfg.new")
        await self.check(candidate)
        candidate.replace(self.config_path)
        if not self.running:
            await self.start()
            return
        assert self.process is not None
        before = await self._worker_pid()
        os.kill(self.process.pid, signal.SIGUSR2)  # the master re-reads haproxy.cfg; old workers drain
        # Until the new worker owns the admin socket, runtime commands (slot changes) would reach the
        # draining one and be lost with it: the reload is done once the socket answers from a new pid.
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while self.running and asyncio.get_running_loop().time() < deadline:
            now = await self._worker_pid()
            if now is not None and now != before:
                break
            await asyncio.sleep(0.05)
        else:
            log.warning("haproxy reload: no new worker answered within %.0f s", START_TIMEOUT)
        log.info("haproxy reloaded")

    async def _worker_pid(self) -> str | None:
        """The pid of the worker answering on the admin socket, or None while none answers."""
        try:
            info = await self.runtime("show info")
        except OSError:
            return None
        return next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("Pid:")), None)

    async def set_slots(self, before: Slots, after: Slots) -> int:
        """Rewrite, through the runtime API, the server slots that differ; returns how many changed."""
        commands: list[str] = []
        for backend, slots in after.items():
            old = before.get(backend, ())
            for n, slot in enumerate(slots, start=1):
                if n <= len(old) and old[n - 1] == slot:
                    continue
                server = f"{backend}/{SERVER_PREFIX}{n}"
                if slot is None:
                    commands.append(f"set server {server} state maint")
                else:
                    commands += [f"set server {server} addr {slot[0]} port {slot[1]}",
                                 f"set server {server} state ready"]
        if commands:
            answer = await self.runtime(";".join(commands))
            if "No such" in answer or "Require" in answer or "Invalid" in answer:
                raise HaproxyError(f"haproxy refused slot changes: {answer.strip()}")
        return sum(1 for c in commands if "state" in c)

    async def runtime(self, command: str) -> str:
        """One line to the admin socket; its whole answer."""
        reader, writer = await asyncio.open_unix_connection(str(self.settings.admin_socket))
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            return (await reader.read()).decode(errors="replace")
        finally:
            writer.close()

    async def stop(self) -> None:
        """Soft stop (listeners close at once, open connections finish), then remove the state directory."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGUSR1)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        # Certificates' keys included: nothing of the node's ingress outlives it.
        shutil.rmtree(self.settings.state_dir, ignore_errors=True)


def _write(path: Path, data: bytes) -> None:
    """Replace `path` atomically (haproxy may read it at any moment), readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)
