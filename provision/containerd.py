"""Run one node's containerd: its config, its process, and its complete teardown.

A Flotilla node is a containerd plus a kubelet. Several nodes may share one
machine (tests, the local provider), so every containerd gets its own root,
state, socket, runc root, CNI config directory and host-local data directory
under one base directory, and its pods' cgroups live under a per-node prefix.
The settings below are the ones docs/containerd.md explains as
necessary for containerd 1.6 on these machines; each carries its reason.

Images: with a cluster `registry` (host:port of the master's registry), the
node pulls over plain HTTP from it: containerd's registry `config_path` holds a
hosts.toml per registry host, one making `<registry>` itself plain HTTP and one
for docker.io listing the cluster registry first (a mirror with pull and
resolve), then Docker Hub's own registry (https://registry-1.docker.io), so
`nginx` = docker.io/library/nginx comes from the cluster registry when it has
it and from Docker Hub otherwise; other registries (quay.io, ghcr.io, ...) are
reached as containerd does by default. `offline` (air-gapped: `kctl cluster up
--offline`, and always in the test suite) leaves Docker Hub out, so docker.io
names are fetched *only* from the cluster registry and nothing leaves the
network. The sandbox (pause) image is pulled from the cluster registry too.
Without a registry, docker.io is pointed at a closed local port instead
(offline) so an image the node lacks fails at once rather than sending a
request off the machine (the tests and benchmarks import their images with `ctr`).

`NodeRuntime.cleanup()` removes everything a node left behind, even after a
crash (runc state, shims, mounts, cgroups, the CNI bridge): tests rely on it to
leave the host as they found it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nodeagent.kubelet.cgroups import remove_cgroups
from provision.images.oci import PAUSE_IMAGE, REGISTRY_PAUSE_IMAGE
from provision.processes import Process, wait_until

CNI_BIN_DIR = "/usr/lib/cni"
# Where containerd pulls docker.io names from by default (and what an online node's docker.io hosts.toml
# lists after the cluster registry).
DOCKER_HUB = "https://registry-1.docker.io"


def hosts_toml(urls: list[str], capabilities: str) -> str:
    """containerd's hosts.toml for one registry name: `urls` tried in order, each with `capabilities`.

    containerd uses only the [host] tables when any exist, in order, going to the next one when a host
    fails or has not got the image; `server` (the last resort when no table answers) is the last URL,
    so an offline node's `server` is the cluster registry too, never registry-1.docker.io, which 1.6
    would otherwise fall back to.
    """
    tables = "".join(f'\n[host."{url}"]\n  capabilities = [{capabilities}]\n' for url in urls)
    return f'server = "{urls[-1]}"\n{tables}'


@dataclass
class NodeRuntime:
    """The directories and names of one node's container runtime."""

    node_name: str
    base: Path
    process: Process | None = None
    # host:port of the cluster registry ("" = none: only imported images run).
    registry: str = ""
    # Air-gapped: docker.io names only from the cluster registry. On unless a cluster's plan says online, so
    # a node made by hand (tests, benchmarks) never reaches for the internet.
    offline: bool = True

    @property
    def socket(self) -> Path:
        return self.base / "containerd.sock"

    @property
    def config_path(self) -> Path:
        return self.base / "containerd.toml"

    @property
    def runc_root(self) -> Path:
        return self.base / "runc"

    @property
    def cni_conf_dir(self) -> Path:
        return self.base / "cni" / "net.d"

    @property
    def cni_data_dir(self) -> Path:
        return self.base / "cni" / "ipam"

    @property
    def registry_hosts_dir(self) -> Path:
        return self.base / "certs.d"

    @property
    def sandbox_image(self) -> str:
        return f"{self.registry}/{REGISTRY_PAUSE_IMAGE}" if self.registry else PAUSE_IMAGE

    def registry_hosts(self) -> dict[str, str]:
        """hosts.toml text by registry host: containerd's per-registry settings (its `config_path`)."""
        pulls = '"pull", "resolve"'
        if not self.registry:
            return {"docker.io": hosts_toml(["http://127.0.0.1:1"], pulls)} if self.offline else {}
        url = f"http://{self.registry}"
        docker_io = [url] if self.offline else [url, DOCKER_HUB]
        return {self.registry: hosts_toml([url], '"pull", "resolve", "push"'),
                "docker.io": hosts_toml(docker_io, pulls)}

    def write_registry_hosts(self) -> None:
        shutil.rmtree(self.registry_hosts_dir, ignore_errors=True)  # a host dropped from the config goes too
        for host, text in self.registry_hosts().items():
            folder = self.registry_hosts_dir / host
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts.toml").write_text(text)

    @property
    def cgroup_root(self) -> str:
        """The cgroup every pod of this node lives under (cgroups are host-wide)."""
        return f"/flotilla-{self.node_name}"

    @property
    def bridge(self) -> str:
        # Interface names are at most 15 bytes.
        return ("flt-" + self.node_name)[:15]

    def config(self) -> str:
        """containerd.toml for this node (the registry hosts files are written alongside)."""
        base = self.base
        self.write_registry_hosts()
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return f"""version = 2
root = "{base / 'root'}"
state = "{base / 'state'}"

[grpc]
  address = "{self.socket}"

[ttrpc]
  address = "{self.socket}.ttrpc"

[{cri}]
  sandbox_image = "{self.sandbox_image}"
  # Without it every sandbox fails: root here may not lower its own oom_score_adj.
  restrict_oom_score_adj = true
  # Keeps each node's network namespaces under its own state dir.
  netns_mounts_under_state_dir = true
  # Port 0: the exec/attach streaming server must not collide between nodes.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.containerd]
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  # runc ignores containerd's state dir; without this all nodes share /run/containerd/runc.
  Root = "{self.runc_root}"
  # There is no systemd as PID 1 here.
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{self.cni_conf_dir}"

[{cri}.registry]
  config_path = "{self.registry_hosts_dir}"
"""

    def start(self, *, netns: str = "") -> None:
        """Write the config and start containerd (inside network namespace `netns` if given)."""
        for d in (self.base, self.runc_root, self.cni_conf_dir, self.cni_data_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config())
        binary = shutil.which("containerd")
        if binary is None:
            raise RuntimeError("containerd is not installed: apt-get install containerd runc")
        argv = [binary, "--config", str(self.config_path)]
        if netns:
            # nsenter, not `ip netns exec`: that remounts /sys and hides the cgroup mounts.
            argv = ["nsenter", f"--net=/run/netns/{netns}", *argv]
        self.process = Process(f"containerd-{self.node_name}", argv, self.base / "containerd.log")
        self.process.start()
        wait_until(self.socket.exists, "containerd socket", self.process, timeout=20)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)

    def remove_all_pods(self) -> None:
        """Stop and remove every sandbox through CRI, so CNI DEL runs and releases addresses and caches."""
        import grpc

        from proto import cri_pb2, cri_pb2_grpc

        with grpc.insecure_channel(f"unix://{self.socket}") as channel:
            stub = cri_pb2_grpc.RuntimeServiceStub(channel)
            try:
                sandboxes = stub.ListPodSandbox(cri_pb2.ListPodSandboxRequest(), timeout=10).items
                for sandbox in sandboxes:
                    stub.StopPodSandbox(cri_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox.id), timeout=60)
                    stub.RemovePodSandbox(cri_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox.id), timeout=30)
            except grpc.RpcError:
                pass  # containerd is not answering: the forced steps below still clean up

    def cleanup(self) -> None:
        """Remove whatever this node left on the host; safe to call after a crash, and twice."""
        if self.process is not None and self.process.alive():
            self.remove_all_pods()
        sandbox_ids = self._sandbox_ids()
        shim_sockets = self._shim_sockets()
        self.stop()
        runc = shutil.which("runc")
        root = self.runc_root / "k8s.io"
        if runc and root.exists():
            listed = subprocess.run([runc, "--root", str(root), "list", "-q"], capture_output=True, text=True)
            for cid in listed.stdout.split():
                subprocess.run([runc, "--root", str(root), "delete", "--force", cid], capture_output=True)
        self._kill_shims()
        for sock in shim_sockets:
            sock.unlink(missing_ok=True)
        self._unmount_all()
        remove_cgroups(self.cgroup_root)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        self._remove_cni_results(sandbox_ids)

    def _sandbox_ids(self) -> set[str]:
        """Sandbox IDs containerd knows of, read from its state directory (works with containerd down)."""
        found: set[str] = set()
        for d in (self.base / "root" / "io.containerd.grpc.v1.cri" / "sandboxes",
                  self.base / "state" / "io.containerd.grpc.v1.cri" / "sandboxes"):
            if d.is_dir():
                found.update(p.name for p in d.iterdir())
        return found

    def _shim_sockets(self) -> list[Path]:
        """The shim sockets of this node's tasks (they live in /run/containerd/s whatever the config says)."""
        sockets = []
        for address in (self.base / "state").glob("io.containerd.runtime.v2.task/*/*/address"):
            text = address.read_text().strip()
            if text.startswith("unix://"):
                sockets.append(Path(text.removeprefix("unix://")))
        return sockets

    def _kill_shims(self) -> None:
        # A shim's command line names the containerd it serves by its socket address.
        marker = str(self.socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and marker in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)

    def _unmount_all(self) -> None:
        base = str(self.base.resolve())
        for _ in range(3):
            with open("/proc/self/mountinfo") as f:
                points = [line.split()[4] for line in f]
            ours = sorted((p for p in points if p == base or p.startswith(base + "/")), key=len, reverse=True)
            if not ours:
                return
            for point in ours:
                subprocess.run(["umount", "-l", point], capture_output=True)

    def _remove_cni_results(self, sandbox_ids: set[str]) -> None:
        # Cached CNI results are named <network>-<sandbox id>-<interface>.
        results = Path("/var/lib/cni/results")
        if results.is_dir():
            for entry in results.iterdir():
                if entry.name.startswith(f"flotilla-{self.node_name}-") or any(i in entry.name for i in sandbox_ids):
                    entry.unlink(missing_ok=True)
