"""Issue 17: nodes pull from Docker Hub only when the cluster is online, and the test suite never is.

containerd's hosts.toml for docker.io names lists the cluster registry first and
https://registry-1.docker.io second on an online cluster; on an offline one
(`kctl cluster up --offline`, the ssh inventory's `offline: true`, and every
cluster the test suite makes) only the cluster registry. No network, no root.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from provision import components, localdaemons, localplan
from provision.containerd import DOCKER_HUB, NodeRuntime
from provision.provider import Options
from provision.ssh import parse_inventory

REGISTRY = "192.168.94.1:5000"


def docker_io_hosts(runtime: NodeRuntime) -> list[str]:
    """The URLs containerd tries for docker.io names, in order ([host] tables, then `server`)."""
    parsed = tomllib.loads(runtime.registry_hosts()["docker.io"])
    return [*parsed.get("host", {}), parsed["server"]]


def test_online_node_tries_the_cluster_registry_first_then_docker_hub(tmp_path: Path) -> None:
    hosts = docker_io_hosts(NodeRuntime("n", tmp_path, registry=REGISTRY, offline=False))
    assert hosts[0] == f"http://{REGISTRY}"
    assert hosts[1] == DOCKER_HUB == "https://registry-1.docker.io"


def test_offline_node_pulls_docker_io_names_only_from_the_cluster_registry(tmp_path: Path) -> None:
    runtime = NodeRuntime("n", tmp_path, registry=REGISTRY, offline=True)
    assert set(docker_io_hosts(runtime)) == {f"http://{REGISTRY}"}
    assert "docker.com" not in "".join(runtime.registry_hosts().values())
    # Without a registry, docker.io points at a closed local port: a missing image fails at once.
    assert docker_io_hosts(NodeRuntime("n", tmp_path)) == ["http://127.0.0.1:1", "http://127.0.0.1:1"]


def test_the_default_test_cluster_is_offline(tmp_path: Path) -> None:
    assert os.environ["FLOTILLA_OFFLINE"] == "1"
    state = localplan.new_state(Options("offline-unit", workers=1, subnet="192.168.94.0/24", bridge="flt94o"))
    assert state.offline
    for info in state.node_infos():
        node = localdaemons.node(state, info)
        assert node.runtime.offline
        written = tmp_path / info.name
        node.runtime.base = written
        node.runtime.write_registry_hosts()
        texts = [p.read_text() for p in written.glob("certs.d/*/hosts.toml")]
        assert texts and not any("docker.io\"" in t or "registry-1" in t for t in texts)
        assert node.settings.get("registry_offline") is True


def test_online_is_a_choice_carried_to_the_nodes_and_kubelets() -> None:
    state = localplan.new_state(Options("online-unit", workers=1, subnet="192.168.94.0/24", bridge="flt94o",
                                        offline=False))
    plan = state.components_plan()
    assert not plan.offline
    worker = next(n for n in state.node_infos() if not n.control_plane)
    assert DOCKER_HUB in docker_io_hosts(localdaemons.node(state, worker).runtime)
    assert "registry_offline" not in components.kubelet_settings(plan, worker.plan())


def test_ssh_inventory_offline_setting() -> None:
    hosts = [{"name": "m", "address": "10.0.0.1", "user": "u", "key_file": "k", "role": "master"}]
    assert parse_inventory({"hosts": hosts, "offline": True}).offline
    assert not parse_inventory({"hosts": hosts}).offline
