"""A local cluster's supervisor: one small process that keeps the cluster's daemons running.

`kctl cluster up` writes the daemons to start into `<cluster>/supervisor.json`
(name, argv, log file, how to tell it is ready) and detaches
`python -m provision.supervisor <cluster folder>`. The supervisor starts them in
order, each once the one before is ready (etcd before the apiserver, containerd
before its kubelet), then watches them: a daemon that exits is started again
after a back-off (1 s doubling to 30 s, reset after a minute of running), like
systemd's `Restart=always`. The running PIDs are kept in `<cluster>/pids.json`
so `kctl cluster status` can show them and `kctl cluster down` can still kill
them if the supervisor itself was killed. On SIGTERM it stops the daemons in
reverse order (clients before the apiserver, the apiserver before etcd).

The set of daemons may change while it runs, as `systemctl daemon-reload`
followed by starting and stopping units: `kctl cluster add-worker` and
`remove-worker` rewrite supervisor.json and send SIGHUP, and the supervisor
starts the daemons the file gained (in the file's order, each once the one
before is ready, as at start) and stops those it lost (in reverse order). A
daemon whose spec merely changed keeps running; its next restart uses the new
spec. `reloadable(pid)` tells a caller whether a supervisor catches SIGHUP at
all (one from before this existed would die of it).

It also keeps their logs bounded: a log past `LOG_MAX_BYTES` is copied to
`<log>.1` (older copies shift up to `.LOG_BACKUPS`) and truncated in place,
logrotate's copytruncate. The daemons hold their log open for appending
(O_APPEND), so they go on writing at the new end without being told; a flood
of errors costs at most (1 + LOG_BACKUPS) x LOG_MAX_BYTES of disk per daemon.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from provision.processes import daemon_env

BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0
BACKOFF_RESET = 60.0  # a daemon that ran this long is healthy again: its next crash restarts fast
READY_TIMEOUT = 60.0
LOG_MAX_BYTES = 20 * 1024 * 1024
LOG_BACKUPS = 3
LOG_CHECK_INTERVAL = 10.0  # seconds between log size checks


@dataclass
class DaemonSpec:
    """One supervised daemon; `ready` is "tcp:HOST:PORT", "path:FILE" or "" (started is ready)."""

    name: str
    argv: list[str]
    log: str
    ready: str = ""
    env: dict[str, str] = field(default_factory=dict)


def write_specs(folder: Path, specs: list[DaemonSpec]) -> None:
    """supervisor.json, replaced in one step: a running supervisor may read it at any moment (SIGHUP)."""
    tmp = folder / "supervisor.json.tmp"
    tmp.write_text(json.dumps([asdict(s) for s in specs], indent=2))
    tmp.replace(folder / "supervisor.json")


def read_specs(folder: Path) -> list[DaemonSpec]:
    return [DaemonSpec(**s) for s in json.loads((folder / "supervisor.json").read_text())]


def alive(pid: int) -> bool:
    """Running (a zombie is not; one that is our own child, as the supervisor is in tests, is reaped here)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False
    except PermissionError:
        return True


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM, then SIGKILL once `timeout` has passed: a supervisor, or a daemon its supervisor left behind."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def reloadable(pid: int) -> bool:
    """Whether process `pid` catches SIGHUP (its SigCgt mask): a supervisor that reloads its specs on it.

    SIGHUP's default action ends a process, so nobody should send it to a supervisor that predates reloading.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) & (1 << (signal.SIGHUP - 1)))


def read_pids(folder: Path) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in json.loads((folder / "pids.json").read_text()).items()}
    except (OSError, ValueError):
        return {}


def is_ready(spec: DaemonSpec) -> bool:
    kind, _, target = spec.ready.partition(":")
    if kind == "tcp":
        host, _, port = target.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return True
        except OSError:
            return False
    if kind == "path":
        return Path(target).exists()
    return True


def rotate(path: Path, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS) -> bool:
    """Copy-and-truncate `path` if it is past `max_bytes`, keeping `backups` older copies; True if rotated."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except OSError:
        return False
    for index in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{index + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    # Lines written between the copy and the truncation are lost, as with logrotate's copytruncate.
    with open(path, "r+b") as log:
        log.truncate(0)
    return True


@dataclass
class Supervised:
    spec: DaemonSpec
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_INITIAL
    next_start: float = 0.0

    def start(self) -> None:
        with open(self.spec.log, "ab") as log:
            # A session of its own: a signal meant for the supervisor does not hit the daemons.
            self.popen = subprocess.Popen(self.spec.argv, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=daemon_env(self.spec.env),
                                          start_new_session=True)
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


class Supervisor:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.daemons = [Supervised(s) for s in read_specs(folder)]
        self.stopping = False
        self.reload_requested = False
        self.logs_checked = 0.0

    def log(self, message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

    def save_pids(self) -> None:
        pids = {d.spec.name: d.popen.pid for d in self.daemons if d.popen is not None and d.alive()}
        tmp = self.folder / "pids.json.tmp"
        tmp.write_text(json.dumps(pids, indent=2))
        tmp.replace(self.folder / "pids.json")

    def start_all(self) -> None:
        self.start_in_order(self.daemons)
        if not self.stopping:
            (self.folder / "supervisor.ready").write_text(str(os.getpid()))

    def start_in_order(self, daemons: list[Supervised]) -> None:
        """Start each daemon once the one before is ready (or has had READY_TIMEOUT to be)."""
        for daemon in daemons:
            if self.stopping:
                return
            daemon.start()
            self.log(f"started {daemon.spec.name} (pid {daemon.popen.pid if daemon.popen else '?'})")
            self.save_pids()
            deadline = time.monotonic() + READY_TIMEOUT
            while not self.stopping and daemon.alive() and not is_ready(daemon.spec) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not daemon.alive() or not is_ready(daemon.spec):
                # Keep going: the watch loop restarts it, and its dependants retry on their own.
                self.log(f"{daemon.spec.name} is not ready; see {daemon.spec.log}")

    def reload(self) -> None:
        """SIGHUP: make the running daemons those supervisor.json names now (a node added or removed)."""
        self.reload_requested = False
        try:
            specs = read_specs(self.folder)
        except (OSError, ValueError, TypeError) as err:
            self.log(f"reload: cannot read supervisor.json ({err}); nothing changed")
            return
        wanted = {spec.name for spec in specs}
        for daemon in reversed([d for d in self.daemons if d.spec.name not in wanted]):
            daemon.stop()
            self.log(f"stopped {daemon.spec.name} (no longer in supervisor.json)")
        kept = {d.spec.name: d for d in self.daemons if d.spec.name in wanted}
        added: list[Supervised] = []
        self.daemons = []
        for spec in specs:
            running = kept.get(spec.name)
            if running is not None:
                running.spec = spec  # used from its next restart on
            daemon = running or Supervised(spec)
            if running is None:
                added.append(daemon)
            self.daemons.append(daemon)
        self.save_pids()
        self.start_in_order(added)

    def watch_once(self) -> None:
        now = time.monotonic()
        changed = False
        for daemon in self.daemons:
            if daemon.alive() or self.stopping:
                continue
            if daemon.next_start == 0.0:
                code = daemon.popen.returncode if daemon.popen else None
                if now - daemon.started_at > BACKOFF_RESET:
                    daemon.backoff = BACKOFF_INITIAL
                daemon.next_start = now + daemon.backoff
                self.log(f"{daemon.spec.name} exited ({code}); restarting in {daemon.backoff:.0f}s")
                daemon.backoff = min(daemon.backoff * 2, BACKOFF_MAX)
            elif now >= daemon.next_start:
                daemon.next_start = 0.0
                daemon.start()
                self.log(f"restarted {daemon.spec.name} (pid {daemon.popen.pid if daemon.popen else '?'})")
                changed = True
        if changed:
            self.save_pids()

    def rotate_logs(self) -> None:
        now = time.monotonic()
        if now - self.logs_checked < LOG_CHECK_INTERVAL:
            return
        self.logs_checked = now
        for path in {Path(d.spec.log) for d in self.daemons} | {self.folder / "logs" / "supervisor.log"}:
            if rotate(path):
                self.log(f"rotated {path}")

    def stop_all(self) -> None:
        for daemon in reversed(self.daemons):
            daemon.stop()
            self.log(f"stopped {daemon.spec.name}")
        (self.folder / "pids.json").unlink(missing_ok=True)

    def run(self) -> None:
        def on_term(signum: int, frame: object) -> None:
            self.stopping = True

        def on_hup(signum: int, frame: object) -> None:
            self.reload_requested = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)
        self.start_all()
        while not self.stopping:
            if self.reload_requested:
                self.reload()
            self.watch_once()
            self.rotate_logs()
            time.sleep(0.5)
        self.stop_all()


def main(argv: list[str] | None = None) -> int:
    """`python -m provision.supervisor FOLDER`: run the daemons listed in FOLDER/supervisor.json."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m provision.supervisor CLUSTER_FOLDER", file=sys.stderr)
        return 2
    Supervisor(Path(args[0])).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
