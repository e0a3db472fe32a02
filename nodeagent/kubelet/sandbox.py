"""The pod sandbox's CRI config: what the runtime needs to make a pod's shared environment.

The sandbox (containerd's pause container) holds what a pod's containers share:
the network namespace CNI gives an IP (or the node's, for hostNetwork), the
hostname, resolv.conf (dns.py), hostPort mappings, the pod's cgroup and the log
directory. kuberuntime_sandbox.go's generatePodSandboxConfig, written for Flotilla.
"""

from __future__ import annotations

from pathlib import Path

from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.dns import pod_dns
from nodeagent.kubelet.runtime import pod_labels
from proto import core_pb2, cri_pb2


def cgroup_parent(config: KubeletConfig, uid: str) -> str:
    """The pod-level cgroup every container of pod `uid` runs under."""
    return f"{config.cgroup_root.rstrip('/')}/pod{uid}"


def generate_pod_sandbox_config(pod: core_pb2.Pod, *, attempt: int, pod_dir: Path,
                                config: KubeletConfig) -> cri_pb2.PodSandboxConfig:
    """The RunPodSandbox config; `attempt` counts the sandboxes the pod had before (it is in containerd's names)."""
    meta = pod.metadata
    sandbox = cri_pb2.PodSandboxConfig(
        metadata=cri_pb2.PodSandboxMetadata(name=meta.name, uid=meta.uid, namespace=meta.namespace,
                                            attempt=attempt),
        # A pod in the node's network namespace has the node's hostname (runc refuses to set one).
        hostname="" if pod.spec.host_network else pod.spec.hostname or meta.name,
        log_directory=str(pod_dir / "logs"),
        labels=pod_labels(pod))
    sandbox.linux.cgroup_parent = cgroup_parent(config, meta.uid)
    if pod.spec.host_network:
        sandbox.linux.security_context.namespace_options.network = cri_pb2.NODE
    for c in pod.spec.containers:
        for port in c.ports:
            if port.host_port:
                sandbox.port_mappings.add(protocol=cri_pb2.Protocol.Value(port.protocol or "TCP"),
                                          container_port=port.container_port, host_port=port.host_port,
                                          host_ip=port.host_ip)
    pod_dns(pod, sandbox.dns_config, cluster_dns=config.cluster_dns, cluster_domain=config.cluster_domain)
    return sandbox
