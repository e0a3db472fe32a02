"""NetworkPolicy enforcement on a node: the policies that select this node's pods, as nftables rules.

Runs inside each node's proxy process (nodeagent/proxy/main.py), as Calico's
felix and kube-router run one agent per node: `index` keeps the cluster's pods
and namespaces in a form selectors can query quickly, `compiler` turns
policies into an nftables table of their own (pure, deterministic text),
`controller` keeps that table in step with the API.
"""
