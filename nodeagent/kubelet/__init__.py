"""The kubelet: Flotilla's node agent, which runs the pods bound to its node through containerd's CRI."""
