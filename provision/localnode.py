"""A whole node on this machine: its containerd, its base images and its kubelet process.

Used by the tests and the benchmark today, and the seam for the local
provider's worker nodes: `LocalNode.start()` writes the per-node containerd
config and starts containerd, imports the pause and busybox images, writes the
kubelet's config file and starts `python -m nodeagent.kubelet.main` against the
apiserver. `cleanup()` leaves the host as it was (see containerd.py).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.volumes.mounts import unmount_all_under
from provision.containerd import NodeRuntime
from provision.images.oci import import_base_images
from provision.processes import Process


def free_pod_cidr(first: int = 200, last: int = 254) -> str:
    """A 10.244.X.0/24 that no route on this host uses yet (so nodes of concurrent test runs never share one)."""
    import random
    import subprocess

    routes = subprocess.run(["ip", "-o", "-4", "route", "show"], capture_output=True, text=True).stdout
    used = {line.split()[0] for line in routes.splitlines() if line}
    choices = [f"10.244.{x}.0/24" for x in range(first, last + 1)]
    random.shuffle(choices)  # two runs starting together rarely pick the same one
    for cidr in choices:
        if cidr not in used:
            return cidr
    raise RuntimeError("no free pod CIDR in 10.244.200.0-10.244.254.0")


@dataclass
class LocalNode:
    name: str
    base: Path
    server: str
    node_ip: str
    pod_cidr: str
    settings: dict[str, Any] = field(default_factory=dict)  # kubelet config overrides
    runtime: NodeRuntime = field(init=False)
    kubelet: Process | None = None

    def __post_init__(self) -> None:
        self.runtime = NodeRuntime(self.name, self.base / "containerd")

    @property
    def config_path(self) -> Path:
        return self.base / "kubelet.yaml"

    def kubelet_config(self) -> KubeletConfig:
        rt = self.runtime
        values: dict[str, Any] = {
            "server": self.server, "node_name": self.name, "node_ip": self.node_ip,
            "containerd_socket": str(rt.socket), "pod_cidr": self.pod_cidr,
            "root_dir": str(self.base / "kubelet"), "cgroup_root": rt.cgroup_root,
            "cni_conf_dir": str(rt.cni_conf_dir), "cni_data_dir": str(rt.cni_data_dir), "cni_bridge": rt.bridge,
            "port": 0, **self.settings,
        }
        return KubeletConfig(**values)

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.runtime.start()
        import_base_images(str(self.runtime.socket))
        self.start_kubelet()

    def kubelet_argv(self) -> list[str]:
        config = self.kubelet_config()
        self.config_path.write_text(config.to_yaml())
        return [sys.executable, "-m", "nodeagent.kubelet.main", "--server", self.server, "--node-name", self.name,
                "--node-ip", self.node_ip, "--containerd-socket", str(self.runtime.socket),
                "--config", str(self.config_path)]

    def start_kubelet(self) -> None:
        self.kubelet = Process(f"kubelet-{self.name}", self.kubelet_argv(), self.base / "kubelet.log")
        self.kubelet.start()

    def stop_kubelet(self) -> None:
        if self.kubelet is not None:
            self.kubelet.stop(timeout=10)

    def cleanup(self) -> None:
        """Stop the node and remove what it mounted: containerd's mounts, then the kubelet's own (tmpfs
        volumes of pods that were still running), so the node's directory can be deleted."""
        self.stop_kubelet()
        self.runtime.cleanup()
        unmount_all_under(self.base)


def main(argv: list[str] | None = None) -> int:
    """Write one node's containerd.toml and kubelet.yaml, and print the commands that start it."""
    import argparse
    import shlex

    parser = argparse.ArgumentParser(prog="python -m provision.localnode", description=main.__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--base", required=True, help="the node's directory, e.g. /var/lib/flotilla/nodes/node-1")
    parser.add_argument("--server", default="127.0.0.1:6443")
    parser.add_argument("--node-ip", required=True)
    parser.add_argument("--pod-cidr", default="")
    parser.add_argument("--port", type=int, default=10250, help="the kubelet API port")
    opts = parser.parse_args(argv)
    node = LocalNode(opts.name, Path(opts.base).resolve(), opts.server, opts.node_ip, opts.pod_cidr,
                     {"port": opts.port})
    rt = node.runtime
    for d in (rt.base, rt.runc_root, rt.cni_conf_dir, rt.cni_data_dir):
        d.mkdir(parents=True, exist_ok=True)
    rt.config_path.write_text(rt.config())
    argv_kubelet = node.kubelet_argv()
    argv_kubelet[:3] = [str(Path(sys.executable).parent / "flotilla-kubelet")]
    print(f"# wrote {rt.config_path} and {node.config_path}; start the node with:")
    print(f"containerd --config {rt.config_path} &")
    print(f"{shlex.quote(sys.executable)} -m provision.images.oci {rt.socket}")
    print(shlex.join(argv_kubelet))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
