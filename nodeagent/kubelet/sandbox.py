"""The pod sandbox's CRI config: what the runtime needs to make a pod's shared environment.

The sandbox (containerd's pause container) holds what a pod's containers share:
the network namespace CNI gives an IP (or the node's, for hostNetwork), the
hostname, resolv.conf (dns.py), hostPort mappings, the pod's cgroup and the log
directory. kuberuntime_sandbox.go's generatePodSandboxConfig, written for Flotilla.

Two things here decide how much of the node a pod sees, and Pod Security
admission has already said whether the pod's namespace allows them:

- the namespaces it shares with the node (`namespaces_for_pod`): hostNetwork,
  hostPID and hostIPC make the sandbox's (and each container's) network, PID and
  IPC namespaces the node's — containerd reads the container's copy, so both
  carry it;
- `privileged`: containerd refuses a privileged container in a sandbox that is
  not marked privileged, so the sandbox is whenever any container is.
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


def namespaces_for_pod(pod: core_pb2.Pod) -> cri_pb2.NamespaceOption:
    """The namespaces the pod shares with the node (kuberuntime's namespacesForPod).

    Without hostPID the pod's containers share one PID namespace, the sandbox's (the
    pause process is its init): what Kubernetes does for shareProcessNamespace.
    """
    node, pod_mode = cri_pb2.NODE, cri_pb2.POD
    spec = pod.spec
    return cri_pb2.NamespaceOption(network=node if spec.host_network else pod_mode,
                                   pid=node if spec.host_pid else pod_mode,
                                   ipc=node if spec.host_ipc else pod_mode)


def privileged(pod: core_pb2.Pod) -> bool:
    """Whether any container (init ones too) asks for a privileged security context."""
    return any(c.security_context.privileged for c in [*pod.spec.init_containers, *pod.spec.containers])


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
    security = sandbox.linux.security_context
    security.namespace_options.CopyFrom(namespaces_for_pod(pod))
    security.privileged = privileged(pod)
    for c in pod.spec.containers:
        for port in c.ports:
            if port.host_port:
                sandbox.port_mappings.add(protocol=cri_pb2.Protocol.Value(port.protocol or "TCP"),
                                          container_port=port.container_port, host_port=port.host_port,
                                          host_ip=port.host_ip)
    pod_dns(pod, sandbox.dns_config, cluster_dns=config.cluster_dns, cluster_domain=config.cluster_domain)
    return sandbox
