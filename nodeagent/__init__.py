"""The node agent: the kubelet (nodeagent/kubelet), its containerd setup and base images; the proxy to come."""
