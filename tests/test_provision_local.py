"""The local provider's pure parts and its supervisor, without root or network namespaces.

Given a cluster plan, workers sit at .101, .102 with podCIDRs 10.244.1.0/24,
10.244.2.0/24; given a supervisor, a daemon that dies is started again and all
of them stop with the supervisor. (The whole cluster is tests/e2e/.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from provision import local
from provision.supervisor import DaemonSpec, read_pids, write_specs


def test_plan_places_workers_like_the_books_vagrantfile() -> None:
    nodes = local.plan("demo", workers=3, subnet="192.168.77.0/24", bridge="flt77", pod_network="10.244.0.0/16")
    assert [(n.name, n.address, n.pod_cidr, n.host_veth) for n in nodes] == [
        ("demo-worker-1", "192.168.77.101", "10.244.1.0/24", "flt77-w1"),
        ("demo-worker-2", "192.168.77.102", "10.244.2.0/24", "flt77-w2"),
        ("demo-worker-3", "192.168.77.103", "10.244.3.0/24", "flt77-w3"),
    ]


def test_kube_dns_points_at_the_master() -> None:
    service, endpoints = list(yaml.safe_load_all(local.dns_manifest("192.168.77.1")))[1:]
    assert service["spec"]["clusterIP"] == local.DNS_SERVICE_IP
    assert endpoints["subsets"][0]["addresses"] == [{"ip": "192.168.77.1"}]
    assert {p["protocol"] for p in endpoints["subsets"][0]["ports"]} == {"UDP", "TCP"}


def _wait_for(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_supervisor_restarts_a_daemon_that_dies_and_stops_all_on_sigterm(tmp_path: Path) -> None:
    write_specs(tmp_path, [
        DaemonSpec("first", ["sleep", "300"], str(tmp_path / "first.log")),
        DaemonSpec("second", ["sleep", "300"], str(tmp_path / "second.log")),
    ])
    supervisor = subprocess.Popen([sys.executable, "-m", "provision.supervisor", str(tmp_path)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (tmp_path / "supervisor.ready").exists() and len(read_pids(tmp_path)) == 2)
        first = read_pids(tmp_path)["first"]
        os.kill(first, signal.SIGKILL)
        _wait_for(lambda: read_pids(tmp_path).get("first", first) != first)
        pids = read_pids(tmp_path).values()
        assert all(_alive(pid) for pid in pids)
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(30)
        assert not any(_alive(pid) for pid in pids)
        assert read_pids(tmp_path) == {}
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()


def test_the_nginx_stand_in_says_what_it_is() -> None:
    import io
    import json
    import tarfile

    from provision import images

    with tarfile.open(fileobj=io.BytesIO(images.stand_in_nginx_archive())) as archive:
        index = archive.extractfile("index.json")
        assert index is not None
        manifest = json.load(index)["manifests"][0]
    assert manifest["annotations"]["io.containerd.image.name"] == images.NGINX_IMAGE
    assert b"not available" in images.STAND_IN_PAGE
