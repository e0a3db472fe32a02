"""The kubelet's configuration: flags for who it is, a file for how it behaves.

Identity and addresses come from flags (`--node-name`, `--node-ip`, ...); the
tunables a test or an operator changes (back-off, probe and status periods,
directories) come from an optional YAML file whose keys are the field names
below, like the real kubelet's KubeletConfiguration. Tests shrink the back-off
and the relist period through it rather than waiting minutes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nodeagent.kubelet.diskpressure import DEFAULT_EVICTION_HARD


@dataclass
class KubeletConfig:
    # The apiserver (plaintext, loopback) when there is no kubeconfig; with one, an override.
    server: str = ""
    # With a TLS apiserver: the CA and this node's credentials (user system:node:<name>).
    kubeconfig: str = ""
    # TLS bootstrap (bootstrap.py): when `kubeconfig` does not exist, obtain it with this token kubeconfig.
    bootstrap_kubeconfig: str = ""
    node_name: str = ""
    node_ip: str = ""
    containerd_socket: str = "/run/containerd/containerd.sock"
    # Used when the Node has no spec.podCIDR yet (the IPAM controller assigns it otherwise).
    pod_cidr: str = ""
    node_labels: dict[str, str] = field(default_factory=dict)
    node_role: str = "worker"
    # Taints the Node is created with, "key=value:Effect" (the kubelet's --register-with-taints).
    register_with_taints: list[str] = field(default_factory=list)

    # Where pod logs and emptyDir volumes live: <root_dir>/pods/<uid>/...
    root_dir: str = "/var/lib/flotilla/kubelet"
    # Every pod's cgroup is <cgroup_root>/pod<uid>; per node, since cgroups are host-wide.
    cgroup_root: str = "/flotilla"
    # Processes (threads) one pod may have at once, all its containers together: pids.max of its
    # cgroup (the kubelet's --pod-max-pids; <= 0 means unlimited). A fork bomb stops there.
    pod_pids_limit: int = 4096
    # Pids kept for the node's own daemons: all pods together (pids.max of cgroup_root) get the
    # node's pid capacity less this (the kubelet's --system-reserved=pid=N). < 0: no node-wide limit.
    system_reserved_pids: int = 1000
    cni_conf_dir: str = "/etc/cni/net.d"
    cni_data_dir: str = "/var/lib/flotilla/cni"
    cni_bridge: str = "cni0"
    # The kubelet API (logs, exec): address and port; port 0 picks a free one.
    listen_address: str = ""
    port: int = 10250
    # TLS for the kubelet API: serving certificate and key, and the CA whose client certificates
    # (the apiserver's) are accepted. All empty: plaintext (tests that run kubelets without a PKI).
    tls_cert_file: str = ""
    tls_private_key_file: str = ""
    client_ca_file: str = ""
    # Short image names ("nginx") resolve to this registry first ("" = docker.io rules).
    cluster_registry: str = ""
    # The cluster is air-gapped (its nodes pull only from cluster_registry): pull errors say how to load an image.
    registry_offline: bool = False
    # Cluster DNS for pods with dnsPolicy ClusterFirst (empty: pods get the node's resolv.conf).
    cluster_dns: list[str] = dataclasses.field(default_factory=list)
    cluster_domain: str = "cluster.local"
    # Keep a route to every other node's podCIDR via its InternalIP (host-gw, routes.py); off when
    # the network plugin routes pods itself.
    node_routes: bool = True
    node_routes_resync: float = 60.0

    # Restart back-off: initial, doubling to max, forgotten after reset seconds of running.
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    backoff_reset: float = 600.0
    # PLEG: how often the runtime is relisted to notice container changes.
    relist_period: float = 1.0
    # Every pod is re-synced this often even when nothing changed.
    sync_frequency: float = 10.0
    lease_duration: int = 40
    lease_renew_interval: float = 10.0
    node_status_check_interval: float = 10.0
    node_status_report_frequency: float = 60.0
    metrics_period: float = 10.0
    pod_workers: int = 8
    # Used for a probe's period/timeout when the pod leaves them unset (Kubernetes' defaults).
    probe_default_period: float = 10.0
    probe_default_timeout: float = 1.0
    # A volume that cannot be set up is tried again after 0.5 s, doubling to ~2 min, and the pod
    # says "Unable to attach or mount volumes ... timed out" every mount timeout (Kubernetes' figures).
    volume_backoff_initial: float = 0.5
    volume_backoff_max: float = 122.0
    volume_mount_timeout: float = 123.0
    # Image garbage collection (nodeagent/kubelet/imagegc.py): over `high` percent of the image filesystem
    # used, unused images go, least recently used first, until `low`; 100 turns it off.
    image_gc_high_threshold: int = 85
    image_gc_low_threshold: int = 80
    image_gc_min_age: float = 120.0
    image_gc_period: float = 300.0
    # Hard eviction thresholds (--eviction-hard): below them the Node reports DiskPressure.
    eviction_hard: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_EVICTION_HARD))
    # How often emptyDir usage is measured against sizeLimit (the eviction manager's period).
    eviction_monitoring_period: float = 10.0
    # --eviction-minimum-reclaim: once a threshold is crossed, pressure lasts until this much more than
    # the threshold is available again (signal -> percentage or quantity; none by default).
    eviction_minimum_reclaim: dict[str, str] = field(default_factory=dict)
    # --eviction-pressure-transition-period: DiskPressure stays True (and new pods are refused) until no
    # threshold has been crossed for this long, so the condition does not flap (Kubernetes' 5m).
    eviction_pressure_transition_period: float = 300.0

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any) -> KubeletConfig:
        """The defaults, then the file's keys, then the non-empty overrides (the flags)."""
        values: dict[str, Any] = {}
        if path:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(loaded) - known)
            if unknown:
                raise ValueError(f"{path}: unknown kubelet settings: {', '.join(unknown)}")
            values.update(loaded)
        values.update({k: v for k, v in overrides.items() if v not in (None, "")})
        return cls(**values)

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)
