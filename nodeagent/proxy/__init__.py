"""The node's service proxy (kube-proxy): Services and EndpointSlices turned into nftables rules.

`rules` renders the ruleset (pure), `nft` applies it, `proxier` keeps it in step
with the cluster, `main` is the `flotilla-proxy` daemon.
"""
