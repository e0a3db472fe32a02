"""The Vagrant provider benchmark: `vagrant up` to every Node Ready, where the time goes, and memory.

    sudo .venv/bin/python -m bench.vagrant [--rebuild-box] [--keep]

Runs the repository's Vagrantfile (1 master + FLOTILLA_WORKERS workers, default
2) from nothing: optionally rebuilds the base box, then `vagrant up`, whose
trigger runs the bootstrap. Vagrant's own output is timestamped line by line
to split the time into domain creation, boot (to SSH), and the bootstrap,
whose steps the bootstrap records itself (~/.flotilla/clusters/vagrant/
timings.json). Then the resident memory of each Flotilla daemon on the master
and a worker (`ps` over `vagrant ssh`), and `vagrant destroy -f`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from provision.provider import cluster_dir as cluster_folder
from provision.vagrant import CLUSTER_NAME

REPO = Path(__file__).resolve().parents[1]
# Vagrant output lines that close a phase, per machine.
MARKS = {"Creating image (snapshot of base box volume)": "domain defined",
         "Starting domain.": "domain start", "Machine booted and ready!": "SSH up",
         "Running trigger: flotilla bootstrap": "bootstrap start"}


def timed(argv: list[str]) -> tuple[float, list[tuple[float, str]]]:
    """Run a command, returning its duration and each output line with its time since start."""
    started = time.monotonic()
    lines = []
    with subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic() - started, line.rstrip()))
            sys.stdout.write(line)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    return time.monotonic() - started, lines


def phases(lines: list[tuple[float, str]]) -> dict[str, float]:
    """First time each mark was seen, per machine ("master: SSH up" -> seconds since `vagrant up`)."""
    seen: dict[str, float] = {}
    for at, line in lines:
        machine = line.removeprefix("==> ").split(":", 1)[0].strip()
        for text, mark in MARKS.items():
            if text in line:
                seen.setdefault(f"{machine}: {mark}", round(at, 1))
    return seen


def memory(machine: str) -> dict[str, int]:
    """RSS (MiB) of each Flotilla daemon and containerd on a machine."""
    out = subprocess.run(["vagrant", "ssh", machine, "-c", "ps -eo rss=,args="], cwd=REPO, capture_output=True,
                         text=True, timeout=300).stdout
    rss: dict[str, int] = {}
    for line in out.splitlines():
        size, _, args = line.strip().partition(" ")
        for name in ("etcd", "docker-registry", "controlplane.apiserver", "controlplane.scheduler",
                     "controlplane.controllers", "controlplane.dns", "nodeagent.kubelet", "nodeagent.proxy",
                     "containerd --config"):
            if name in args and "containerd-shim" not in args:
                rss[name] = rss.get(name, 0) + int(size) // 1024
    return rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild-box", action="store_true", help="time `python -m provision box build --force`")
    parser.add_argument("--keep", action="store_true", help="leave the VMs running")
    args = parser.parse_args()
    report: dict[str, object] = {}
    if args.rebuild_box:
        report["box build"] = round(timed([sys.executable, "-m", "provision", "box", "build", "--force"])[0], 1)
    total, lines = timed(["vagrant", "up", "--provider=libvirt"])
    report["vagrant up (to every Node Ready)"] = round(total, 1)
    report["phases (s since vagrant up)"] = phases(lines)
    timings = cluster_folder(CLUSTER_NAME) / "timings.json"
    if timings.exists():
        report["bootstrap steps (s)"] = json.loads(timings.read_text())
    report["RSS MiB master"] = memory("master")
    report["RSS MiB w1"] = memory("w1")
    if not args.keep:
        report["vagrant destroy -f"] = round(timed(["vagrant", "destroy", "-f"])[0], 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
