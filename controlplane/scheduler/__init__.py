"""The scheduler: assigns each pending pod to a node (kube-scheduler's shape; see scheduler.py)."""
